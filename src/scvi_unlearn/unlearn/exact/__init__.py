"""Exact unlearning: a fresh model trained on the retain cells only.

The result is a function of the retain cells and the seed (``fast_retrain`` with fit matching
also reads one number from the original: its validation fit), so it cannot remember a forget
cell.  ``fast_retrain`` is the package's default method; ``retrain`` replays the original's
recipe and is the gold standard the other methods are judged against.
"""

from scvi_unlearn.unlearn.exact._fast_retrain import CosineTrainingPlan, fast_retrain
from scvi_unlearn.unlearn.exact._retrain import retrain

__all__ = ["CosineTrainingPlan", "fast_retrain", "retrain"]
