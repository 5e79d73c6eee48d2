"""The SSD defense: budget per row, temperature limits, hash determinism, q-table estimation, the wrapper."""
import math
import zlib

import pytest
import torch
from torch import nn

from scipy.stats import chisquare

from ssdlib import SSD, cmi, entropy, estimate_q_table


def classifier_like(n, c, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g) + scale * nn.functional.one_hot(labels, c)
    return torch.softmax(logits, -1), labels


@pytest.fixture
def ssd_and_data():
    probs, labels = classifier_like(400, 10)
    return SSD.from_predictions(probs, labels, T=0.3, eps=0.5), probs, labels


@pytest.mark.parametrize("unit", ["normalized", "nats"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_bound_per_row(unit, dtype):
    probs, labels = classifier_like(300, 20, seed=1)
    ssd = SSD.from_predictions(probs, labels, T=1.0, eps=0.8, entropy=unit)
    probs = probs.to(dtype)
    out = ssd(probs)
    assert out.dtype == dtype and out.shape == probs.shape
    bound = 0.8 * entropy(probs.double(), normalized=unit == "normalized")
    l1 = (out.double() - probs.double()).abs().sum(-1)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert torch.all(l1 <= bound + tol)
    assert torch.allclose(out.double().sum(-1), torch.ones(300, dtype=torch.float64), atol=tol)
    assert torch.all(out >= 0)


def test_nats_budget_is_log_c_times_normalized():
    probs, labels = classifier_like(50, 7)
    a = SSD.from_predictions(probs, labels, T=0.1, entropy="nats", eps=0.3).radius(probs)
    b = SSD.from_predictions(probs, labels, T=0.1, entropy="normalized", eps=0.3).radius(probs)
    assert torch.allclose(a, b * math.log(7))


def test_zero_temperature_keeps_the_argmax(ssd_and_data):
    _, probs, labels = ssd_and_data
    q_table = estimate_q_table(probs, labels, 10)
    ssd = SSD(q_table, T=0.0, eps=0.5)
    assert torch.equal(ssd.sample_labels(probs), probs.argmax(-1))
    small = SSD(q_table, T=1e-4, eps=0.5)
    assert torch.equal(small.sample_labels(probs), probs.argmax(-1))
    # the defended output keeps the top-1 label when sampling the argmax and q^y peaks on y
    assert torch.equal(ssd(probs).argmax(-1), probs.argmax(-1))


def test_high_temperature_samples_uniformly():
    probs, labels = classifier_like(4000, 4, scale=2.0)
    ssd = SSD.from_predictions(probs, labels, T=1e6, eps=0.5, seed=3)
    counts = torch.bincount(ssd.sample_labels(probs), minlength=4).double() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)


def test_generator_mode_is_seeded():
    probs, labels = classifier_like(100, 10)
    a = SSD.from_predictions(probs, labels, T=1.0, seed=5)(probs)
    b = SSD.from_predictions(probs, labels, T=1.0, seed=5)(probs)
    assert torch.equal(a, b)
    c = SSD.from_predictions(probs, labels, T=1.0, seed=6)(probs)
    assert not torch.equal(a, c)


def test_hash_mode_is_deterministic_per_input_and_keyed():
    probs, labels = classifier_like(64, 10)
    inputs = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ssd = SSD.from_predictions(probs, labels, T=1.0, randomness="hash")
    first = ssd(probs, inputs)
    # same inputs -> same outputs, in any order and batch composition
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(ssd(probs[perm], inputs[perm]), first[perm])
    assert torch.equal(ssd(probs[:5], inputs[:5]), first[:5])
    # the labels still follow softmax(f/T): not all equal to the argmax at T = 1
    assert (ssd.sample_labels(probs, inputs) != probs.argmax(-1)).any()
    other = SSD.from_predictions(probs, labels, T=1.0, randomness="hash", hash_key=b"another")
    assert not torch.equal(other.sample_labels(probs, inputs), ssd.sample_labels(probs, inputs))


def test_q_table_estimation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 0, 2])
    with pytest.raises(ValueError, match=r"no samples for classes \[1\]"):
        estimate_q_table(probs, labels, 3)
    table = estimate_q_table(probs, labels, 3, missing="uniform")
    assert torch.allclose(table[0], torch.tensor([0.6, 0.3, 0.1]))
    assert torch.allclose(table[1], torch.full((3,), 1 / 3))
    assert torch.allclose(table[2], probs[2])


def test_ssd_lowers_the_empirical_cmi():
    """The point of the defense: outputs move towards their class mean, so the CMI drops (Section 5.3).

    With a low temperature the sampled label is almost always the prediction; a high one moves many outputs
    towards wrong class means, which raises the CMI measured against the true labels instead.
    """
    probs, labels = classifier_like(2000, 10, scale=3.0)
    ssd = SSD.from_predictions(probs, labels, T=0.1, eps=0.8, seed=0)
    assert cmi(ssd(probs), labels) < 0.8 * cmi(probs, labels)


def test_wrap_returns_log_probabilities_with_same_argmax():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(32, 3, 2, 2)
    probs = torch.softmax(model(x), -1).detach()
    ssd = SSD(estimate_q_table(probs, probs.argmax(-1), 5, missing="uniform"), T=0.0, eps=0.3)
    out = ssd.wrap(model)(x)
    assert out.shape == (32, 5) and torch.isfinite(out).all()
    assert torch.allclose(out.exp().sum(-1), torch.ones(32), atol=1e-5)
    assert torch.equal(out.argmax(-1), probs.argmax(-1))


@pytest.mark.parametrize("kwargs, match", [
    ({"T": -1.0}, "temperature"), ({"eps": -0.1}, "eps"), ({"entropy": "bits"}, "entropy"),
    ({"randomness": "dice"}, "randomness"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSD(torch.eye(3), **{"T": 0.1, **kwargs})


def test_class_count_mismatch_raises():
    with pytest.raises(ValueError, match="classes"):
        SSD(torch.eye(3), T=0.1)(torch.ones(2, 4) / 4)
    with pytest.raises(ValueError, match="square"):
        SSD(torch.ones(3, 4), T=0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    probs, labels = classifier_like(1000, 20)
    cpu = SSD.from_predictions(probs, labels, T=0.5, eps=0.5, seed=1)(probs)
    gpu = SSD.from_predictions(probs.cuda(), labels.cuda(), T=0.5, eps=0.5, seed=1)(probs.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)


def test_temperature_is_required_and_eps_defaults_to_the_papers_value():
    with pytest.raises(TypeError, match="T"):
        SSD(torch.eye(3))
    assert SSD(torch.eye(3), T=0.05).eps == 1.0


@pytest.mark.parametrize("randomness", ["generator", "hash"])
@pytest.mark.parametrize("T", [0.05, 0.3])
def test_label_law_is_softmax_of_probabilities_over_T(randomness, T):
    """Chi-square test of the sampled labels against softmax(f / T) at intermediate temperatures."""
    f = torch.tensor([0.45, 0.30, 0.15, 0.07, 0.03], dtype=torch.float64)
    n = 6000
    probs = f.expand(n, 5).contiguous()
    ssd = SSD(torch.eye(5, dtype=torch.float64), T=T, randomness=randomness, seed=zlib.crc32(b"law"),
              hash_key=b"chi-square")
    inputs = torch.arange(n, dtype=torch.float64)[:, None]  # distinct queries: the hash draws independently
    labels = ssd.sample_labels(probs, inputs)
    expected = torch.softmax(f / T, -1) * n
    counts = torch.bincount(labels, minlength=5).double()
    keep = expected >= 5  # the chi-square approximation needs expected counts >= 5; pool the rest
    obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)]) if (~keep).any() else counts
    exp = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)]) if (~keep).any() else expected
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
    # the same law would fail for a temperature applied the other way round (f * T), or to logits
    wrong = torch.softmax(f * T, -1) * n
    assert chisquare(counts.numpy(), wrong.numpy()).pvalue < 1e-6


def test_hash_key_is_a_fresh_secret_per_instance():
    probs, labels = classifier_like(500, 10)
    inputs = torch.randn(500, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    a = SSD.from_predictions(probs, labels, T=1.0, randomness="hash")
    b = SSD.from_predictions(probs, labels, T=1.0, randomness="hash")
    assert not torch.equal(a.sample_labels(probs, inputs), b.sample_labels(probs, inputs))
    c = SSD.from_predictions(probs, labels, T=1.0, randomness="hash", hash_key=bytes(a.hash_key.tolist()))
    assert torch.equal(a.sample_labels(probs, inputs), c.sample_labels(probs, inputs))


def test_logits_are_refused_before_the_budget():
    probs, labels = classifier_like(50, 6)
    ssd = SSD.from_predictions(probs, labels, T=0.1)
    with pytest.raises(ValueError, match="softmax"):
        ssd(torch.log(probs))
    with pytest.raises(ValueError, match="sum to 1"):
        ssd(probs * 2)


def test_from_predictions_passes_every_option_through():
    probs, labels = classifier_like(200, 5)
    ssd = SSD.from_predictions(probs, labels, estimator="single", estimator_seed=3, T=0.2, eps=0.4,
                               entropy="nats", randomness="hash", hash_key=b"k", validate=False)
    assert (ssd.T, ssd.eps, ssd.entropy, ssd.randomness, ssd.validate) == (0.2, 0.4, "nats", "hash", False)
    assert bytes(ssd.hash_key.tolist()) == b"k"
    torch.testing.assert_close(ssd.q_table, estimate_q_table(probs, labels, 5, estimator="single", seed=3))


def test_single_sample_estimator_is_one_validation_prediction():
    probs, labels = classifier_like(300, 4, seed=2)
    table = estimate_q_table(probs, labels, 4, estimator="single", seed=7)
    for y in range(4):  # each row is exactly one of the class's own predictions (Algorithm 1)
        mine = probs[labels == y].double()
        assert ((mine / mine.sum(1, keepdim=True)) - table[y].double()).abs().sum(1).min() < 1e-6
    assert not torch.allclose(table, estimate_q_table(probs, labels, 4, estimator="single", seed=8))
    with pytest.raises(ValueError, match="estimator"):
        estimate_q_table(probs, labels, 4, estimator="median")


def test_defended_model_is_a_module_with_its_table_as_a_buffer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5)).train()
    probs, labels = classifier_like(100, 5)
    defended = SSD.from_predictions(probs, labels, T=0.1, seed=1).wrap(model)
    assert not model.training  # the wrapped classifier is put in eval mode, and stays there
    defended.train()
    assert not model.training
    state = defended.state_dict()
    assert "defense.q_table" in state and "defense.hash_key" in state
    moved = defended.to(torch.float64)
    assert moved.defense.q_table.dtype == torch.float64


def test_the_papers_estimator_names_are_accepted_as_given():
    """``paper.hyperparameters(...)["ssd_q_estimator"]`` can be passed to SSD as is (README's usage example)."""
    from ssdlib import paper
    probs = torch.softmax(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), -1)
    labels = torch.arange(4).repeat(10)
    for version in ("submitted", "iclr2025"):
        hp = paper.hyperparameters("IR-152/CelebA", version)
        ssd = SSD.from_predictions(probs, labels, estimator=hp["ssd_q_estimator"], T=hp["ssd_T"], eps=hp["ssd_eps"],
                                   entropy=hp["ssd_entropy"])
        assert ssd(probs).shape == probs.shape
    torch.testing.assert_close(estimate_q_table(probs, labels, 4, estimator="valid_mean"),
                               estimate_q_table(probs, labels, 4, estimator="mean"))


def test_one_version_number():
    import importlib.metadata
    import ssdlib
    assert importlib.metadata.version("ssdlib") == ssdlib.__version__
