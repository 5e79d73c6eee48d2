"""The simplex explorer: its Python side, and its JavaScript maths run in Node against ssdlib's own functions."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

import ssdlib
from ssdlib.reporting.simplex_js import SCRIPT
from ssdlib.reporting.widgets import explorer_config, explorer_html, simplex_explorer, write_explorer_page

NODE = shutil.which("node") or shutil.which("nodejs")
needs_node = pytest.mark.skipif(NODE is None, reason="needs Node.js to run the explorer's JavaScript (apt: nodejs)")

F0 = [0.55, 0.30, 0.15]
Q = [[0.80, 0.12, 0.08], [0.15, 0.75, 0.10], [0.10, 0.15, 0.75]]

HARNESS = r"""
const fs = require("fs");
const E = require(process.argv[2]);
const jobs = JSON.parse(fs.readFileSync(0, "utf8"));
const fin = (x) => (isFinite(x) ? x : String(x));
const out = jobs.map((j) => {
  if (j.kind === "waterfill") { const w = E.waterfill(j.f, j.q, j.eps); return {p: w.p, a: fin(w.a), b: fin(w.b)}; }
  if (j.kind === "scalars") {
    return {Hn: E.entropy(j.f, true), Hnats: E.entropy(j.f, false), kl: fin(E.kl(j.f, j.q)), sm: E.softmax(j.f, j.T)};
  }
  if (j.kind === "cloud") {
    const c = j.cfg.cloud, r = E.cloudCmi(c.points, c.labels, c.uniforms, j.cfg.q, j.T, j.eps, j.normalized);
    return {before: r.before, after: r.after, defended: r.defended};
  }
  if (j.kind === "compute") {
    const s = E.compute(j.cfg, {f: j.cfg.f, T: j.cfg.T, eps: j.cfg.eps, normalized: j.cfg.normalized});
    return {H: s.H, r: s.r, classes: s.classes.map((c) => ({P: c.P, p: c.p, klF: c.klF, klP: c.klP, l1: c.l1})),
            cmiBefore: s.cmiBefore, cmiAfter: s.cmiAfter, ball: s.ball};
  }
  throw new Error("unknown job " + j.kind);
});
process.stdout.write(JSON.stringify(out));
"""


def run_js(tmp_path, jobs: list[dict]) -> list[dict]:
    """Run the explorer's script in Node on ``jobs`` and return its answers."""
    lib = tmp_path / "explorer.js"
    lib.write_text(SCRIPT)
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    result = subprocess.run([NODE, str(harness), str(lib)], input=json.dumps(jobs), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def _random_rows(rng, C, kind):
    x = rng.dirichlet(np.full(C, 0.7))
    if kind == "zeros":
        x[rng.choice(C, size=max(1, C // 3), replace=False)] = 0.0
        x = x / x.sum() if x.sum() > 0 else np.eye(C)[0]
    return x


@needs_node
def test_js_waterfill_matches_ssdlib(tmp_path):
    rng = np.random.default_rng(0)
    jobs = []
    for n in range(600):
        C = [3, 3, 3, 5, 12][n % 5]
        f = _random_rows(rng, C, "zeros" if n % 7 == 0 else "flat")
        q = _random_rows(rng, C, "zeros" if n % 5 == 1 else "flat")
        eps = float(rng.choice([0.0, 1e-17, rng.uniform(0, 0.3), rng.uniform(0, 2.2), np.abs(q - f).sum()]))
        jobs.append({"kind": "waterfill", "f": f.tolist(), "q": q.tolist(), "eps": eps})
    answers = run_js(tmp_path, jobs)
    worst = 0.0
    for job, ans in zip(jobs, answers):
        f, q = torch.tensor(job["f"], dtype=torch.float64), torch.tensor(job["q"], dtype=torch.float64)
        ref = ssdlib.waterfill(f[None], q[None], job["eps"])[0].numpy()
        worst = max(worst, float(np.abs(np.array(ans["p"]) - ref).max()))
    assert worst < 1e-12, f"JavaScript water-filling differs from ssdlib.waterfill by {worst:.3g}"


@needs_node
def test_js_levels_are_the_kkt_levels(tmp_path):
    """p_i = min(max(f_i, a q_i), b q_i) with the levels the script draws (to rounding)."""
    rng = np.random.default_rng(1)
    jobs = [{"kind": "waterfill", "f": rng.dirichlet(np.ones(3)).tolist(), "q": rng.dirichlet(np.ones(3) * 2).tolist(),
             "eps": float(rng.uniform(0.01, 0.5))} for _ in range(200)]
    for job, ans in zip(jobs, run_js(tmp_path, jobs)):
        f, q, a, b = np.array(job["f"]), np.array(job["q"]), ans["a"], ans["b"]
        assert a <= 1.0 + 1e-12 <= b + 2e-12
        np.testing.assert_allclose(np.minimum(np.maximum(f, a * q), b * q), ans["p"], atol=1e-9)


@needs_node
def test_js_entropy_kl_softmax_match_ssdlib(tmp_path):
    rng = np.random.default_rng(2)
    jobs = []
    for n in range(100):
        f = _random_rows(rng, 3, "zeros" if n % 4 == 0 else "flat")
        jobs.append({"kind": "scalars", "f": f.tolist(), "q": rng.dirichlet(np.ones(3)).tolist(),
                     "T": float(10 ** rng.uniform(-2, 1))})
    for job, ans in zip(jobs, run_js(tmp_path, jobs)):
        f, q = torch.tensor(job["f"], dtype=torch.float64)[None], torch.tensor(job["q"], dtype=torch.float64)[None]
        assert ans["Hn"] == pytest.approx(float(ssdlib.entropy(f, normalized=True)[0]), abs=1e-14)
        assert ans["Hnats"] == pytest.approx(float(ssdlib.entropy(f)[0]), abs=1e-14)
        assert ans["kl"] == pytest.approx(float(ssdlib.kl_divergence(f, q)[0]), abs=1e-13)
        np.testing.assert_allclose(ans["sm"], torch.softmax(f[0] / job["T"], 0).numpy(), atol=1e-14)


@needs_node
@pytest.mark.parametrize("T,eps,normalized",
                         [(0.1, 0.3, True), (1.0, 0.6, False), (0.03, 1.5, True), (3.0, 0.05, False)])
def test_js_cloud_cmi_is_ssdlib_cmi_of_ssd(tmp_path, T, eps, normalized):
    cfg = explorer_config(Q, F0, seed=3)
    [ans] = run_js(tmp_path, [{"kind": "cloud", "cfg": cfg, "T": T, "eps": eps, "normalized": normalized}])
    points = torch.tensor(cfg["cloud"]["points"], dtype=torch.float64)
    labels = torch.tensor(cfg["cloud"]["labels"])
    defense = ssdlib.SSD(torch.tensor(Q, dtype=torch.float64), T=T, eps=eps,
                         entropy="normalized" if normalized else "nats", seed=cfg["cloud"]["seed"])
    defended = defense(points)
    np.testing.assert_allclose(ans["defended"], defended.numpy(), atol=1e-12)
    assert ans["before"] == pytest.approx(ssdlib.cmi(points, labels), abs=1e-12)
    assert ans["after"] == pytest.approx(ssdlib.cmi(defended, labels), abs=1e-12)


@needs_node
def test_js_figure_numbers_match_python(tmp_path):
    cfg = explorer_config(Q, F0, eps=0.3, T=0.1)
    [ans] = run_js(tmp_path, [{"kind": "compute", "cfg": cfg}])
    f = torch.tensor(F0, dtype=torch.float64)
    q = torch.tensor(Q, dtype=torch.float64)
    H = float(ssdlib.entropy(f[None], normalized=True)[0])
    assert ans["H"] == pytest.approx(H, abs=1e-14) and ans["r"] == pytest.approx(0.3 * H, abs=1e-14)
    P = torch.softmax(f / 0.1, 0).numpy()
    p = ssdlib.waterfill(f.expand(3, 3).contiguous(), q, torch.full((3,), 0.3 * H, dtype=torch.float64)).numpy()
    for y, c in enumerate(ans["classes"]):
        assert c["P"] == pytest.approx(P[y], abs=1e-14)
        np.testing.assert_allclose(c["p"], p[y], atol=1e-12)
        kl_p = float(ssdlib.kl_divergence(torch.tensor(p[y])[None], q[y][None])[0])
        assert c["klP"] == pytest.approx(kl_p, abs=1e-12)
        assert c["klF"] == pytest.approx(float(ssdlib.kl_divergence(f[None], q[y][None])[0]), abs=1e-12)
        assert c["l1"] <= 0.3 * H + 1e-12
    # the ball polygon lies on the simplex and within the L1 radius of f
    ball = np.array(ans["ball"])
    assert len(ball) >= 3 and (ball >= -1e-12).all()
    np.testing.assert_allclose(ball.sum(1), 1.0, atol=1e-12)
    assert (np.abs(ball - np.array(F0)).sum(1) <= 0.3 * H + 1e-12).all()


def test_config_checks_its_inputs():
    with pytest.raises(ValueError, match="shape"):
        explorer_config([[0.5, 0.5]], F0)
    with pytest.raises(ValueError, match="sum to 1"):
        explorer_config(Q, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="positive"):
        explorer_config([[1.0, 0.0, 0.0]] * 3, F0)
    with pytest.raises(ValueError, match="T must"):
        explorer_config(Q, F0, T=0.0)
    with pytest.raises(ValueError, match="eps must"):
        explorer_config(Q, F0, eps=3.0)


def test_cloud_uniforms_are_those_of_ssd():
    cfg = explorer_config(Q, F0, n_per_class=5, seed=7)
    expected = torch.rand(15, generator=torch.Generator().manual_seed(7), dtype=torch.float64).tolist()
    assert cfg["cloud"]["uniforms"] == expected
    assert cfg["cloud"]["labels"] == [0] * 5 + [1] * 5 + [2] * 5


def test_html_is_self_contained(tmp_path):
    a = simplex_explorer(torch.tensor(Q, dtype=torch.float64), torch.tensor(F0, dtype=torch.float64)).data
    b = explorer_html(explorer_config(Q, F0))
    ids = [s.split('"')[1] for s in (a, b)]
    assert ids[0] != ids[1], "two explorers on one page need distinct element ids"
    for fragment in (a, b):
        assert "<script>" in fragment and "src=" not in fragment and "http" not in fragment.replace(
            "http://www.w3.org/2000/svg", "")
    page = write_explorer_page(tmp_path / "explorer.html", Q, F0)
    assert page.read_text().startswith("<!DOCTYPE html>")


@needs_node
def test_a_given_cloud_gives_the_static_figures_cmi(tmp_path):
    """The theory page hands the explorer the cloud of its static CMI panel: both then print the same numbers."""
    torch.manual_seed(1)
    points = torch.cat([torch.distributions.Dirichlet(10 * torch.tensor(Q[y])).sample((10,)) for y in range(3)]).double()
    labels = torch.arange(3).repeat_interleave(10)
    means = ssdlib.estimate_q_table(points, labels, 3)
    cfg = explorer_config(means, F0, T=0.3, eps=0.5, seed=4, cloud=(points, labels))
    [ans] = run_js(tmp_path, [{"kind": "cloud", "cfg": cfg, "T": 0.3, "eps": 0.5, "normalized": True}])
    defended = ssdlib.SSD(means, T=0.3, eps=0.5, seed=4)(points)
    assert ans["before"] == pytest.approx(ssdlib.cmi(points, labels, 3), abs=1e-12)
    assert ans["after"] == pytest.approx(ssdlib.cmi(defended, labels, 3), abs=1e-12)
    with pytest.raises(ValueError, match="cloud"):
        explorer_config(Q, F0, cloud=(points[:, :2], labels))
