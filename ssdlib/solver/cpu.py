"""The CPU kernel: numba-compiled Newton passes over each row, rows in parallel (the default on CPU tensors)."""
from __future__ import annotations

import os

import numpy as np
import torch

from .numerics import CAPPED, MAX_PASSES, margin

try:  # numba is the CPU fast path; the torch path below works without it.
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
    # numba's OpenMP layer loads a second libgomp beside torch's; the two pools then stall each other for a
    # scheduler tick on every call.  Unless the user chose a layer, use numba's own workqueue.
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
except ImportError:  # pragma: no cover - numba is a core dependency, kept optional for odd platforms
    HAVE_NUMBA = False


if HAVE_NUMBA:
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
        """Solve one row into ``out``; return the number of O(C) passes used (``CAPPED`` at the pass cap)."""
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
        capped = False
        while True:
            if not done_a and (Ua <= h or Qa <= 0.0):
                done_a = True
            if not done_b and (Db <= h or Qb <= 0.0):
                done_b = True
            if done_a and done_b:
                break
            if passes >= MAX_PASSES:  # flag the row instead of returning a silently suboptimal p
                capped = True
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
        used = CAPPED if capped else passes + 1
        t = min(Ua, Db, h - margin)
        if t <= 0.0:
            out[:] = f
            return used
        if limit:
            _write(f, q, a, b, t / Ua, t / Db, 1.0, limit, out)
        else:  # zero-q entries go exactly to 0 (sz = 1) whenever the radius allows it
            sz = min(1.0, t / m0) if m0 > 0.0 else 0.0
            rest = Db - m0
            sd = (t - sz * m0) / rest if rest > 0.0 else 0.0
            _write(f, q, a, b, t / Ua, sd, sz, limit, out)
        return used

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
    _waterfill_nb(fn, qn, en, margin(C, f2.dtype), out, passes)
    return torch.from_numpy(out), torch.from_numpy(passes)
