"""Numerical constants of the water-filling solver shared by its kernels: tolerances, the pass cap, the margin."""
from __future__ import annotations

import torch

#: Row sums must be within ``SUM_ATOL * max(1, C * finfo(dtype).eps)`` of 1 (float32 softmax rows of a million
#: classes still pass; rows that are not probability vectors do not).
SUM_ATOL = 1e-4

_U64 = 2.0**-53
#: Newton passes per level after which a kernel stops and flags the row (exact arithmetic needs at most C + 1; a
#: handful in practice). A flagged row reports ``CAPPED`` passes, which :func:`ssdlib.waterfill` turns into a warning.
MAX_PASSES = 200
CAPPED = MAX_PASSES + 2


def margin(C: int, dtype: torch.dtype) -> float:
    """Budget slack (per side) that absorbs float64 summation error and rounding of p to ``dtype``."""
    u_out = 2.0**-24 if dtype == torch.float32 else _U64
    return (2 * C + 8) * _U64 + u_out
