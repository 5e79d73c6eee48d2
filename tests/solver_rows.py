"""Probability rows the solver tests share (tests/test_solver.py and tests/test_triton.py)."""
from __future__ import annotations

import numpy as np
import torch


def row(rng: np.random.Generator, C: int, kind: str) -> np.ndarray:
    """A probability row of a given flavour: flat, peaked, with zeros, or with tied values."""
    if kind == "flat":
        x = rng.dirichlet(np.ones(C))
    elif kind == "peaked":
        z = rng.normal(size=C) * 4.0
        z[rng.integers(C)] += 8.0
        x = np.exp(z - z.max())
    elif kind == "zeros":
        x = rng.dirichlet(np.ones(C) * 0.5)
        x[rng.choice(C, size=max(1, C // 3), replace=False)] = 0.0
        if x.sum() == 0:
            x[0] = 1.0
    elif kind == "ties":
        x = rng.integers(1, 4, size=C).astype(float)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return x / x.sum()


def edge_rows(g, B, C, dtype, shared, *, flat_shared=True):
    """Random rows with zeros in f and q (some rows KL-infeasible), optionally one shared q row (returned as [C],
    or as [1, C] with ``flat_shared=False``, the kernels' own form)."""
    def zeroed(x, frac):
        y = torch.where(torch.rand(x.shape, generator=g, dtype=torch.float64) < frac, 0.0, x)
        y = torch.where(y.sum(-1, keepdim=True) > 0, y, x)
        return (y / y.sum(-1, keepdim=True)).to(dtype)
    f = zeroed(torch.softmax(torch.randn(B, C, generator=g, dtype=torch.float64) * 3, -1), 0.3)
    q = zeroed(torch.softmax(torch.randn(1 if shared else B, C, generator=g, dtype=torch.float64) * 3, -1), 0.5)
    return f, (q[0] if shared and flat_shared else q)
