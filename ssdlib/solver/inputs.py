"""Input checks of the solver: probability rows, shapes, radii; one place for every error message."""
from __future__ import annotations

import numpy as np
import torch

from .cpu import HAVE_NUMBA, _check_nb
from .numerics import SUM_ATOL

def _check_probs(x: torch.Tensor, name: str) -> None:
    """Raise ValueError unless ``x`` holds finite non-negative rows summing to 1 (within the documented tolerance)."""
    C = x.shape[-1]
    if x.device.type == "cpu" and HAVE_NUMBA and x.numel():
        bad, sums = _check_nb(np.ascontiguousarray(x.detach().numpy()))  # one parallel pass
        sums = torch.from_numpy(sums)
        need_detail = bool(bad.any())
    else:
        sums = x.sum(-1, dtype=torch.float64)
        need_detail = not bool(torch.isfinite(sums).all()) or bool((x < 0).any())
    if need_detail:
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf entries")
        raise ValueError(f"{name} has negative entries; rows must lie on the probability simplex")
    tol = SUM_ATOL * max(1.0, C * torch.finfo(x.dtype).eps)
    dev = (sums - 1.0).abs()
    if dev.numel() and float(dev.max()) > tol:
        raise ValueError(
            f"{name} rows must sum to 1 (largest deviation {float(dev.max()):.3g} exceeds tolerance {tol:.3g})"
        )


def _prepare(f, q, eps, validate: bool = True):
    """Check inputs and return (f2d [B,C], q2d [B,C] or [1,C], eps [B] float64, original shape)."""
    if not isinstance(f, torch.Tensor) or not isinstance(q, torch.Tensor):
        raise ValueError("f and q must be torch tensors")
    if validate:
        for name, x in (("f", f), ("q", q)):
            if x.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
        if f.dim() == 0 or f.shape[-1] == 0:
            raise ValueError(f"f must have shape [..., C] with C >= 1, got {tuple(f.shape)}")
        if q.shape != f.shape and not (q.dim() == 1 and q.shape[0] == f.shape[-1]):
            raise ValueError(
                f"shape mismatch: q must have f's shape {tuple(f.shape)} or shape [C]={f.shape[-1]}, "
                f"got {tuple(q.shape)}"
            )
        if q.device != f.device:
            raise ValueError(f"f and q must be on the same device ({f.device} vs {q.device})")
    shape = f.shape
    C = shape[-1]
    f2 = f.reshape(-1, C)
    q2 = q.reshape(1, C) if (q.dim() == 1 and f.dim() != 1) else q.reshape(-1, C)
    if q2.dtype != f2.dtype:
        q2 = q2.to(f2.dtype)
    B = f2.shape[0]
    if isinstance(eps, torch.Tensor):
        e = eps.detach().to(device=f.device, dtype=torch.float64)
        if validate:
            try:
                e = torch.broadcast_to(e, shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"eps of shape {tuple(eps.shape)} does not broadcast to f.shape[:-1]={tuple(shape[:-1])}"
                ) from None
        else:
            e = torch.broadcast_to(e, shape[:-1])
        e = e.reshape(B).contiguous()
    else:
        try:
            ev = float(eps)
        except (TypeError, ValueError):
            raise ValueError(f"eps must be a float or a tensor, got {type(eps).__name__}") from None
        e = torch.full((B,), ev, dtype=torch.float64, device=f.device)
    if validate:
        if torch.isnan(e).any():
            raise ValueError("eps contains NaN")
        if (e < 0).any():
            raise ValueError(f"eps must be >= 0, got minimum {float(e.min())}")
        _check_probs(f2, "f")
        _check_probs(q2, "q")
    return f2, q2, e, shape
