"""Benchmark runner, tables, figures and the demo."""
