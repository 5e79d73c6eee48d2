"""Exact water-filling solver for SSD's projection: argmin KL(p||q) s.t. ||p - f||_1 <= eps, p on the simplex.

The minimiser has the closed form p_i = min(max(f_i, a q_i), b q_i) with levels a <= 1 <= b chosen so that the
raised mass sum_i (a q_i - f_i)_+ and the lowered mass sum_i (f_i - b q_i)_+ both equal eps/2 (KKT conditions).
When ||q - f||_1 <= eps the answer is q itself.  Both levels are roots of convex piecewise-linear functions, so
Newton's method started at 1 moves monotonically and stops exactly once its active set no longer changes
(a Michelot-style active-set iteration, O(C) per pass, a handful of passes in practice).

Zero entries of q.  Entries with q_i = 0 < f_i must be lowered.  Let m0 = sum of f over {q_i = 0}:
* m0 <= eps/2: those entries go to 0 and the remaining decrease budget eps/2 - m0 is spent by the water level b on
  {q_i > 0} (the usual rule, q_i = 0 simply puts the entry always on the decrease side);
* m0 > eps/2: every feasible p has KL(p||q) = inf.  We return the limit delta -> 0 of the solution for the smoothed
  q_delta = (1 - delta) q + delta / C: the entries with q_i > 0 are never lowered, the zero-q entries are capped at a
  common level L with sum_{q_i=0} (f_i - L)_+ = eps/2 (water-filling from the top), and the increase side spends
  eps/2 with the level a as usual.

Numerics: everything is accumulated in float64 whatever the input dtype.  The output is built as
p = f + up - down with sum(up) = sum(down) = t <= eps/2 - margin, computed in float64, never by renormalising p;
``margin`` (see :func:`_margin`) covers the float64 summation error and the final rounding to the output dtype, so
||p - f||_1 <= eps holds for the returned values and p >= 0.  Budgets smaller than ``margin`` return f.
Zero-q entries of the feasible case are set to exactly 0, so KL(p||q) stays finite.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

try:  # numba is the CPU fast path; the torch path below works without it.
    import numba
    from numba import njit, prange

    _HAVE_NUMBA = True
    # numba's OpenMP layer loads a second libgomp beside torch's; the two pools then stall each other for a
    # scheduler tick (~12 ms per call, measured).  Unless the user chose a layer, use numba's own workqueue.
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
except ImportError:  # pragma: no cover - numba is a core dependency, kept optional for odd platforms
    _HAVE_NUMBA = False

__all__ = [
    "waterfill",
    "waterfill_sort",
    "waterfill_loop",
    "waterfill_cvxpy",
    "waterfill_passes",
    "SUM_ATOL",
]

#: Row sums must be within ``SUM_ATOL * max(1, C * finfo(dtype).eps)`` of 1 (float32 softmax rows of a million
#: classes still pass; rows that are not probability vectors do not).
SUM_ATOL = 1e-4

_U64 = 2.0**-53
_MAX_PASSES = 200  # safety cap; exact arithmetic needs at most C + 1 passes, practice a handful


def _margin(C: int, dtype: torch.dtype) -> float:
    """Budget slack (per side) that absorbs float64 summation error and rounding of p to ``dtype``."""
    u_out = 2.0**-24 if dtype == torch.float32 else _U64
    return (2 * C + 8) * _U64 + u_out


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


def _check_probs(x: torch.Tensor, name: str) -> None:
    """Raise ValueError unless ``x`` holds finite non-negative rows summing to 1 (within the documented tolerance)."""
    C = x.shape[-1]
    if x.device.type == "cpu" and _HAVE_NUMBA and x.numel():
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


# ----------------------------------------------------------------------------------------------------------------
# numba CPU path
# ----------------------------------------------------------------------------------------------------------------

if _HAVE_NUMBA:
    # fastmath is restricted to reassociation and FMA contraction: LLVM may then vectorise the float64 reductions
    # (about 4x here) while NaN/Inf semantics stay IEEE (no nnan/ninf); the summation order then depends on the
    # SIMD width, an error covered by _margin.
    _FM = {"reassoc", "contract"}

    @njit(cache=True, fastmath=_FM)
    def _pass_first(f, q):  # pragma: no cover - compiled
        """Sums at a = b = 1: (Q_a, U_a, n_a, Q_b, D_b, n_b, m0, n0); U_a + D_b = ||q - f||_1."""
        Qa = 0.0
        Ua = 0.0
        na = 0.0
        Qb = 0.0
        Db = 0.0
        nb = 0.0
        m0 = 0.0
        n0 = 0.0
        for i in range(f.shape[0]):
            fi = np.float64(f[i])
            qi = np.float64(q[i])
            d = qi - fi
            wa = 1.0 if d > 0.0 else 0.0
            wb = 1.0 if d < 0.0 else 0.0
            wz = 1.0 if qi == 0.0 else 0.0
            wz = wz if fi > 0.0 else 0.0
            Qa += qi * wa
            Ua += d * wa
            na += wa
            Qb += qi * wb
            Db -= d * wb
            nb += wb
            m0 += fi * wz
            n0 += wz
        return Qa, Ua, na, Qb, Db, nb, m0, n0

    @njit(cache=True, fastmath=_FM)
    def _pass_a(f, q, a):  # pragma: no cover - compiled
        """Increase side at level a: (Q, U, n) over S = {f < a q}, U = sum (a q - f)_+."""
        Q = 0.0
        U = 0.0
        n = 0.0
        for i in range(f.shape[0]):
            qi = np.float64(q[i])
            d = a * qi - np.float64(f[i])
            w = 1.0 if d > 0.0 else 0.0
            Q += qi * w
            U += d * w
            n += w
        return Q, U, n

    @njit(cache=True, fastmath=_FM)
    def _pass_b(f, q, b):  # pragma: no cover - compiled
        """Decrease side at level b: (Q, D, n) over S = {f > b q}, D = sum (f - b q)_+ (q = 0 < f always in S)."""
        Q = 0.0
        D = 0.0
        n = 0.0
        for i in range(f.shape[0]):
            qi = np.float64(q[i])
            d = np.float64(f[i]) - b * qi
            w = 1.0 if d > 0.0 else 0.0
            Q += qi * w
            D += d * w
            n += w
        return Q, D, n

    @njit(cache=True, fastmath=_FM)
    def _pass_ab(f, q, a, b):  # pragma: no cover - compiled
        """Both sides in one sweep (feasible case): (Q_a, U_a, n_a, Q_b, D_b, n_b) at levels a and b."""
        Qa = 0.0
        Ua = 0.0
        na = 0.0
        Qb = 0.0
        Db = 0.0
        nb = 0.0
        for i in range(f.shape[0]):
            fi = np.float64(f[i])
            qi = np.float64(q[i])
            u = a * qi - fi
            d = fi - b * qi
            wa = 1.0 if u > 0.0 else 0.0
            wb = 1.0 if d > 0.0 else 0.0
            Qa += qi * wa
            Ua += u * wa
            na += wa
            Qb += qi * wb
            Db += d * wb
            nb += wb
        return Qa, Ua, na, Qb, Db, nb

    @njit(cache=True, fastmath=_FM)
    def _pass_cap(f, q, L):  # pragma: no cover - compiled
        """KL-infeasible limit: (n, D) over S = {q = 0, f > L}, D = sum_S (f - L)."""
        D = 0.0
        n = 0.0
        for i in range(f.shape[0]):
            d = np.float64(f[i]) - L
            w = 1.0 if (d > 0.0 and q[i] == 0.0) else 0.0
            D += d * w
            n += w
        return n, D

    @njit(cache=True, fastmath=_FM)
    def _write(f, q, a, b, su, sd, sz, limit, out):  # pragma: no cover - compiled
        """p = f + su (a q - f)_+ - sd (f - b q)_+, zero-q entries scaled by sz (sz = 1 sets them to exactly 0);
        in the limit case the decrease is sd (f - L)_+ on {q = 0} only."""
        if limit:
            for i in range(f.shape[0]):
                fi = np.float64(f[i])
                qi = np.float64(q[i])
                u = a * qi - fi
                d = fi - b
                wu = su if u > 0.0 else 0.0
                wd = sd if d > 0.0 else 0.0
                wd = wd if qi == 0.0 else 0.0
                out[i] = fi + wu * u - wd * d
        else:
            for i in range(f.shape[0]):
                fi = np.float64(f[i])
                qi = np.float64(q[i])
                u = a * qi - fi
                d = fi - b * qi
                wu = su if u > 0.0 else 0.0
                wd = sz if qi == 0.0 else sd
                wd = wd if d > 0.0 else 0.0
                out[i] = fi + wu * u - wd * d

    @njit(cache=True, fastmath=False)
    def _row_nb(f, q, eps, margin, out):  # pragma: no cover - compiled
        """Solve one row into ``out``; return the number of O(C) passes used."""
        C = f.shape[0]
        h = 0.5 * eps
        Qa, Ua, na, Qb, Db, nb, m0, n0 = _pass_first(f, q)
        passes = 1
        if Ua + Db + (C + 2) * 2.0**-52 <= eps:  # q itself is feasible
            out[:] = q
            return passes + 1
        if h <= margin:
            out[:] = f
            return passes + 1
        limit = m0 > h
        a = 1.0
        b = 1.0
        if limit:  # cap level L on the zero-q entries, Newton from 0 upward
            b = 0.0
            Qb = n0
            Db = m0
            nb = n0
        done_a = False
        done_b = False
        while passes < 200:
            if not done_a and (Ua <= h or Qa <= 0.0):
                done_a = True
            if not done_b and (Db <= h or Qb <= 0.0):
                done_b = True
            if done_a and done_b:
                break
            a_new = a
            b_new = b
            if not done_a:  # Newton from above on the convex increasing I(a) = U
                a_new = min(a - (Ua - h) / Qa, a)
            if not done_b:  # Newton from below on the convex decreasing D(b)
                b_new = max(b + (Db - h) / Qb, b)
            if not done_a and not done_b and not limit:  # one sweep for both sides
                Qa2, Ua2, na2, Qb2, Db2, nb2 = _pass_ab(f, q, a_new, b_new)
            else:
                Qa2, Ua2, na2 = Qa, Ua, na
                Qb2, Db2, nb2 = Qb, Db, nb
                if not done_a:
                    Qa2, Ua2, na2 = _pass_a(f, q, a_new)
                if not done_b:
                    if limit:
                        Qb2, Db2 = _pass_cap(f, q, b_new)
                        nb2 = Qb2
                    else:
                        Qb2, Db2, nb2 = _pass_b(f, q, b_new)
            if not done_a:
                done_a = na2 == na
                a, Qa, Ua, na = a_new, Qa2, Ua2, na2
            if not done_b:
                done_b = nb2 == nb
                b, Qb, Db, nb = b_new, Qb2, Db2, nb2
            passes += 1
        t = min(Ua, Db, h - margin)
        if t <= 0.0:
            out[:] = f
            return passes + 1
        if limit:
            _write(f, q, a, b, t / Ua, t / Db, 1.0, limit, out)
        else:  # zero-q entries go exactly to 0 (sz = 1) whenever the budget allows it
            sz = min(1.0, t / m0) if m0 > 0.0 else 0.0
            rest = Db - m0
            sd = (t - sz * m0) / rest if rest > 0.0 else 0.0
            _write(f, q, a, b, t / Ua, sd, sz, limit, out)
        return passes + 1

    @njit(parallel=True, cache=True, fastmath=False)
    def _waterfill_nb(f, q, eps, margin, out, passes):  # pragma: no cover - compiled
        """Rows in parallel; ``q`` has one row per row of ``f`` or a single shared row."""
        B = f.shape[0]
        shared = q.shape[0] == 1
        for r in prange(B):
            qr = q[0] if shared else q[r]
            passes[r] = _row_nb(f[r], qr, eps[r], margin, out[r])

    @njit(parallel=True, cache=True, fastmath=_FM)
    def _check_nb(x):  # pragma: no cover - compiled
        """Per row: (count of NaN/Inf or negative entries, float64 row sum) in one pass."""
        B = x.shape[0]
        bad = np.zeros(B)
        sums = np.zeros(B)
        for r in prange(B):
            s = 0.0
            nbad = 0.0
            for i in range(x.shape[1]):
                v = np.float64(x[r, i])
                ok = v >= 0.0 and v <= 1.7976931348623157e308
                nbad += 0.0 if ok else 1.0
                s += v
            bad[r] = nbad
            sums[r] = s
        return bad, sums


def _waterfill_numba(f2, q2, e):
    """CPU fast path; returns (p2, passes) with p2 of f2's dtype."""
    fn = np.ascontiguousarray(f2.detach().numpy())
    qn = np.ascontiguousarray(q2.detach().numpy())
    en = np.ascontiguousarray(e.numpy())
    out = np.empty_like(fn)
    B, C = fn.shape
    passes = np.zeros(B, dtype=np.int64)
    _waterfill_nb(fn, qn, en, _margin(C, f2.dtype), out, passes)
    return torch.from_numpy(out), torch.from_numpy(passes)


# ----------------------------------------------------------------------------------------------------------------
# torch path (CUDA default; also runs on CPU, used to cross-check the numba kernel)
# ----------------------------------------------------------------------------------------------------------------


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
    t = torch.minimum(torch.minimum(U, D), h - _margin(C, f2.dtype)).clamp_min(0.0)
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
    for _ in range(_MAX_PASSES):
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
    for it in range(_MAX_PASSES):
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
    p = _assemble_torch(f2, f64, q64, e, lev[:, 0].contiguous(), lev[:, 1].contiguous(), limit, trivial)
    return p, passes + (~trivial).long()


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------

def _dispatch(f, q, eps, validate, method):
    """Validate, pick the backend, return (p, passes) in f's batch shape."""
    f2, q2, e, shape = _prepare(f, q, eps, validate)
    if method not in ("auto", "numba", "torch"):
        raise ValueError(f"method must be 'auto', 'numba' or 'torch', got {method!r}")
    if method == "auto":
        method = "numba" if (f2.device.type == "cpu" and _HAVE_NUMBA) else "torch"
    if method == "numba":
        if f2.device.type != "cpu":
            raise ValueError("method='numba' needs CPU tensors")
        if not _HAVE_NUMBA:
            raise ValueError("method='numba' needs the numba package")
        p2, passes = _waterfill_numba(f2, q2, e.cpu())
    else:
        p2, passes = _waterfill_torch(f2, q2, e)
    return p2.reshape(shape), passes.reshape(shape[:-1])


def waterfill(f: torch.Tensor, q: torch.Tensor, eps, *, validate: bool = True, method: str = "auto") -> torch.Tensor:
    """Exact argmin KL(p||q) s.t. ||p - f||_1 <= eps on the simplex, row-wise over ``[..., C]`` tensors.

    ``q`` has f's shape or shape ``[C]`` (shared by all rows); ``eps`` is a float or a tensor broadcastable to
    ``f.shape[:-1]``.  CPU uses a parallel numba kernel, CUDA a vectorised torch loop (``method`` forces one:
    'numba' or 'torch').  Zero entries of q follow the delta -> 0 limit rule of the module docstring.
    ``validate=False`` skips the input checks in hot loops.  Returns p with f's shape, dtype and device.
    """
    return _dispatch(f, q, eps, validate, method)[0]


def waterfill_passes(f: torch.Tensor, q: torch.Tensor, eps, *, method: str = "auto") -> torch.Tensor:
    """Number of O(C) passes over each row used by :func:`waterfill` (Newton passes plus the final write pass)."""
    return _dispatch(f, q, eps, True, method)[1]


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
    t = min(U, D, h - _margin(C, torch.float32 if out_dtype == np.float32 else torch.float64))
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


# ---- convex-optimisation oracle --------------------------------------------------------------------------------


def waterfill_cvxpy(f, q, eps: float, *, solver: str = "CLARABEL", **solver_opts) -> np.ndarray:
    """Oracle for ONE row (1-D, C <= 50 advised): cvxpy minimises -sum(entr(p)) - log(q) @ p on q's support.

    Entries with q_i = 0 are constrained to p_i = 0, so the KL-infeasible case (mass of f on {q = 0} above eps/2)
    makes the problem infeasible: smooth q first to test the limit rule.  Raises RuntimeError unless optimal.
    Clarabel runs with tightened tolerances by default (1e-10, then 1e-9 and 1e-8 if it reports
    'optimal_inaccurate' at the tighter one) so that p is accurate to about 1e-7; explicit solver_opts are used as given.
    """
    import cvxpy as cp  # test/book extra, imported lazily

    f = np.asarray(f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else f, dtype=np.float64)
    q = np.asarray(q.detach().cpu().numpy() if isinstance(q, torch.Tensor) else q, dtype=np.float64)
    if f.ndim != 1 or q.shape != f.shape:
        raise ValueError(f"waterfill_cvxpy takes one row: f and q 1-D of equal length, got {f.shape}, {q.shape}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    pos = q > 0
    p = cp.Variable(int(pos.sum()))
    fp, fz = f[pos], f[~pos]
    objective = cp.Minimize(-cp.sum(cp.entr(p)) - np.log(q[pos]) @ p)
    constraints = [p >= 0, cp.sum(p) == 1, cp.norm1(p - fp) + float(fz.sum()) <= eps]
    prob = cp.Problem(objective, constraints)
    if solver == "CLARABEL" and not solver_opts:
        ladder = [{key: tol for key in ("tol_gap_abs", "tol_gap_rel", "tol_feas")} for tol in (1e-10, 1e-9, 1e-8)]
    else:
        ladder = [solver_opts]
    for opts in ladder:
        with warnings.catch_warnings():  # cvxpy warns on 'optimal_inaccurate'; we retry or raise instead
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver=solver, **opts)
        if prob.status == cp.OPTIMAL:
            break
    else:
        raise RuntimeError(f"cvxpy status {prob.status!r} (expected 'optimal') with {solver} options {ladder[-1]}")
    out = np.zeros_like(f)
    out[pos] = np.maximum(p.value, 0.0)
    return out
