"""The SSD defense: budget per row, temperature limits, hash determinism, q-table estimation, the wrapper."""
import math

import pytest
import torch
from torch import nn

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
    a = SSD.from_predictions(probs, labels, entropy="nats", eps=0.3).budget(probs)
    b = SSD.from_predictions(probs, labels, entropy="normalized", eps=0.3).budget(probs)
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
        SSD(torch.eye(3), **kwargs)


def test_class_count_mismatch_raises():
    with pytest.raises(ValueError, match="classes"):
        SSD(torch.eye(3))(torch.ones(2, 4) / 4)
    with pytest.raises(ValueError, match="square"):
        SSD(torch.ones(3, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    probs, labels = classifier_like(1000, 20)
    cpu = SSD.from_predictions(probs, labels, T=0.5, eps=0.5, seed=1)(probs)
    gpu = SSD.from_predictions(probs.cuda(), labels.cuda(), T=0.5, eps=0.5, seed=1)(probs.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
