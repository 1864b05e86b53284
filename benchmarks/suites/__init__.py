"""Benchmark suites: one module each; its experiments are registered with
:func:`benchmarks._harness.experiment` and configured by ``benchmarks/configs/<suite>/*.toml``."""
