"""The cheap output perturbations: against ART's postprocessors on single rows, properties with hypothesis, seeded
noise, and plugged into a BlackBox like SSD."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ssdlib import BlackBox
from ssdlib.defenses import (OUTPUT_PERTURBATIONS, REGISTRY, GaussianNoise, ReverseSigmoid, Rounding, TopK, TopLabel,
                             build_perturbation)


def rows(n, c, seed=0, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * sharp, -1)


@st.composite
def prob_rows(draw, max_classes=12):
    c = draw(st.integers(2, max_classes))
    n = draw(st.integers(1, 5))
    sharp = draw(st.floats(0.1, 8.0))
    return rows(n, c, seed=draw(st.integers(0, 2**31 - 1)), sharp=sharp)


def test_registry_names_every_perturbation():
    assert OUTPUT_PERTURBATIONS == ("rounding", "gaussian", "reverse_sigmoid", "top_k", "top_1")
    for name in OUTPUT_PERTURBATIONS:
        assert REGISTRY[name].kind == "post-processing"
        assert type(build_perturbation(name, seed=0)) is REGISTRY[name].cls
    with pytest.raises(ValueError, match="valid: rounding"):
        build_perturbation("dp")
    with pytest.raises(ValueError, match="bad parameters"):
        build_perturbation("top_k", decimals=2)
    for bad in (lambda: Rounding(0), lambda: TopK(0), lambda: GaussianNoise(0.0), lambda: ReverseSigmoid(-1.0)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="logits"):
        TopK(2)(torch.randn(3, 4))


# --- against ART's implementations, one row at a time --------------------------------------------------------------
def _art():
    """ART's postprocessors; ART is optional (the extra ssdlib[art]), so the comparisons skip without it."""
    return pytest.importorskip("art.defences.postprocessor", reason="ART (the extra ssdlib[art]) is not installed")


@pytest.mark.parametrize("decimals", [1, 2, 3, 5])
def test_rounding_matches_art_rounded(decimals):
    art = _art().Rounded(decimals=decimals)
    for i, row in enumerate(rows(20, 9, seed=decimals)):
        ours = Rounding(decimals)(row[None])
        np.testing.assert_allclose(ours.numpy(), art(row[None].numpy()), atol=1e-12, err_msg=f"row {i}")


@pytest.mark.parametrize("beta,gamma", [(1.0, 0.1), (0.3, 0.5), (2.0, 1.0)])
def test_reverse_sigmoid_matches_art(beta, gamma):
    art = _art().ReverseSigmoid(beta=beta, gamma=gamma)
    for row in rows(20, 7, seed=3):
        expected = art(row[None].numpy())
        if np.isfinite(expected).all():  # ART divides by zero where every entry is clipped away
            np.testing.assert_allclose(ReverseSigmoid(beta, gamma)(row[None]).numpy(), expected, atol=1e-12)


def test_gaussian_noise_matches_art_given_the_same_noise(monkeypatch):
    art = _art().GaussianNoise(scale=0.05)
    ours = GaussianNoise(0.05, seed=4)
    for row in rows(20, 8, seed=5):
        noise = ours.noise((1, 8))
        monkeypatch.setattr(np.random, "normal", lambda loc, scale, size, noise=noise: noise.numpy().reshape(size))
        expected = art(row[None].numpy())
        np.testing.assert_allclose(GaussianNoise.add(row[None], noise).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_matches_art_high_confidence_renormalised(k):
    pp = _art()
    for row in rows(20, 8, seed=k):
        ranked = row.sort(descending=True).values
        cutoff = float(ranked[k - 1] + ranked[k]) / 2  # between the k-th and the (k+1)-th entry
        art = pp.HighConfidence(cutoff=cutoff)(row[None].numpy())
        np.testing.assert_allclose(TopK(k)(row[None]).numpy(), art / art.sum(-1, keepdims=True), atol=1e-12)


def test_top_label_matches_art_class_labels_on_single_rows_not_on_batches():
    art = _art().ClassLabels()
    batch = rows(6, 5, seed=6)
    for row in batch:
        np.testing.assert_array_equal(TopLabel()(row[None]).numpy(), art(row[None].numpy()))
    ours = TopLabel()(batch).numpy()
    assert (ours.sum(-1) == 1).all()
    if len(set(batch.argmax(-1).tolist())) > 1:  # ART's open bug: every row's label is set in every row
        assert (art(batch.numpy()).sum(-1) > 1).all()


# --- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(prob_rows(), st.integers(1, 4), st.floats(0.01, 1.0), st.floats(0.05, 3.0), st.floats(0.05, 2.0),
       st.integers(0, 2**31 - 1))
def test_perturbations_release_probability_vectors(probs, k, scale, beta, gamma, seed):
    for p in (GaussianNoise(scale, seed=seed), ReverseSigmoid(beta, gamma), TopK(k), TopLabel()):
        out = p(probs)
        assert out.shape == probs.shape and out.dtype == probs.dtype
        assert (out >= 0).all() and torch.allclose(out.sum(-1), torch.ones(len(probs), dtype=out.dtype))
    top = TopK(k)(probs)
    assert ((top > 0).sum(-1) <= k).all()
    assert torch.equal(top.argmax(-1), probs.argmax(-1))  # top-k keeps the top-1 label
    one = TopLabel()(probs)
    assert torch.equal(one.argmax(-1), probs.argmax(-1)) and torch.equal(one.max(-1).values, torch.ones(len(probs),
                                                                                                      dtype=one.dtype))


@settings(max_examples=60, deadline=None)
@given(prob_rows(), st.integers(1, 6))
def test_rounding_moves_each_entry_at_most_half_a_unit(probs, decimals):
    out = Rounding(decimals)(probs)
    assert ((out - probs).abs() <= 0.5 * 10.0 ** -decimals + 1e-12).all()
    assert torch.equal(Rounding(decimals)(out), out)  # idempotent


def test_gaussian_noise_is_seeded_and_leaves_global_state_alone():
    probs = rows(10, 6, seed=7)
    np.random.seed(0)
    torch.manual_seed(0)
    before = (np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    a, b, c = GaussianNoise(0.1, seed=1)(probs), GaussianNoise(0.1, seed=1)(probs), GaussianNoise(0.1, seed=2)(probs)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (np.random.get_state()[1] == before[0]).all() and torch.equal(torch.get_rng_state(), before[1])
    noisy = GaussianNoise(0.1, seed=1)
    assert not torch.equal(noisy(probs), noisy(probs))  # fresh draws per query


def test_emptied_rows_become_uniform():
    probs = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    out = GaussianNoise.add(probs, torch.tensor([[-1.0, -1.0]], dtype=torch.float64))
    assert torch.equal(out, torch.full((1, 2), 0.5, dtype=torch.float64))


def test_perturbations_plug_into_a_blackbox_like_ssd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 7)).eval()
    x = torch.rand(12, 3, 4, 4)
    plain = BlackBox(model)(x)
    labels = BlackBox(model, mode="hard")(x)
    for name, params in (("rounding", {"decimals": 2}), ("gaussian", {"scale": 0.05}),
                         ("reverse_sigmoid", {"beta": 0.5}), ("top_k", {"k": 3}), ("top_1", {})):
        defense = build_perturbation(name, seed=0, **params)
        soft = BlackBox(model, defense)(x)
        assert soft.shape == plain.shape and soft.dtype == torch.float32 and not torch.equal(soft, plain)
        if name in ("top_k", "top_1"):  # label-only attackers see the same labels under these
            assert torch.equal(BlackBox(model, defense, mode="hard")(x), labels)


# --- the utility-matching rule and the attack rows --------------------------------------------------------------
def test_matching_picks_the_grid_value_nearest_in_avg_l1():
    from ssdlib.experiments.perturbations import grid_of, match_parameter

    base = rows(200, 10, seed=8)
    for row in OUTPUT_PERTURBATIONS:
        for target in (0.01, 0.2, 0.8):
            params, gap = match_parameter(row, base, target, seed=0)
            key, grid = grid_of(row, 10)
            l1 = lambda p: float((build_perturbation(row, seed=0, **p)(base) - base).abs().sum(-1).mean())  # noqa
            assert gap == pytest.approx(abs(l1(params) - target))
            others = [{**params, key: v} for v in grid] if key else []
            assert all(gap <= abs(l1(p) - target) + 1e-12 for p in others)
    assert match_parameter("top_k", base, 0.0)[0] == {"k": 9}  # the least change the grid allows
    assert match_parameter("gaussian", base, 0.0)[0]["scale"] == min(grid_of("gaussian", 10)[1])


def test_attack_rows_accept_the_perturbations_beside_the_paper_rows():
    from ssdlib.experiments import attacks as A

    assert A.BASELINE_ROWS == OUTPUT_PERTURBATIONS and not set(A.BASELINE_ROWS) & set(A.ROWS)
    assert [A.row_title(r) for r in A.BASELINE_ROWS] == [REGISTRY[r].title for r in A.BASELINE_ROWS]
    with pytest.raises(ValueError, match="valid: .*top_1"):
        A.oracle_factory("lfw_ir152", "dp", "smoke")


def test_block_lines_and_same_labels_follow_the_rule():
    import pandas as pd

    from ssdlib.experiments.perturbations import block_lines, same_labels

    records = []
    for row, hits in (("prior", 0), ("none", 4), ("ssd", 1), ("top_k", 4), ("gaussian", 0)):
        for c in range(30):
            records.append({"setting": "s", "attack": "mirror", "row": row, "class": c, "n": 5,
                            "hits@1": hits if c % 3 else hits // 2})
    (line,) = block_lines(pd.DataFrame(records), ["top_k", "gaussian", "top_1"], titles={"s": "S"},
                          attack_titles={"mirror": "Mirror"})
    assert line.startswith("**S**, Mirror: top-k: not distinguishable at this scale from no defense")
    assert "Gaussian noise: lower than no defense" in line and "top-1" not in line
    assert "higher than SSD (paper)" in line.split("Gaussian")[0]  # top-k keeps the undefended leak, above SSD
    flat = pd.DataFrame(records).assign(**{"hits@1": 1})
    (skip,) = block_lines(flat, ["top_k"])
    assert "does not beat random prior samples" in skip
    utility = pd.DataFrame({"setting": ["a", "a", "b", "b"], "row": ["top_k", "gaussian"] * 2,
                            "top-1 agreement": [100.0, 100.0, 100.0, 99.5]})
    assert same_labels(utility, ["top_k", "gaussian"]) == (["top_k"], ["gaussian"])
