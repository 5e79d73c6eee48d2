"""Utility metrics against hand computations."""
import pytest
import torch

from ssdlib.metrics import utility_metrics


def test_utility_metrics_by_hand():
    base = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    moved = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.6, 0.3]])
    m = utility_metrics(base, moved, torch.tensor([0, 2]))
    assert m["test_acc"] == 50.0
    assert m["avg_l1"] == pytest.approx(0.2) and m["max_l1"] == pytest.approx(0.4)


def test_cmi_by_hand_with_two_samples_in_a_class():
    """Two outputs of class 0, [0.8, 0.2] and [0.4, 0.6], centroid [0.6, 0.4]: CMI is the mean of their KL
    divergences to it; conditioning on the predictions (0 and 1) puts each alone in its class instead."""
    import math
    probs = torch.tensor([[0.8, 0.2], [0.4, 0.6]])
    m = utility_metrics(probs, probs, torch.tensor([0, 0]))
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))
    expected = 0.5 * (kl([0.8, 0.2], [0.6, 0.4]) + kl([0.4, 0.6], [0.6, 0.4]))
    assert m["cmi"] == pytest.approx(expected, rel=1e-6) and expected > 0.08
    assert m["cmi_pred"] == pytest.approx(0.0, abs=1e-12) and m["test_acc"] == 50.0


def test_utility_metrics_shape_errors():
    with pytest.raises(ValueError, match="expected"):
        utility_metrics(torch.ones(2, 3) / 3, torch.ones(2, 4) / 4, torch.zeros(2, dtype=torch.long))
