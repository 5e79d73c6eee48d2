"""The three scales every experiment runs at, from one parameter: ``smoke`` (CI, minutes), ``cpu`` (a 2-core
laptop, the default) and ``paper`` (one CUDA GPU, the paper's sizes). Smaller scales shrink budgets, never the
algorithm: each module that has per-scale sizes keys them by these names."""
from __future__ import annotations

SCALES = ("smoke", "cpu", "paper")


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`, else a ValueError naming the valid ones.

    >>> check_scale("cpu")
    'cpu'
    >>> check_scale("laptop")
    Traceback (most recent call last):
    ValueError: unknown scale 'laptop'; valid: smoke, cpu, paper
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    return scale
