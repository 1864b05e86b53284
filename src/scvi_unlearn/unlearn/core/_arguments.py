"""Validation of the methods' numeric hyper-parameters: clear errors naming the argument,
before any training."""

from __future__ import annotations

import math

import numpy as np


def int_argument(name: str, value, low: int) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` unless it is an int (not a bool)
    ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    return int(value)


def number_argument(name: str, value, *, positive: bool = False) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` unless it is a finite number
    (not a bool) ``>= 0`` (``> 0`` when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}.")
    return value


def fraction_argument(name: str, value) -> float:
    """``value`` as a float in ``[0, 1]``, or a ``ValueError`` naming ``name``
    (:func:`number_argument`, then the upper bound)."""
    value = number_argument(name, value)
    if value > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    return value
