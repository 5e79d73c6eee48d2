"""Information measures: closed forms, Proposition 1 on random discrete distributions, the empirical CMI."""
import numpy as np
import pytest
import torch

from ssdlib import cmi, conditional_mutual_information, entropy, kl_divergence, mutual_information


def random_markov_joint(rng, ny, nx, nyhat):
    """p(y, x, yhat) = p(y) p(x|y) p(yhat|x): the chain Y -> X -> Y_hat of a classifier."""
    p_y = rng.dirichlet(np.ones(ny))
    p_x_y = rng.dirichlet(np.ones(nx) * 0.5, size=ny)
    p_yhat_x = rng.dirichlet(np.ones(nyhat) * 0.5, size=nx)
    return p_y[:, None, None] * p_x_y[:, :, None] * p_yhat_x[None, :, :]


def test_entropy_closed_forms():
    uniform = torch.full((2, 8), 1 / 8)
    assert torch.allclose(entropy(uniform), torch.full((2,), np.log(8)))
    assert torch.allclose(entropy(uniform, normalized=True), torch.ones(2))
    onehot = torch.eye(4)
    assert torch.all(entropy(onehot) == 0) and torch.isfinite(entropy(onehot, normalized=True)).all()


def test_kl_closed_form_and_infinity():
    p, q = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.25, 0.5])
    assert kl_divergence(p, q).item() == pytest.approx(np.log(2))
    assert torch.isinf(kl_divergence(q, p))


def test_mutual_information_independent_and_identical():
    a, b = np.array([0.2, 0.8]), np.array([0.1, 0.3, 0.6])
    assert mutual_information(np.outer(a, b)) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(np.diag(b)) == pytest.approx(-(b * np.log(b)).sum())


@pytest.mark.parametrize("seed", range(20))
def test_proposition1_cmi_identity(seed):
    """I(X; Y_hat | Y) = I(X; Y_hat) - I(Y; Y_hat) when Y -> X -> Y_hat (Proposition 1)."""
    rng = np.random.default_rng(seed)
    joint = random_markov_joint(rng, ny=rng.integers(2, 6), nx=rng.integers(2, 12), nyhat=rng.integers(2, 6))
    lhs = conditional_mutual_information(joint)
    rhs = mutual_information(joint.sum(0)) - mutual_information(joint.sum(1))
    assert lhs == pytest.approx(rhs, abs=1e-10)
    assert lhs >= 0


def test_proposition1_needs_the_markov_chain():
    """Without Y -> X -> Y_hat the identity fails in general: the test above is not vacuous."""
    rng = np.random.default_rng(0)
    joint = rng.dirichlet(np.ones(3 * 4 * 3)).reshape(3, 4, 3)
    lhs = conditional_mutual_information(joint)
    rhs = mutual_information(joint.sum(0)) - mutual_information(joint.sum(1))
    assert abs(lhs - rhs) > 1e-3


def test_empirical_cmi_matches_definition_and_is_zero_for_constant_outputs():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(60, 5, generator=g, dtype=torch.float64) * 3, -1)
    labels = torch.arange(60) % 5
    expected = np.mean([
        kl_divergence(probs[i], probs[labels == labels[i]].mean(0)).item() for i in range(60)
    ])
    assert cmi(probs, labels) == pytest.approx(expected, rel=1e-9)
    centroids = torch.softmax(torch.randn(5, 5, generator=g), -1)
    assert cmi(centroids[labels], labels) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("bad", [np.ones((2, 2)), -np.eye(2) / 2 + 0.5 * np.ones((2, 2)) - 0.5, np.ones(4) / 4])
def test_bad_joint_tables_raise(bad):
    with pytest.raises(ValueError):
        mutual_information(bad)


def test_cmi_bad_shapes_raise():
    with pytest.raises(ValueError, match="labels"):
        cmi(torch.ones(3, 2) / 2, torch.zeros(4, dtype=torch.long))
