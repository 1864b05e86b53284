"""The project's benchmarks: suites of experiments with declarative configs (``configs/``).

Run ``python -m benchmarks --list`` from the repository root; see ``benchmarks/__main__.py``.
"""
