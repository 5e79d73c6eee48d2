"""Triton water-filling kernels: agreement with the exact CPU solver and the cvxpy oracle, zero-q rules, the L1 bound.

On a CUDA machine the tests run on the GPU.  Without one they run in Triton's interpreter, which needs
``TRITON_INTERPRET=1`` before the kernels are defined: ``test_interpreter_suite`` reruns this file in a subprocess
with it set (the other tests skip in the parent process).  Sizes are small because the interpreter is slow.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from solver_rows import edge_rows, row

HAVE_TRITON = importlib.util.find_spec("triton") is not None
TRITON_VERSION = tuple(int(x) for x in importlib.metadata.version("triton").split(".")[:2]) if HAVE_TRITON else ()
#: interpreters before 3.9 hand int arguments to the kernel as 1-element arrays, which ``range`` rejects (seen with
#: 3.6); the compiled kernels build with 3.6 and 3.9 alike
INTERP_OK = TRITON_VERSION >= (3, 9)
INTERP = os.environ.get("TRITON_INTERPRET", "0") == "1"
if INTERP and HAVE_TRITON and INTERP_OK:
    DEVICE = "cpu"
elif HAVE_TRITON and not INTERP and torch.cuda.is_available():
    DEVICE = "cuda"
else:
    DEVICE = None

if not HAVE_TRITON:
    _WHY = "triton is not installed"
elif INTERP and not INTERP_OK:
    _WHY = f"the interpreter of triton {importlib.metadata.version('triton')} cannot run these kernels (needs >= 3.9)"
else:
    _WHY = "Triton kernels need CUDA or TRITON_INTERPRET=1 (test_interpreter_suite runs them in a subprocess)"
needs_kernels = pytest.mark.skipif(DEVICE is None, reason=_WHY)
needs_cvxpy = pytest.mark.skipif(importlib.util.find_spec("cvxpy") is None, reason="needs cvxpy (test extra)")

if DEVICE is not None:
    import ssdlib.solver.triton_kernel as st
    from ssdlib import solver
    from ssdlib.defenses import SSD
    from ssdlib.solver.oracle import waterfill_cvxpy


# ---------------------------------------------------------------------------------------------------------------
# the interpreter run (parent process without CUDA)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
@pytest.mark.skipif(not INTERP_OK, reason="the interpreter needs triton >= 3.9 for these kernels")
@pytest.mark.skipif(DEVICE is not None or INTERP, reason="kernels run in this process (CUDA or interpreter)")
def test_interpreter_suite():
    """Rerun this file with TRITON_INTERPRET=1 in a subprocess (the kernels are defined at import)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": os.environ.get(
        "TRITON_DEFAULT_FP_FUSION", "1")}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-rs"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    print(f"interpreter run: {time.perf_counter() - t0:.1f} s\n{tail}")
    assert proc.returncode == 0, f"interpreter run failed (exit {proc.returncode}):\n{tail}"
    assert " passed" in tail, tail


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _run(f, q, e, q_rows=None, **opts):
    """Kernel on DEVICE; returns (p, passes, reads) on the CPU."""
    dev = torch.device(DEVICE)
    e = torch.as_tensor(e, dtype=torch.float64)
    if e.dim() == 0:
        e = e.expand(f.shape[0]).contiguous()
    qr = None if q_rows is None else q_rows.to(dev)
    p, n, r = st.waterfill_triton_stats(f.to(dev), q.to(dev), e.to(dev), qr, **opts)
    assert p.dtype == f.dtype and p.device.type == dev.type and n.dtype == torch.int64
    return p.cpu(), n.cpu(), r.cpu()


def _reference(f, q, e):
    e = torch.as_tensor(e, dtype=torch.float64)
    if e.dim() == 0:
        e = e.expand(f.shape[0]).contiguous()
    return solver.cpu._waterfill_numba(f, q, e)


def _atol(dtype):
    return 1e-12 if dtype == torch.float64 else 2e-7


def _check_bound(p, f, e):
    """||p - f||_1 <= eps (exactly for float32, to 1e-13 for float64), p >= 0, finite."""
    assert torch.isfinite(p).all() and (p >= 0).all()
    e = torch.as_tensor(e, dtype=torch.float64).expand(f.shape[0])
    l1 = (p.double() - f.double()).abs().sum(-1)
    slack = 0.0 if f.dtype == torch.float32 else 1e-13
    assert torch.all(l1 <= e + slack), (l1 - e).max()


# path options: the register tile, and the row kernel with tiny blocks (several blocks, workspace at small C)
PATHS = {"tile": {"path": "tile"}, "row16": {"path": "row", "block": 16}}


# ---------------------------------------------------------------------------------------------------------------
# agreement with the exact CPU solver
# ---------------------------------------------------------------------------------------------------------------


@needs_kernels
def test_triton_available():
    ok, how = st.triton_available()
    assert ok, how
    assert ("interpreter" in how) == (DEVICE == "cpu")


@needs_kernels
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shared", [False, True])
def test_matches_cpu_solver_on_edge_rows(path, dtype, shared):
    """Zeros in f and q (feasible and limit rows), eps = 0, tiny and large budgets, per-row budgets."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((path, str(dtype), shared)).encode()))
    for C in (2, 7, 33):
        f, q = edge_rows(g, 8, C, dtype, shared, flat_shared=False)
        e = torch.rand(8, generator=g, dtype=torch.float64) * 2.5
        e[0], e[1], e[2], e[3] = 0.0, 1e-12, 2.0, 1e-17
        p, n, _ = _run(f, q, e, **PATHS[path])
        p_ref, n_ref = _reference(f, q, e)
        torch.testing.assert_close(p, p_ref, atol=_atol(dtype), rtol=0)
        _check_bound(p, f, e)
        assert torch.equal(p[0], f[0]) or torch.equal(p[0], q[0 if shared else 0])  # eps = 0
        assert torch.equal(p[3], f[3]) or torch.equal(p[3], q[0 if shared else 3])  # below the margin
        assert int(n.min()) >= 2 and int(n.max()) <= 30
        assert (n - n_ref).abs().max() <= 1  # same Newton path up to summation order


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_kernel_larger_than_one_block(dtype):
    """C above the register tile: the row kernel with its default block, workspace passes, both zero-q cases."""
    C = 5000
    g = torch.Generator().manual_seed(3)
    f = torch.softmax(torch.randn(4, C, generator=g, dtype=torch.float64) * 4, -1)
    q = torch.softmax(torch.randn(4, C, generator=g, dtype=torch.float64) * 2, -1)
    q[1, ::7] = 0.0  # zero-q entries, feasible
    q[2, : C // 2] = 0.0  # limit rule (mass of f on zeros of q above eps / 2)
    q = q / q.sum(-1, keepdim=True)
    f, q = f.to(dtype), q.to(dtype)
    e = torch.tensor([0.05, 0.7, 0.3, 1.2], dtype=torch.float64)
    p, n, reads = _run(f, q, e)
    p_ref, n_ref = _reference(f, q, e)
    assert C > st.TILE_MAX_C and C > st.ROW_BLOCK
    torch.testing.assert_close(p, p_ref, atol=_atol(dtype), rtol=0)
    _check_bound(p, f, e)
    assert torch.all(p[1][q[1] == 0] == 0)
    assert bool((solver.vectorized._pass1_torch(f.double(), q.double(), e)[1][2]))  # row 2 is a limit row
    assert (n - n_ref).abs().max() <= 1
    assert torch.all(reads <= 4) and torch.all(reads < n), (reads, n)  # most Newton passes read the workspace only


@needs_kernels
@pytest.mark.parametrize("ws_fraction", [10**9, 1])
def test_workspace_overflow_and_full_capacity(ws_fraction):
    """A workspace too small to hold the bracketed entries (passes over the whole row) or holding the whole row."""
    g = torch.Generator().manual_seed(4)
    f, q = edge_rows(g, 6, 150, torch.float64, shared=False)
    e = torch.tensor([0.1, 0.4, 0.8, 1.2, 1.6, 0.02], dtype=torch.float64)
    p, n, reads = _run(f, q, e, path="row", block=16, ws_fraction=ws_fraction)
    p_ref, n_ref = _reference(f, q, e)
    torch.testing.assert_close(p, p_ref, atol=1e-12, rtol=0)
    _check_bound(p, f, e)
    if ws_fraction == 1:
        assert torch.all(reads <= 3)


@needs_kernels
def test_row_kernel_fused_reductions():
    """The multi-operand reductions of the GPU build (the interpreter defaults to plain sums) give the same p."""
    g = torch.Generator().manual_seed(9)
    f, q = edge_rows(g, 3, 40, torch.float64, shared=False)
    e = torch.tensor([0.2, 0.9, 1.4], dtype=torch.float64)
    for opts in ({"path": "row", "block": 16}, {"path": "tile"}):
        p, n, _ = _run(f, q, e, fused_sums=True, **opts)
        torch.testing.assert_close(p, _reference(f, q, e)[0], atol=1e-12, rtol=0)


@needs_kernels
def test_q_row_index_and_sharedrow():
    """q picked per row from a table (q_rows), a single shared row, and per-row budgets give the reference."""
    g = torch.Generator().manual_seed(5)
    K, B, C = 5, 7, 12
    table = torch.softmax(torch.randn(K, C, generator=g, dtype=torch.float64) * 2, -1).float()
    f = torch.softmax(torch.randn(B, C, generator=g, dtype=torch.float64) * 3, -1).float()
    idx = torch.randint(0, K, (B,), generator=g)
    e = torch.linspace(0.0, 1.5, B, dtype=torch.float64)
    for opts in ({"path": "tile"}, {"path": "row", "block": 8}):
        p, _, _ = _run(f, table, e, q_rows=idx, **opts)
        torch.testing.assert_close(p, _reference(f, table[idx].contiguous(), e)[0], atol=2e-7, rtol=0)
        p1, _, _ = _run(f, table[2:3], e, **opts)
        torch.testing.assert_close(p1, _reference(f, table[2:3], e)[0], atol=2e-7, rtol=0)


@needs_kernels
def test_pass_cap_is_reported_and_bound_holds():
    g = torch.Generator().manual_seed(6)
    f = torch.softmax(torch.randn(4, 300, generator=g, dtype=torch.float64) * 4, -1)
    q = torch.softmax(torch.randn(4, 300, generator=g, dtype=torch.float64) * 4, -1)
    e = torch.full((4,), 0.5, dtype=torch.float64)
    for opts in ({"path": "tile"}, {"path": "row", "block": 64}):
        p, n, _ = _run(f, q, e, max_passes=2, **opts)
        assert torch.all(n == 3)  # 1 first pass + 1 Newton pass (cap) + the write: the caller sees the cap
        _check_bound(p, f, e)
        assert torch.all((p.sum(-1) - 1).abs() < 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# exactness against the cvxpy oracle, special cases
# ---------------------------------------------------------------------------------------------------------------


@needs_kernels
@needs_cvxpy
@pytest.mark.parametrize("path", sorted(PATHS))
def test_matches_cvxpy(path):
    rng = np.random.default_rng(zlib.crc32(path.encode()))
    worst = 0.0
    for C, kf, kq in ((3, "flat", "flat"), (7, "peaked", "flat"), (30, "peaked", "peaked"), (12, "ties", "ties"),
                      (10, "zeros", "flat")):
        f, q = row(rng, C, kf), row(rng, C, kq)
        for frac in (0.3, 0.9):
            eps = frac * np.abs(q - f).sum()
            p, _, _ = _run(torch.from_numpy(f)[None], torch.from_numpy(q)[None], eps, **PATHS[path])
            po = waterfill_cvxpy(f, q, eps)
            np.testing.assert_allclose(p[0].numpy(), po, atol=1e-5)
            worst = max(worst, float(np.abs(p[0].numpy() - po).max()))
            assert math.fsum(np.abs(p[0].numpy() - f)) == pytest.approx(eps, abs=1e-9)  # budget used fully
    print(f"largest |p - p_cvxpy| = {worst:.2e}")


@needs_kernels
@needs_cvxpy
def test_zero_q_rules_against_cvxpy():
    """Feasible zero-q case: those entries go to exactly 0.  Limit case: the smoothed-q oracle, q > 0 never lowered."""
    rng = np.random.default_rng(2)
    f = row(rng, 10, "flat")
    q = row(rng, 10, "zeros")
    m0 = f[q == 0].sum()
    eps = 2 * m0 + 0.5 * (np.abs(q - f).sum() - 2 * m0)
    for path in PATHS:
        p, _, _ = _run(torch.from_numpy(f)[None], torch.from_numpy(q)[None], eps, **PATHS[path])
        np.testing.assert_allclose(p[0].numpy(), waterfill_cvxpy(f, q, eps), atol=1e-5)
        assert np.all(p[0].numpy()[q == 0] == 0)
    f = np.array([0.4, 0.3, 0.2, 0.1])
    q = np.array([0.0, 0.0, 0.5, 0.5])
    eps = 0.4  # m0 = 0.7 > eps / 2: cap L = 0.25 on the zero-q entries
    qd = 0.999999999 * q + 1e-9 / 4
    for path in PATHS:
        p, _, _ = _run(torch.from_numpy(f)[None], torch.from_numpy(q)[None], eps, **PATHS[path])
        np.testing.assert_allclose(p[0, :2].numpy(), [0.25, 0.25], atol=1e-12)
        assert np.all(p[0, 2:].numpy() >= f[2:])
        np.testing.assert_allclose(p[0].numpy(), waterfill_cvxpy(f, qd, eps), atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eps_regimes(dtype):
    """eps = 0 returns f, eps >= ||q - f||_1 (and eps >= 2) returns q exactly, tiny budgets stay within the bound."""
    rng = np.random.default_rng(1)
    f = torch.from_numpy(row(rng, 12, "peaked")).to(dtype)[None].repeat(7, 1)
    q = torch.from_numpy(row(rng, 12, "flat")).to(dtype)[None].repeat(7, 1)
    d = float((q[0].double() - f[0].double()).abs().sum())
    e = torch.tensor([0.0, 1e-300, 1e-9, d * (1 + 1e-6), 1.99, 2.0, 5.0], dtype=torch.float64)
    for path in PATHS:
        p, n, _ = _run(f, q, e, **PATHS[path])
        assert torch.equal(p[0], f[0]) and torch.equal(p[1], f[1])
        for i in (3, 4, 5, 6):
            assert torch.equal(p[i], q[i])
        assert torch.all(n[[0, 1, 3, 4, 5, 6]] == 2)
        _check_bound(p, f, e)
        torch.testing.assert_close(p, _reference(f, q, e)[0], atol=_atol(dtype), rtol=0)


@needs_kernels
def test_ties_and_two_classes():
    for f, q in (([0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.4, 0.4]), ([0.5, 0.5], [0.9, 0.1]), ([1.0, 0.0], [0.0, 1.0]),
                 ([0.0, 1.0], [0.0, 1.0]), ([0.2, 0.2, 0.2, 0.4], [0.2, 0.2, 0.2, 0.4])):
        ft = torch.tensor([f], dtype=torch.float64).repeat(4, 1)
        qt = torch.tensor([q], dtype=torch.float64).repeat(4, 1)
        e = torch.tensor([0.1, 0.5, 1.0, 1.9], dtype=torch.float64)
        for path in PATHS:
            p, _, _ = _run(ft, qt, e, **PATHS[path])
            torch.testing.assert_close(p, _reference(ft, qt, e)[0], atol=1e-14, rtol=0)
            _check_bound(p, ft, e)


# ---------------------------------------------------------------------------------------------------------------
# SSD's post-processing in one call
# ---------------------------------------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("entropy", ["normalized", "nats"])
def test_ssd_defend_matches_ssd(entropy):
    g = torch.Generator().manual_seed(8)
    C, B = 9, 6
    probs = torch.softmax(torch.randn(40, C, generator=g) * 3, -1)
    labels = torch.randint(0, C, (40,), generator=g)
    ssd = SSD.from_predictions(probs, labels, T=0.5, eps=0.6, entropy=entropy, seed=3)
    x = torch.softmax(torch.randn(B, C, generator=g) * 3, -1)
    want = ssd(x)
    u = torch.rand(B, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # SSD's first draw
    dev = torch.device(DEVICE)
    got = st.ssd_defend_triton(x.to(dev), ssd.q_table.to(dev), u.to(dev), T=0.5, eps=0.6,
                               normalized=entropy == "normalized")
    torch.testing.assert_close(got.cpu(), want, atol=2e-7, rtol=0)
    ssd0 = SSD(ssd.q_table, T=0.0, eps=0.6, entropy=entropy)
    got0 = st.ssd_defend_triton(x.to(dev), ssd.q_table.to(dev), u.to(dev), T=0.0, eps=0.6,
                                normalized=entropy == "normalized")
    torch.testing.assert_close(got0.cpu(), ssd0(x), atol=2e-7, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# bad input, property
# ---------------------------------------------------------------------------------------------------------------


@needs_kernels
def test_bad_input():
    dev = torch.device(DEVICE)
    f = torch.full((2, 3), 1 / 3, device=dev)
    e = torch.zeros(2, dtype=torch.float64, device=dev)
    with pytest.raises(ValueError, match="f2 must be"):
        st.waterfill_triton(f[0], f, e)
    with pytest.raises(ValueError, match="dtype"):
        st.waterfill_triton(f, f.double(), e)
    with pytest.raises(ValueError, match="q2 has"):
        st.waterfill_triton(f, torch.full((3, 3), 1 / 3, device=dev), e)
    with pytest.raises(ValueError, match="float64 tensor"):
        st.waterfill_triton(f, f, e.float())
    with pytest.raises(ValueError, match="path"):
        st.waterfill_triton_stats(f, f, e, path="magic")


if DEVICE is not None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hst

    @hst.composite
    def problems(draw):
        C = draw(hst.integers(2, 24))
        B = draw(hst.integers(1, 3))
        dtype = draw(hst.sampled_from([torch.float32, torch.float64]))
        seed = draw(hst.integers(0, 2**31 - 1))
        zero_frac = draw(hst.sampled_from([0.0, 0.3, 0.7]))
        conc = draw(hst.sampled_from([0.3, 1.0, 6.0]))
        eps = draw(hst.one_of(hst.just(0.0), hst.floats(1e-7, 2.5), hst.floats(0.0, 0.05)))
        shared = draw(hst.booleans())
        g = torch.Generator().manual_seed(seed)

        def rows(n):
            x = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64) * conc, -1)
            if zero_frac:
                x = torch.where(torch.rand(x.shape, generator=g, dtype=torch.float64) < zero_frac, 0.0, x)
                x[..., 0] += (x.sum(-1) == 0).double()
                x = x / x.sum(-1, keepdim=True)
            return x.to(dtype)

        return rows(B), rows(1 if shared else B), eps

    @needs_kernels
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(problems())
    def test_property_matches_cpu_solver(prob):
        f, q, eps = prob
        e = torch.full((f.shape[0],), eps, dtype=torch.float64)
        p_ref, _ = _reference(f, q, e)
        for path in PATHS:
            p, _, _ = _run(f, q, e, **PATHS[path])
            _check_bound(p, f, e)
            torch.testing.assert_close(p, p_ref, atol=_atol(f.dtype), rtol=0)


@needs_kernels
def test_waterfill_dispatches_to_the_kernel():
    """``waterfill(..., method="triton")`` (what ``auto`` picks on CUDA when Triton runs) gives numba's answer."""
    g = torch.Generator().manual_seed(21)
    dev = torch.device(DEVICE)
    f = torch.softmax(torch.randn(5, 40, generator=g) * 3, -1)
    q = torch.softmax(torch.randn(5, 40, generator=g) * 3, -1)
    e = torch.rand(5, generator=g, dtype=torch.float64)
    p = solver.waterfill(f.to(dev), q.to(dev), e.to(dev), method="triton")
    torch.testing.assert_close(p.cpu(), solver.waterfill(f, q, e, method="numba"), atol=1e-7, rtol=0)
    n = solver.waterfill_passes(f.to(dev), q.to(dev), e.to(dev), method="triton")
    torch.testing.assert_close(n.cpu(), solver.waterfill_passes(f, q, e, method="numba"))
    shared = solver.waterfill(f.to(dev), q[0].to(dev), 0.3, method="triton")
    torch.testing.assert_close(shared.cpu(), solver.waterfill(f, q[0], 0.3), atol=1e-7, rtol=0)
