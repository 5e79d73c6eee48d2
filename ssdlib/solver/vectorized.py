"""The torch path: the same Newton iteration vectorised over the batch (CUDA fallback; also runs on CPU)."""
from __future__ import annotations

import torch

from .numerics import CAPPED, MAX_PASSES, margin

def _assemble_torch(f2, f64, q64, e, a, b, limit, trivial):
    """Build p = f + up - down in float64 from levels ``a`` (raise) and ``b`` (lower, or the cap L where ``limit``)."""
    C = f2.shape[-1]
    h = 0.5 * e
    zero = torch.zeros((), dtype=f64.dtype, device=f64.device)
    zero_q = (q64 == 0).expand_as(f64)
    up = (a[:, None] * q64 - f64).clamp_min(0.0)
    thr = torch.where(limit[:, None], torch.where(zero_q, b[:, None], torch.inf), b[:, None] * q64)
    # entries with q_i = 0 < f_i always sit on the decrease side in the feasible case: b * 0 = 0 < f_i
    down = torch.where((f64 > thr) & (up <= 0), f64 - thr, zero)
    zq_feas = zero_q & ~limit[:, None]
    Z = torch.where(zq_feas, down, zero).sum(-1)  # mass of f on {q = 0} (feasible case), to be set to exactly 0
    U = up.sum(-1)
    D = down.sum(-1)
    t = torch.minimum(torch.minimum(U, D), h - margin(C, f2.dtype)).clamp_min(0.0)
    su = torch.where(U > 0, t / U.clamp_min(1e-300), zero)
    sz = torch.where(Z > 0, torch.clamp(t / Z.clamp_min(1e-300), max=1.0), zero)
    rest = D - Z
    sd = torch.where(rest > 0, (t - sz * Z) / rest.clamp_min(1e-300), zero)
    wd = torch.where(zq_feas, sz[:, None], sd[:, None])
    # p = f + su * up - wd * down; untouched entries stay bit-identical to f
    p = torch.where(up > 0, f64 + su[:, None] * up, f64 - wd * down).clamp_min(0.0)
    p = torch.where(trivial[:, None], q64.expand_as(f64), p)
    return p.to(f2.dtype)


def _pass1_torch(f64, q64, e):
    """Shared first pass: ||q - f||_1, zero-q mass m0 and the trivial mask."""
    C = f64.shape[-1]
    d = q64 - f64
    l1 = d.abs().sum(-1)
    trivial = l1 + (C + 2) * 2.0**-52 <= e
    zero_q = (q64 == 0).expand_as(f64)
    fz = torch.where(zero_q, f64, torch.zeros((), dtype=f64.dtype, device=f64.device))
    m0 = fz.sum(-1)
    limit = (m0 > 0.5 * e) & ~trivial
    return trivial, limit, zero_q, fz


#: rows are processed in chunks of about this many entries, bounding the float64 work arrays (~8 B * 7 per entry)
_TORCH_CHUNK = 2**24
#: below this many entries per chunk the loop is launch-bound: check convergence (a host sync) every few passes only
_TORCH_SMALL = 2**22
_TORCH_CHECK_EVERY = 4


#: up to this C the masked-matmul loop wins on an H200 (C=1e3: 5.0 vs 8.4 ms, B=256); at C=1e5 the float64 bmm
#: with K=C is slower (32 vs 25 ms; 1.7 s vs 0.2 s at 1e6), so larger C keeps the per-side sweep
_TORCH_BMM_MAX_C = 10_000


def _waterfill_torch(f2, q2, e):
    """Vectorised Newton/active-set iteration over the batch; returns (p2, passes)."""
    B, C = f2.shape
    if C > _TORCH_BMM_MAX_C:
        return _waterfill_torch_sweep(f2, q2, e)
    rows = max(1, _TORCH_CHUNK // C)
    if B <= rows:
        return _waterfill_torch_chunk(f2, q2, e)
    ps, ns = [], []
    for s in range(0, B, rows):
        qs = q2 if q2.shape[0] == 1 else q2[s : s + rows]
        p, n = _waterfill_torch_chunk(f2[s : s + rows], qs, e[s : s + rows])
        ps.append(p)
        ns.append(n)
    return torch.cat(ps), torch.cat(ns)


def _waterfill_torch_sweep(f2, q2, e):
    """Per-side elementwise sums with a host check each pass: the faster torch loop for large C (H200-measured)."""
    f64 = f2.to(torch.float64)
    q64 = q2.to(torch.float64).expand_as(f64)
    B, C = f64.shape
    h = 0.5 * e
    trivial, limit, zero_q, fz = _pass1_torch(f64, q64, e)
    if bool(limit.any()):  # limit rows: weight 1 on the zero-q entries, the others never lowered
        w = torch.where(limit[:, None], torch.where(zero_q, 1.0, 0.0).to(torch.float64), q64)
        never = limit[:, None] & ~zero_q
    else:
        w, never = q64, None

    def sums_a(a):  # (Q, U, n) over S = {f < a q}, with few full-size temporaries
        u = q64 * a[:, None]
        u.sub_(f64)
        m = u > 0
        return (q64 * m).sum(-1), u.clamp_min_(0.0).sum(-1), m.sum(-1)

    def sums_b(b):  # (Q, D, n) over S = {f > b w}
        d = w * b[:, None]
        torch.sub(f64, d, out=d)
        if never is not None:
            d.masked_fill_(never, -1.0)
        m = d > 0
        return (w * m).sum(-1), d.clamp_min_(0.0).sum(-1), m.sum(-1)

    a = torch.ones(B, dtype=torch.float64, device=f64.device)
    b = torch.where(limit, 0.0, 1.0).to(torch.float64)
    Qa, Ua, na = sums_a(a)
    Qb, Db, nb = sums_b(b)
    active_a = ~trivial & (h > 0)
    active_b = active_a.clone()
    passes = torch.ones(B, dtype=torch.int64, device=f64.device)
    for _ in range(MAX_PASSES):
        active_a &= (Ua > h) & (Qa > 0)
        active_b &= (Db > h) & (Qb > 0)
        if not bool((active_a | active_b).any()):
            break
        a_new = torch.where(active_a, torch.minimum(a - (Ua - h) / Qa.clamp_min(1e-300), a), a)
        b_new = torch.where(active_b, torch.maximum(b + (Db - h) / Qb.clamp_min(1e-300), b), b)
        Qa2, Ua2, na2 = sums_a(a_new)
        Qb2, Db2, nb2 = sums_b(b_new)
        passes += (active_a | active_b).long()
        sa, sb = active_a, active_b
        a, Qa, Ua = (torch.where(sa, x2, x) for x2, x in ((a_new, a), (Qa2, Qa), (Ua2, Ua)))
        b, Qb, Db = (torch.where(sb, x2, x) for x2, x in ((b_new, b), (Qb2, Qb), (Db2, Db)))
        active_a = sa & (na2 != na)
        active_b = sb & (nb2 != nb)
        na = torch.where(sa, na2, na)
        nb = torch.where(sb, nb2, nb)
    else:  # the pass cap: rows still moving are flagged
        capped = (active_a & (Ua > h) & (Qa > 0)) | (active_b & (Db > h) & (Qb > 0))
        passes = torch.where(capped, CAPPED - 1, passes)
    p = _assemble_torch(f2, f64, q64, e, a, b, limit, trivial)
    return p, passes + (~trivial).long()


def _waterfill_torch_chunk(f2, q2, e):
    """Both levels of every row at once: one mask kernel and one batched matmul (masked sums) per Newton pass.

    X = [q, f, 1] in float64 (made once) and the ratios r = f/q give S_a = {r < a}, S_b = {r > b}; a pass is
    mask = [r < a, -r < -b] and (Q, F, n) = mask @ X, so U = a Q_a - F_a and D = F_b - b Q_b.  Converged rows are
    frozen by masks and the host checks for convergence only every few passes on small problems.
    """
    B, C = f2.shape
    dev, f64t = f2.device, torch.float64
    X = torch.empty(B, 3, C, dtype=f64t, device=dev)
    X[:, 0] = q2  # broadcasts a shared [1, C] q
    X[:, 1] = f2
    X[:, 2] = 1.0
    q64, f64 = X[:, 0], X[:, 1]
    h = 0.5 * e
    trivial, limit, zero_q, _ = _pass1_torch(f64, q64, e)
    has_limit = bool(limit.any())  # the one host sync before the loop
    R = torch.empty(B, 2, C, dtype=f64t, device=dev)
    torch.div(f64, q64, out=R[:, 0])  # f/0 = inf (never raised, always lowered), 0/0 = nan (never in a set)
    if has_limit:  # limit rows lower only the zero-q entries (weight 1) down to the cap L: S_b = {q = 0, f > L}
        torch.where(limit[:, None], torch.where(zero_q, -f64, torch.inf), -R[:, 0], out=R[:, 1])
        w = torch.where(limit[:, None], zero_q.to(f64t), q64)
        X = torch.cat([X, w[:, None]], 1)
        q64, f64 = X[:, 0], X[:, 1]
    else:
        torch.neg(R[:, 0], out=R[:, 1])
    Xt = X.transpose(1, 2)
    sgn = torch.tensor([1.0, -1.0], dtype=f64t, device=dev)
    mask = torch.empty(B, 2, C, dtype=f64t, device=dev)

    def sums(lev):  # [B, 2, 3]: (Q, F, n) over S_a (row 0) and S_b (row 1)
        torch.lt(R, (lev * sgn)[..., None], out=mask)
        Y = torch.bmm(mask, Xt)
        if has_limit:
            Y[:, 1, 0] = Y[:, 1, 3]  # side b weighs by w
            Y = Y[..., :3]
        return Y

    def excess(lev, Y):  # (U_a - h, D_b - h)
        return sgn * (lev * Y[..., 0] - Y[..., 1]) - h[:, None]

    lev = torch.stack([torch.ones_like(h), torch.where(limit, 0.0, 1.0).to(f64t)], 1)
    Y = sums(lev)
    active = (~trivial & (h > 0))[:, None].expand(B, 2).clone()
    passes = torch.ones(B, dtype=torch.int64, device=dev)
    every = 1 if B * C >= _TORCH_SMALL else _TORCH_CHECK_EVERY
    for it in range(MAX_PASSES):
        ex = excess(lev, Y)
        Q = Y[..., 0]
        active &= (ex > 0) & (Q > 0)
        if it % every == 0 and not bool(active.any()):
            break
        # Newton from above for a, from below for b; frozen rows keep their level and sums
        lev = torch.where(active, lev - sgn * (ex / Q.clamp_min(1e-300)), lev)
        Y2 = sums(lev)
        passes += active.any(1)
        moved = active & (Y2[..., 2] != Y[..., 2])
        Y = torch.where(active[..., None], Y2, Y)
        active = moved
    else:  # the pass cap: rows still moving are flagged
        capped = (active & (excess(lev, Y) > 0) & (Y[..., 0] > 0)).any(1)
        passes = torch.where(capped, CAPPED - 1, passes)
    p = _assemble_torch(f2, f64, q64, e, lev[:, 0].contiguous(), lev[:, 1].contiguous(), limit, trivial)
    return p, passes + (~trivial).long()
