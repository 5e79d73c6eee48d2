"""Fused Triton water-filling kernel: the exact solver of :mod:`ssdlib.solver` in one launch, no host sync.

Same contract and semantics as the numba kernel ``_row_nb`` (the reference): the first sums at a = b = 1, the
trivial case (q feasible returns q), radii below ``_margin`` return f, monotone Newton passes on both water levels
until their active sets stop changing, the zero-q rules (feasible: those entries go to exactly 0; KL-infeasible
m0 > eps/2: a common cap L on them, q > 0 entries never lowered), float64 accumulation whatever the input dtype, and
p = f + up - down with sum(up) = sum(down) = t <= eps/2 - margin, so ||p - f||_1 <= eps holds by construction.

Two kernels:
* ``_wf_tile_kernel`` (C <= ``TILE_MAX_C``): a tile of rows held in registers; f and q are read once, p written once.
* ``_wf_row_kernel`` (larger C): one program per row, looping over the row in blocks.  A Newton pass over the full
  row also copies to a per-row workspace the entries that can still change side: on the raise side those between a
  verified lower bound of a (the chord of U through the origin, or a guard below the iterate) and the iterate, on
  the decrease side the whole current active set (Newton from below only shrinks it).  The active sets are monotone
  in the levels, so once that copy fits (C / WS_FRACTION entries) the remaining passes read only the workspace.
  Typically the row is read three times (first sums, one full Newton pass, the write), whatever the pass count.

``TRITON_INTERPRET=1`` must be set before this module is imported to run the kernels on CPU tensors (tests).
"""
from __future__ import annotations

import os

import torch

from ..information import entropy
from .numerics import MAX_PASSES as _MAX_PASSES
from .numerics import margin as _margin

try:  # triton is optional: CUDA machines have it with torch; CPU tests use its interpreter
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
    _IMPORT_ERROR = ""
except Exception as exc:  # pragma: no cover - depends on the installation
    _HAVE_TRITON = False
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

__all__ = ["triton_available", "waterfill_triton", "waterfill_triton_stats", "ssd_defend_triton", "TILE_MAX_C"]

#: up to this many classes a row is solved in registers (one read of f and q, one write of p)
TILE_MAX_C = 4096
#: elements per tile of the register kernel (rows per program = TILE_ELEMS // next_pow2(C), at most 16); the sm_90
#: builds (triton 3.6 and 3.9) use 108-198 registers and at most 8 bytes of stack (cuobjdump --dump-resource-usage)
TILE_ELEMS = 1024
#: block of the row kernel (elements per loop step) and its warps: 4 entries per thread, 164-168 registers on sm_90
#: (so three programs fit on one multiprocessor), at most 32 bytes of stack
ROW_BLOCK = 512
ROW_WARPS = 4
#: workspace per row of the row kernel: C // WS_FRACTION entries (at least one block)
WS_FRACTION = 16
#: raise-side bracket: [max(chord bound, a_new - TAU_A * last step), a_new]
TAU_A = 1.0


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> tuple[bool, str]:
    """(True, how) when the Triton kernels can run here: on a CUDA GPU, or in the interpreter; else (False, why)."""
    if not _HAVE_TRITON:
        return False, f"triton is not importable ({_IMPORT_ERROR})"
    if _INTERPRETED:
        if tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 9):
            # older interpreters hand int arguments over as 1-element arrays, which the kernels' loops reject
            return False, f"the interpreter of triton {triton.__version__} cannot run these kernels (needs >= 3.9)"
        return True, f"triton {triton.__version__} interpreter (TRITON_INTERPRET=1): CPU tensors, slow"
    if not torch.cuda.is_available():
        reason = "no CUDA device"
        if _interpret_requested():
            reason += "; TRITON_INTERPRET=1 was set after this module was imported (set it before)"
        else:
            reason += " (set TRITON_INTERPRET=1 before importing ssdlib.solver.triton_kernel for the CPU interpreter)"
        return False, reason
    return True, f"triton {triton.__version__} on {torch.cuda.get_device_name()}"


if _HAVE_TRITON:
    # the interpreter is chosen when the kernels are decorated, i.e. when this module is imported
    _INTERPRETED = _interpret_requested()

    @triton.jit
    def _add6(a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5):
        return a0 + b0, a1 + b1, a2 + b2, a3 + b3, a4 + b4, a5 + b5

    @triton.jit
    def _add3(a0, a1, a2, b0, b1, b2):
        return a0 + b0, a1 + b1, a2 + b2

    @triton.jit
    def _wf_tile_kernel(f_ptr, q_ptr, qidx_ptr, e_ptr, p_ptr, passes_ptr, B, C, sf, sq, sp, margin_ptr, max_passes,
                        Q_MODE: tl.constexpr, ROWS: tl.constexpr, BC: tl.constexpr, FUSED_SUMS: tl.constexpr):
        """ROWS rows of at most BC classes in registers; Q_MODE 0: q row per row, 1: one shared row, 2: index."""
        pid = tl.program_id(0)
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask = rows < B
        cols = tl.arange(0, BC)
        cmask = cols < C
        r64 = rows.to(tl.int64)
        if Q_MODE == 0:
            qr64 = r64
        elif Q_MODE == 1:
            qr64 = r64 * 0
        else:
            qr64 = tl.load(qidx_ptr + rows, mask=rmask, other=0).to(tl.int64)
        m2 = rmask[:, None] & cmask[None, :]
        f_raw = tl.load(f_ptr + r64[:, None] * sf + cols[None, :], mask=m2, other=0.0)
        q_raw = tl.load(q_ptr + qr64[:, None] * sq + cols[None, :], mask=m2, other=0.0)
        f = f_raw.to(tl.float64)
        q = q_raw.to(tl.float64)
        eps = tl.load(e_ptr + rows, mask=rmask, other=0.0).to(tl.float64)
        margin = tl.load(margin_ptr)  # float64 (a Python float argument would be float32)
        h = 0.5 * eps
        zero = tl.zeros([ROWS, BC], tl.float64)

        # first sums at a = b = 1
        d = q - f
        wa = d > 0.0
        wb = d < 0.0
        wz = (q == 0.0) & (f > 0.0)
        Qa = tl.sum(tl.where(wa, q, zero), 1)
        Ua = tl.sum(tl.where(wa, d, zero), 1)
        na = tl.sum(wa.to(tl.int32), 1)
        Qb = tl.sum(tl.where(wb, q, zero), 1)
        Db = tl.sum(tl.where(wb, -d, zero), 1)
        nb = tl.sum(wb.to(tl.int32), 1)
        m0 = tl.sum(tl.where(wz, f, zero), 1)
        n0 = tl.sum(wz.to(tl.int32), 1)

        trivial = Ua + Db + (C + 2.0) * 2.220446049250313e-16 <= eps
        run = (~trivial) & (h > margin) & rmask
        limit = m0 > h
        ones = tl.full([ROWS], 1.0, tl.float64)
        a = ones
        b = tl.where(limit, 0.0 * ones, ones)
        Qb = tl.where(limit, n0.to(tl.float64), Qb)
        Db = tl.where(limit, m0, Db)
        nb = tl.where(limit, n0, nb)
        done_a = (~run) | (Ua <= h) | (Qa <= 0.0)
        done_b = (~run) | (Db <= h) | (Qb <= 0.0)
        passes = tl.full([ROWS], 1, tl.int32)
        live = (~(done_a & done_b)) & (passes < max_passes)
        # zero-q entries: weight 1 on the decrease side of limit rows, never lowered q > 0 entries there
        lim2 = limit[:, None]
        w = tl.where(lim2, tl.where(q == 0.0, 1.0 + zero, zero), q)
        elig = (~lim2) | (q == 0.0)
        while tl.max(live.to(tl.int32), 0) > 0:
            a_new = tl.where(done_a, a, tl.minimum(a - (Ua - h) / tl.where(Qa > 0.0, Qa, ones), a))
            b_new = tl.where(done_b, b, tl.maximum(b + (Db - h) / tl.where(Qb > 0.0, Qb, ones), b))
            u = a_new[:, None] * q - f
            ia = u > 0.0
            dd = f - b_new[:, None] * w
            ib = (dd > 0.0) & elig
            xQa = tl.where(ia, q, zero)
            xUa = tl.where(ia, u, zero)
            xQb = tl.where(ib, w, zero)
            xDb = tl.where(ib, dd, zero)
            if FUSED_SUMS:  # one multi-operand reduction per pass on the GPU
                Qa2, Ua2, na2, Qb2, Db2, nb2 = tl.reduce((xQa, xUa, ia.to(tl.int32), xQb, xDb, ib.to(tl.int32)), 1,
                                                         _add6)
            else:  # the interpreter runs tl.reduce's combine function element by element: slow
                Qa2, Ua2, na2 = tl.sum(xQa, 1), tl.sum(xUa, 1), tl.sum(ia.to(tl.int32), 1)
                Qb2, Db2, nb2 = tl.sum(xQb, 1), tl.sum(xDb, 1), tl.sum(ib.to(tl.int32), 1)
            ua_ = live & (~done_a)
            ub_ = live & (~done_b)
            done_a = tl.where(ua_, na2 == na, done_a)
            a = tl.where(ua_, a_new, a)
            Qa = tl.where(ua_, Qa2, Qa)
            Ua = tl.where(ua_, Ua2, Ua)
            na = tl.where(ua_, na2, na)
            done_b = tl.where(ub_, nb2 == nb, done_b)
            b = tl.where(ub_, b_new, b)
            Qb = tl.where(ub_, Qb2, Qb)
            Db = tl.where(ub_, Db2, Db)
            nb = tl.where(ub_, nb2, nb)
            passes = passes + live.to(tl.int32)
            done_a = done_a | (Ua <= h) | (Qa <= 0.0)
            done_b = done_b | (Db <= h) | (Qb <= 0.0)
            live = live & (~(done_a & done_b)) & (passes < max_passes)

        # write p = f + su (a q - f)_+ - wd (f - b q)_+ (or the cap on zero-q entries in limit rows)
        t = tl.minimum(tl.minimum(Ua, Db), h - margin)
        copy_f = (~trivial) & (~run | (t <= 0.0))
        tpos = t > 0.0
        su = tl.where(tpos, t / tl.where(Ua > 0.0, Ua, ones), 0.0 * ones)
        sz = tl.where(m0 > 0.0, tl.minimum(ones, t / tl.where(m0 > 0.0, m0, ones)), 0.0 * ones)
        rest = Db - m0
        sd = tl.where(rest > 0.0, (t - sz * m0) / tl.where(rest > 0.0, rest, ones), 0.0 * ones)
        sl = tl.where(tpos, t / tl.where(Db > 0.0, Db, ones), 0.0 * ones)  # limit rows: decrease scale
        u = a[:, None] * q - f
        wu = tl.where(u > 0.0, su[:, None] + zero, zero)
        qz = q == 0.0
        d_lim = f - b[:, None]
        d_fea = f - b[:, None] * q
        dd = tl.where(lim2, d_lim, d_fea)
        wd_fea = tl.where(qz, sz[:, None] + zero, sd[:, None] + zero)
        wd = tl.where(lim2, tl.where(qz, sl[:, None] + zero, zero), wd_fea)
        wd = tl.where(dd > 0.0, wd, zero)
        out = f + wu * u - wd * dd
        out = tl.where(trivial[:, None], q, tl.where(copy_f[:, None], f, out))
        tl.store(p_ptr + r64[:, None] * sp + cols[None, :], out.to(p_ptr.dtype.element_ty), mask=m2)
        tl.store(passes_ptr + rows, (passes + 1).to(tl.int64), mask=rmask)

    @triton.jit
    def _wf_row_kernel(f_ptr, q_ptr, qidx_ptr, e_ptr, p_ptr, ws_ptr, passes_ptr, reads_ptr, C, sf, sq, sp,
                       ws_cap, margin_ptr, max_passes, tau_a,
                       Q_MODE: tl.constexpr, BLOCK: tl.constexpr, FUSED_SUMS: tl.constexpr):
        """One row per program, in blocks of BLOCK; Newton passes over the row or, once bracketed, the workspace."""
        r = tl.program_id(0)
        r64 = r.to(tl.int64)
        if Q_MODE == 0:
            qr64 = r64
        elif Q_MODE == 1:
            qr64 = r64 * 0
        else:
            qr64 = tl.load(qidx_ptr + r).to(tl.int64)
        fr = f_ptr + r64 * sf
        qr = q_ptr + qr64 * sq
        pr = p_ptr + r64 * sp
        wsf = ws_ptr + r64 * (2 * ws_cap)
        wsq = wsf + ws_cap
        offs = tl.arange(0, BLOCK)
        zb = tl.zeros([BLOCK], tl.float64)
        zi = tl.zeros([BLOCK], tl.int32)

        # ---- pass 1: sums at a = b = 1 -------------------------------------------------------------------
        aQa = zb
        aUa = zb
        ana = zi
        aQb = zb
        aDb = zb
        anb = zi
        am0 = zb
        an0 = zi
        for s in range(0, C, BLOCK):
            idx = s + offs
            m = idx < C
            f = tl.load(fr + idx, mask=m, other=0.0).to(tl.float64)
            q = tl.load(qr + idx, mask=m, other=0.0).to(tl.float64)
            d = q - f
            wa = d > 0.0
            wb = d < 0.0
            wz = (q == 0.0) & (f > 0.0)
            aQa += tl.where(wa, q, zb)
            aUa += tl.where(wa, d, zb)
            ana += wa.to(tl.int32)
            aQb += tl.where(wb, q, zb)
            aDb -= tl.where(wb, d, zb)
            anb += wb.to(tl.int32)
            am0 += tl.where(wz, f, zb)
            an0 += wz.to(tl.int32)
        Qa = tl.sum(aQa, 0)
        Ua = tl.sum(aUa, 0)
        na = tl.sum(ana, 0)
        Qb = tl.sum(aQb, 0)
        Db = tl.sum(aDb, 0)
        nb = tl.sum(anb, 0)
        m0 = tl.sum(am0, 0)
        n0 = tl.sum(an0, 0)

        eps = tl.load(e_ptr + r).to(tl.float64)
        margin = tl.load(margin_ptr)  # float64 (a Python float argument would be float32)
        h = 0.5 * eps
        one = eps * 0.0 + 1.0  # float64 scalars
        zero = eps * 0.0
        trivial = Ua + Db + (C + 2.0) * 2.220446049250313e-16 <= eps
        run = (~trivial) & (h > margin)
        limit = m0 > h
        # scalar flags broadcast to blocks through int32 (bool scalar | bool block trips the 3.9 interpreter)
        feas = (zi + (m0 <= h).to(tl.int32)) > 0
        a = one
        b = tl.where(limit, zero, one)
        Qb = tl.where(limit, n0.to(tl.float64), Qb)
        Db = tl.where(limit, m0, Db)
        nb = tl.where(limit, n0, nb)
        done_a = (~run) | (Ua <= h) | (Qa <= 0.0)
        done_b = (~run) | (Db <= h) | (Qb <= 0.0)
        passes = n0 * 0 + 1
        reads = n0 * 0 + 1
        in_ws = n0 < 0  # False: Newton passes read the row until the brackets are verified
        ws_n = n0 * 0
        lo = one
        Qlo = zero
        Flo = zero
        nlo = n0 * 0
        # the decrease side keeps its whole active set in the workspace: its sure part is the zero-q entries of
        # feasible rows (weight 0, always lowered: sums Q = 0, F = m0, n = n0), nothing in limit rows
        Fhi = tl.where(limit, zero, m0)
        nhi = tl.where(limit, n0 * 0, n0)

        while (~(done_a & done_b)) & (passes < max_passes):
            a_new = tl.where(done_a, a, tl.minimum(a - (Ua - h) / tl.where(Qa > 0.0, Qa, one), a))
            b_new = tl.where(done_b, b, tl.maximum(b + (Db - h) / tl.where(Qb > 0.0, Qb, one), b))
            # levels stay inside verified brackets (they do in exact arithmetic; this guards the rounding)
            a_new = tl.where(in_ws, tl.maximum(a_new, lo), a_new)
            # raise-side bracket for a full pass: [max(chord of U through (0, 0), guard below a_new), a_new]
            lo_c = tl.maximum(a * h / tl.where(Ua > 0.0, Ua, one), a_new - tau_a * (a - a_new))
            lo_c = tl.where(done_a, a_new, tl.minimum(lo_c, a_new))

            # ---- either a full pass with compaction of the bracketed entries, or a pass over the workspace -------
            Qa_f = zero
            Ua_f = zero
            na_f = n0 * 0
            Qb_f = zero
            Db_f = zero
            nb_f = n0 * 0
            cnt = n0 * 0
            Qa_w = zero
            Ua_w = zero
            na_w = n0 * 0
            Qb_w = zero
            Db_w = zero
            nb_w = n0 * 0
            if in_ws:
                wQa = zb
                wUa = zb
                wna = zi
                wQb = zb
                wDb = zb
                wnb = zi
                for s in range(0, ws_n, BLOCK):
                    idx = s + offs
                    m = idx < ws_n
                    f = tl.load(wsf + idx, mask=m, other=0.0, cache_modifier=".cg").to(tl.float64)
                    q = tl.load(wsq + idx, mask=m, other=0.0, cache_modifier=".cg").to(tl.float64)
                    u = a_new * q - f
                    ia = u > 0.0
                    wQa += tl.where(ia, q, zb)
                    wUa += tl.where(ia, u, zb)
                    wna += ia.to(tl.int32)
                    qz = q == 0.0
                    w = tl.where(limit, tl.where(qz, zb + 1.0, zb), q)
                    dd = f - b_new * w
                    ib = (dd > 0.0) & (qz | feas)
                    wQb += tl.where(ib, w, zb)
                    wDb += tl.where(ib, dd, zb)
                    wnb += ib.to(tl.int32)
                if FUSED_SUMS:  # one multi-operand reduction (one barrier) on the GPU
                    Qa_w, Ua_w, na_w, Qb_w, Db_w, nb_w = tl.reduce((wQa, wUa, wna, wQb, wDb, wnb), 0, _add6)
                else:  # the interpreter runs tl.reduce's combine function element by element: slow
                    Qa_w, Ua_w, na_w = tl.sum(wQa, 0), tl.sum(wUa, 0), tl.sum(wna, 0)
                    Qb_w, Db_w, nb_w = tl.sum(wQb, 0), tl.sum(wDb, 0), tl.sum(wnb, 0)
            else:
                aQa = zb
                aUa = zb
                ana = zi
                aQb = zb
                aDb = zb
                anb = zi
                act_a = (zi + (~done_a).to(tl.int32)) > 0
                act_b = (zi + (~done_b).to(tl.int32)) > 0
                for s in range(0, C, BLOCK):
                    idx = s + offs
                    m = idx < C
                    f_raw = tl.load(fr + idx, mask=m, other=0.0)
                    q_raw = tl.load(qr + idx, mask=m, other=0.0)
                    f = f_raw.to(tl.float64)
                    q = q_raw.to(tl.float64)
                    u = a_new * q - f
                    ia = u > 0.0
                    aQa += tl.where(ia, q, zb)
                    aUa += tl.where(ia, u, zb)
                    ana += ia.to(tl.int32)
                    qz = q == 0.0
                    w = tl.where(limit, tl.where(qz, zb + 1.0, zb), q)
                    dd = f - b_new * w
                    ib = (dd > 0.0) & (qz | feas)
                    aQb += tl.where(ib, w, zb)
                    aDb += tl.where(ib, dd, zb)
                    anb += ib.to(tl.int32)
                    # bracketed entries: raised at a_new but not at lo_c; lowered with q > 0 (limit rows: q = 0)
                    unc_a = ia & ((lo_c * q - f) <= 0.0) & act_a
                    unc_b = ib & (w > 0.0) & act_b
                    unc = (unc_a | unc_b).to(tl.int32)
                    pos = cnt + tl.cumsum(unc, 0) - 1
                    wm = (unc > 0) & (pos < ws_cap)
                    tl.store(wsf + pos, f_raw, mask=wm)
                    tl.store(wsq + pos, q_raw, mask=wm)
                    cnt += tl.sum(unc, 0)
                if FUSED_SUMS:
                    Qa_f, Ua_f, na_f, Qb_f, Db_f, nb_f = tl.reduce((aQa, aUa, ana, aQb, aDb, anb), 0, _add6)
                else:
                    Qa_f, Ua_f, na_f = tl.sum(aQa, 0), tl.sum(aUa, 0), tl.sum(ana, 0)
                    Qb_f, Db_f, nb_f = tl.sum(aQb, 0), tl.sum(aDb, 0), tl.sum(anb, 0)
            # sums at the new levels: from the full pass, or the sure parts plus the workspace
            Qa2 = tl.where(in_ws, Qlo + Qa_w, Qa_f)
            Ua2 = tl.where(in_ws, a_new * Qlo - Flo + Ua_w, Ua_f)
            na2 = tl.where(in_ws, nlo + na_w, na_f)
            Qb2 = tl.where(in_ws, Qb_w, Qb_f)
            Db2 = tl.where(in_ws, Fhi + Db_w, Db_f)
            nb2 = tl.where(in_ws, nhi + nb_w, nb_f)

            # ---- after a full pass whose bracketed entries fit: their sums, and the check U(lo_c) <= h ---------
            n_chk = tl.where((~in_ws) & (cnt <= ws_cap), cnt, 0)
            enter = n_chk < 0  # False
            if n_chk > 0:
                tl.debug_barrier()  # the workspace was just written by other threads of this program
                sQa = zb
                sFa = zb
                sna = zi
                for s in range(0, n_chk, BLOCK):
                    idx = s + offs
                    m = idx < n_chk
                    f = tl.load(wsf + idx, mask=m, other=0.0, cache_modifier=".cg").to(tl.float64)
                    q = tl.load(wsq + idx, mask=m, other=0.0, cache_modifier=".cg").to(tl.float64)
                    ia = ((a_new * q - f) > 0.0) & m
                    sQa += tl.where(ia, q, zb)
                    sFa += tl.where(ia, f, zb)
                    sna += ia.to(tl.int32)
                if FUSED_SUMS:
                    sQ, sF, sn = tl.reduce((sQa, sFa, sna), 0, _add3)
                else:
                    sQ, sF, sn = tl.sum(sQa, 0), tl.sum(sFa, 0), tl.sum(sna, 0)
                # sure set S_a(lo) = S_a(a_new) minus the bracketed entries (a <= 1 keeps this subtraction accurate)
                Qlo_n = Qa_f - sQ
                Flo_n = (a_new * Qa_f - Ua_f) - sF
                enter = done_a | (lo_c * Qlo_n - Flo_n <= h)
                lo = tl.where(enter, lo_c, lo)
                Qlo = tl.where(enter, Qlo_n, Qlo)
                Flo = tl.where(enter, Flo_n, Flo)
                nlo = tl.where(enter, na_f - sn, nlo)
                ws_n = tl.where(enter, cnt, ws_n)
            elif (~in_ws) & (cnt == 0):  # nothing bracketed: the workspace is empty and the sure set is everything
                enter = done_a | (lo_c * Qa_f - (a_new * Qa_f - Ua_f) <= h)
                lo = tl.where(enter, lo_c, lo)
                Qlo = tl.where(enter, Qa_f, Qlo)
                Flo = tl.where(enter, a_new * Qa_f - Ua_f, Flo)
                nlo = tl.where(enter, na_f, nlo)
                ws_n = tl.where(enter, cnt, ws_n)
            reads += tl.where(in_ws, 0, 1)
            in_ws = in_ws | enter

            # ---- Newton bookkeeping, as in the CPU kernel ------------------------------------------------
            upd_a = ~done_a
            upd_b = ~done_b
            done_a = tl.where(upd_a, na2 == na, done_a)
            a = tl.where(upd_a, a_new, a)
            Qa = tl.where(upd_a, Qa2, Qa)
            Ua = tl.where(upd_a, Ua2, Ua)
            na = tl.where(upd_a, na2, na)
            done_b = tl.where(upd_b, nb2 == nb, done_b)
            b = tl.where(upd_b, b_new, b)
            Qb = tl.where(upd_b, Qb2, Qb)
            Db = tl.where(upd_b, Db2, Db)
            nb = tl.where(upd_b, nb2, nb)
            passes += 1
            done_a = done_a | (Ua <= h) | (Qa <= 0.0)
            done_b = done_b | (Db <= h) | (Qb <= 0.0)

        # ---- write pass ------------------------------------------------------------------------------------
        t = tl.minimum(tl.minimum(Ua, Db), h - margin)
        copy_f = (~trivial) & ((~run) | (t <= 0.0))
        tpos = t > 0.0
        su = tl.where(tpos, t / tl.where(Ua > 0.0, Ua, one), zero)
        sz = tl.where(m0 > 0.0, tl.minimum(one, t / tl.where(m0 > 0.0, m0, one)), zero)
        rest = Db - m0
        sd = tl.where(rest > 0.0, (t - sz * m0) / tl.where(rest > 0.0, rest, one), zero)
        sl = tl.where(tpos, t / tl.where(Db > 0.0, Db, one), zero)
        for s in range(0, C, BLOCK):
            idx = s + offs
            m = idx < C
            f = tl.load(fr + idx, mask=m, other=0.0).to(tl.float64)
            q = tl.load(qr + idx, mask=m, other=0.0).to(tl.float64)
            u = a * q - f
            wu = tl.where(u > 0.0, zb + su, zb)
            qz = q == 0.0
            dd = tl.where(limit, f - b, f - b * q)
            wd = tl.where(limit, tl.where(qz, zb + sl, zb), tl.where(qz, zb + sz, zb + sd))
            wd = tl.where(dd > 0.0, wd, zb)
            out = f + wu * u - wd * dd
            out = tl.where(trivial, q, tl.where(copy_f, f, out))
            tl.store(pr + idx, out.to(p_ptr.dtype.element_ty), mask=m)
        tl.store(passes_ptr + r, (passes + 1).to(tl.int64))
        tl.store(reads_ptr + r, (reads + 1).to(tl.int64))

else:  # pragma: no cover
    _INTERPRETED = False


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def _check(f2, q2, e, q_rows):
    if not _HAVE_TRITON:
        raise RuntimeError(f"waterfill_triton needs triton: {_IMPORT_ERROR}")
    if f2.dim() != 2 or q2.dim() != 2 or f2.shape[1] != q2.shape[1]:
        raise ValueError(f"f2 must be [B, C] and q2 [B, C] or [1, C]; got {tuple(f2.shape)}, {tuple(q2.shape)}")
    if f2.dtype not in (torch.float32, torch.float64) or q2.dtype != f2.dtype:
        raise ValueError(f"f2 and q2 must share a float32 or float64 dtype, got {f2.dtype} and {q2.dtype}")
    if q_rows is None and q2.shape[0] not in (1, f2.shape[0]):
        raise ValueError(f"q2 has {q2.shape[0]} rows; need 1 or B={f2.shape[0]} (or pass q_rows)")
    if f2.shape[1] >= 2**31 - 2**16:
        raise ValueError(f"C = {f2.shape[1]} classes: the kernels index a row with int32 (C < 2**31 - 2**16)")
    if e.dtype != torch.float64 or e.shape != (f2.shape[0],):
        raise ValueError(f"e must be a float64 tensor of shape [{f2.shape[0]}], got {e.dtype} {tuple(e.shape)}")
    devs = {f2.device, q2.device, e.device} | ({q_rows.device} if q_rows is not None else set())
    if len(devs) != 1:
        raise ValueError(f"f2, q2, e (and q_rows) must be on one device, got {sorted(map(str, devs))}")
    if f2.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(f"waterfill_triton runs on CUDA tensors (got {f2.device}); "
                         "set TRITON_INTERPRET=1 before import for the CPU interpreter")


_MARGINS: dict = {}


def _margin_tensor(C: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The float64 radius margin as a one-element device tensor, cached (no fill kernel per call)."""
    key = (C, dtype, device)
    t = _MARGINS.get(key)
    if t is None:
        if len(_MARGINS) > 256:
            _MARGINS.clear()
        t = _MARGINS[key] = torch.full((1,), _margin(C, dtype), dtype=torch.float64, device=device)
    return t


def _launch(f2, q2, e, q_rows=None, *, path="auto", block=None, num_warps=None, ws_fraction=None,
            max_passes=_MAX_PASSES, fused_sums=None, want_reads=True):
    """Run the kernels; returns (p2, passes, reads): reads = full reads of each row (1 for the register tile)."""
    _check(f2, q2, e, q_rows)
    B, C = f2.shape
    dev = f2.device
    p2 = torch.empty((B, C), dtype=f2.dtype, device=dev)
    passes = torch.empty(B, dtype=torch.int64, device=dev)
    if B == 0 or C == 0:
        return p2, passes, passes
    f2 = f2 if f2.stride(1) == 1 else f2.contiguous()
    q2 = q2 if q2.stride(1) == 1 else q2.contiguous()
    if q_rows is not None:  # indices must lie in [0, q2.shape[0]): not checked (that would synchronise)
        q_mode, qidx = 2, q_rows if q_rows.dtype == torch.int64 else q_rows.long()
    else:
        q_mode = 1 if (q2.shape[0] == 1 and B != 1) else 0
        qidx = passes  # unused pointer
    sq = 0 if q_mode == 1 else q2.stride(0)
    margin = _margin_tensor(C, f2.dtype, dev)
    fused = (not _INTERPRETED) if fused_sums is None else bool(fused_sums)
    if path == "auto":
        path = "tile" if C <= TILE_MAX_C else "row"
    if path == "tile":
        bc = max(16, _next_pow2(C))
        rows = max(1, min(16, TILE_ELEMS // bc))
        tile = rows * bc
        warps = num_warps or (4 if tile <= 256 else 8 if tile <= 2048 else 16)
        grid = (triton.cdiv(B, rows),)
        _wf_tile_kernel[grid](f2, q2, qidx, e, p2, passes, B, C, f2.stride(0), sq, p2.stride(0), margin,
                              max_passes, Q_MODE=q_mode, ROWS=rows, BC=bc, FUSED_SUMS=fused, num_warps=warps)
        return p2, passes, (torch.ones_like(passes) if want_reads else None)
    if path != "row":
        raise ValueError(f"path must be 'auto', 'tile' or 'row', got {path!r}")
    block = block or ROW_BLOCK
    cap = max(block, C // (ws_fraction or WS_FRACTION))
    ws = torch.empty(B, 2, cap, dtype=f2.dtype, device=dev)
    reads = torch.empty_like(passes)
    _wf_row_kernel[(B,)](f2, q2, qidx, e, p2, ws, passes, reads, C, f2.stride(0), sq, p2.stride(0), cap, margin,
                         max_passes, TAU_A, Q_MODE=q_mode, BLOCK=block,
                         FUSED_SUMS=fused,
                         num_warps=num_warps or ROW_WARPS)
    return p2, passes, reads


def waterfill_triton(f2: torch.Tensor, q2: torch.Tensor, e: torch.Tensor, q_rows: torch.Tensor | None = None):
    """Solve every row of ``f2`` [B, C] towards ``q2`` ([B, C], [1, C], or any [K, C] picked by ``q_rows`` [B]) under
    float64 radii ``e`` [B]; returns (p2 of f2's dtype, int64 pass count per row).  No validation, no host sync.

    Same contract as ``_waterfill_numba`` / ``_waterfill_torch``; a row whose count reaches ``_MAX_PASSES`` + 1
    stopped at the pass cap.
    """
    p2, passes, _ = _launch(f2, q2, e, q_rows, want_reads=False)
    return p2, passes


def waterfill_triton_stats(f2, q2, e, q_rows=None, **options):
    """Like :func:`waterfill_triton` but also returns the number of full reads of each row (benchmarks, tests);
    ``options``: path ('auto', 'tile', 'row'), block, num_warps, ws_fraction, max_passes, fused_sums (the row
    kernel's multi-operand reductions; off in the interpreter, where they are slow)."""
    return _launch(f2, q2, e, q_rows, **options)


def ssd_defend_triton(probs: torch.Tensor, q_table: torch.Tensor, uniforms: torch.Tensor, *, T: float, eps: float,
                      normalized: bool = True) -> torch.Tensor:
    """SSD's post-processing (Algorithm 1) with no host synchronisation: label sampling, q^y lookup, radius, solve.

    ``probs`` [B, C] on the device, ``q_table`` [C, C] already there (same dtype), ``uniforms`` [B] float64 in [0, 1)
    there too (e.g. ``torch.rand(B, device=..., dtype=torch.float64)`` or the hash uniforms copied with
    ``non_blocking=True``).  Same arithmetic as ``SSD.__call__`` with ``validate=False``: inverse-CDF sampling of
    softmax(probs / T) (argmax when T = 0), radius eps * H(probs) in float64 (normalised by log C or in nats), and
    the kernel reads q^y rows straight from the table (no [B, C] gather).

    What ``SSD.__call__`` does today that waits for the GPU (each a host synchronisation): copying ``q_table`` to
    the device on every call when it lives on the CPU; CPU-generator uniforms moved with a blocking ``.to(device)``
    (hash mode also copies the inputs back with ``.cpu()``, inherent to hashing on the host); ``waterfill``'s
    validation (``bool(isnan(e).any())``, ``(e < 0).any()``, and per tensor ``bool(isfinite(sums).all())``,
    ``bool((x < 0).any())``, ``float(dev.max())``); the torch solver's ``bool(limit.any())`` and its convergence
    checks, one per pass or per four.  This function avoids all of them.
    """
    if probs.dim() != 2 or q_table.shape != (probs.shape[1], probs.shape[1]):
        raise ValueError(f"probs must be [B, C] and q_table [C, C]; got {tuple(probs.shape)}, {tuple(q_table.shape)}")
    C = probs.shape[1]
    if T == 0:
        labels = probs.argmax(-1)
    else:
        weights = torch.softmax(probs.double() / T, dim=-1)
        cdf = weights.cumsum(-1)
        u = uniforms.to(torch.float64) * cdf[:, -1]
        labels = torch.searchsorted(cdf, u[:, None]).squeeze(-1).clamp_max(C - 1)
    radius = eps * entropy(probs.double(), normalized=normalized)  # as SSD.radius
    qt = q_table if q_table.dtype == probs.dtype else q_table.to(probs.dtype)
    p, _ = waterfill_triton(probs, qt, radius, q_rows=labels)
    return p
