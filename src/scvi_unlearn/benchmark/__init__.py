"""Benchmark runner (methods x seeds vs the retrain target), tables, figures and the demo."""

from scvi_unlearn.benchmark._arguments import ALL_METHODS
from scvi_unlearn.benchmark._result import BenchmarkResult, mean_ci
from scvi_unlearn.benchmark._runner import run, train_original

__all__ = ["ALL_METHODS", "BenchmarkResult", "mean_ci", "run", "train_original"]
