"""Readable references: the paper's Algorithm 2 (one row, sort-based) and Algorithm 3 (batched sort), corrected.

As printed in the paper, both solve only the increase side of the problem (eq. 23) and Algorithm 2's loop indices
are off by one; these versions solve both sides, with the zero-q rules of :mod:`ssdlib.solver`.
"""
from __future__ import annotations

import numpy as np
import torch

from .inputs import _prepare
from .numerics import margin
from .vectorized import _assemble_torch, _pass1_torch

# ---- sort-based reference (the paper's Algorithm 3, corrected) --------------------------------------------------


def _level_up_sort(f64, q64, h):
    """Increase level a with sum (a q - f)_+ = h, by sorting the ratios f/q ascending (zero q never raised)."""
    r = torch.where(q64 > 0, f64 / torch.where(q64 > 0, q64, 1.0), torch.inf)
    r, idx = torch.sort(r, dim=-1)
    qs = torch.gather(q64, -1, idx)
    fs = torch.gather(f64, -1, idx)
    Q = qs.cumsum(-1)
    F = fs.cumsum(-1)
    # I(r_(k)) = r_(k) Q_k - F_k is non-decreasing in k; the active set is the prefix where it is below h
    I_at = torch.where(torch.isinf(r), torch.inf, r * Q - F)
    k = (I_at < h[:, None]).sum(-1).clamp_min(1)
    Qk = Q.gather(-1, (k - 1)[:, None]).squeeze(-1)
    Fk = F.gather(-1, (k - 1)[:, None]).squeeze(-1)
    return torch.where(Qk > 0, (h + Fk) / Qk.clamp_min(1e-300), torch.ones_like(h)).clamp(max=1.0)


def _level_down_sort(f64, w64, h, eligible):
    """Decrease level b with sum over eligible (f - b w)_+ = h, sorting f/w descending (w = 0 always lowered)."""
    r = torch.where(w64 > 0, f64 / torch.where(w64 > 0, w64, 1.0), torch.where(f64 > 0, torch.inf, 0.0))
    r = torch.where(eligible, r, -torch.inf)
    r, idx = torch.sort(r, dim=-1, descending=True)
    ws = torch.gather(w64, -1, idx)
    fs = torch.gather(f64, -1, idx)
    ok = r > -torch.inf
    ws = torch.where(ok, ws, 0.0)
    fs = torch.where(ok, fs, 0.0)
    W = ws.cumsum(-1)  # cumulative sums from the top, no 1 - cumsum complements
    F = fs.cumsum(-1)
    # D(r_(k)) = F_k - r_(k) W_k is non-decreasing in k (the level goes down); zero-w prefix contributes F_k
    D_at = torch.where(W > 0, F - torch.where(torch.isinf(r), 0.0, r) * W, F)
    D_at = torch.where(ok, D_at, torch.inf)
    k = (D_at < h[:, None]).sum(-1).clamp_min(1)
    Wk = W.gather(-1, (k - 1)[:, None]).squeeze(-1)
    Fk = F.gather(-1, (k - 1)[:, None]).squeeze(-1)
    return torch.where(Wk > 0, (Fk - h) / Wk.clamp_min(1e-300), torch.full_like(h, torch.inf))


def waterfill_sort(f: torch.Tensor, q: torch.Tensor, eps, *, validate: bool = True) -> torch.Tensor:
    """Sort-based water-filling (the paper's Algorithm 3, corrected), vectorised over the batch in float64.

    Sorts the ratios f/q once per side and reads the water levels off cumulative sums; the decrease side is
    summed from the top directly.  O(C log C) per row; the reference the benchmark compares :func:`waterfill` to.
    """
    f2, q2, e, shape = _prepare(f, q, eps, validate)
    f64 = f2.to(torch.float64)
    q64 = q2.to(torch.float64).expand_as(f64)
    h = 0.5 * e
    trivial, limit, zero_q, _ = _pass1_torch(f64, q64, e)
    a = _level_up_sort(f64, q64, h)
    b = torch.ones_like(h)
    feas = ~limit
    if bool(feas.any()):
        rows = feas.nonzero().squeeze(-1)
        ff, qq = f64[rows], q64[rows]
        b[rows] = _level_down_sort(ff, qq, h[rows], torch.ones_like(ff, dtype=torch.bool)).clamp(min=1.0)
    if bool(limit.any()):
        rows = limit.nonzero().squeeze(-1)
        ff, zz = f64[rows], zero_q[rows]
        b[rows] = _level_down_sort(ff, torch.ones_like(ff), h[rows], zz).clamp(min=0.0)
    b = torch.where(torch.isinf(b), torch.full_like(b, 1e300), b)
    p = _assemble_torch(f2, f64, q64, e, a, b, limit, trivial)
    return p.reshape(shape)


# ---- per-row readable reference (the paper's Algorithm 2) -------------------------------------------------------


def _row_loop(f: np.ndarray, q: np.ndarray, eps: float, out_dtype) -> np.ndarray:
    """One row, sort-based, in float64 NumPy: the slow readable reference."""
    C = f.size
    h = eps / 2
    if np.abs(q - f).sum() + (C + 2) * 2.0**-52 <= eps:
        return q.astype(out_dtype)
    pos = q > 0
    # increase side: raise the entries with the smallest ratios f/q to a q
    order = np.argsort(np.where(pos, f / np.where(pos, q, 1), np.inf), kind="stable")
    a, F, Q = 1.0, 0.0, 0.0
    for i in order:
        if not pos[i]:
            break
        r = f[i] / q[i]
        if r * Q - F >= h:  # the level lies before this entry
            break
        F += f[i]
        Q += q[i]
        a = (h + F) / Q
    a = min(a, 1.0)
    m0 = f[~pos].sum()
    if m0 > h:  # KL-infeasible: cap the zero-q entries at L (delta -> 0 limit), never lower q > 0 entries
        vals = np.sort(f[~pos])[::-1]
        F, k, L = 0.0, 0, 0.0
        for v in vals:
            if F - k * v >= h:
                break
            F += v
            k += 1
            L = (F - h) / k
        down = np.where(~pos, np.maximum(f - L, 0.0), 0.0)
    else:
        F, Q, b = m0, 0.0, np.inf
        order = np.argsort(np.where(pos, -f / np.where(pos, q, 1), np.inf), kind="stable")
        for i in order:
            if not pos[i]:
                break
            r = f[i] / q[i]
            if F - r * Q >= h:
                break
            F += f[i]
            Q += q[i]
            b = (F - h) / Q
        b = max(b, 1.0)
        down = np.maximum(f - b * q, 0.0) if np.isfinite(b) else np.where(pos, 0.0, f)
    up = np.maximum(a * q - f, 0.0)
    down = np.where(up > 0, 0.0, down)
    U, D = up.sum(), down.sum()
    t = min(U, D, h - margin(C, torch.float32 if out_dtype == np.float32 else torch.float64))
    if t <= 0:
        return f.astype(out_dtype)
    # feasible case: the zero-q entries go exactly to 0 (scale 1), the other lowered entries share the rest
    Z = 0.0 if m0 > h else down[~pos].sum()
    sz = min(1.0, t / Z) if Z > 0 else 0.0
    sd = (t - sz * Z) / (D - Z) if D - Z > 0 else 0.0
    wd = np.where(~pos & (m0 <= h), sz, sd)
    p = np.where(up > 0, f + (t / U) * up, f - wd * down)
    return np.maximum(p, 0.0).astype(out_dtype)


def waterfill_loop(f: torch.Tensor, q: torch.Tensor, eps, *, validate: bool = True) -> torch.Tensor:
    """Water-filling one row at a time in plain NumPy (the paper's Algorithm 2): slow, readable reference."""
    f2, q2, e, shape = _prepare(f, q, eps, validate)
    fn = f2.detach().cpu().numpy().astype(np.float64)
    qn = q2.detach().cpu().numpy().astype(np.float64)
    en = e.cpu().numpy()
    out_dtype = np.float32 if f2.dtype == torch.float32 else np.float64
    rows = [_row_loop(fn[r], qn[0 if qn.shape[0] == 1 else r], float(en[r]), out_dtype) for r in range(fn.shape[0])]
    p = torch.from_numpy(np.stack(rows)) if rows else torch.empty_like(f2.cpu())
    return p.reshape(shape).to(f.device)
