"""Attack metrics against hand-computed values on hand-made features (no dlib: a fake embedder)."""
import math

import pytest
import torch

from ssdlib.metrics.attack import (attack_metrics, metrics_table, nearest_class_distance, prior_only_metrics,
                                   results_metrics, target_accuracy, topk_accuracy)
from ssdlib.attacks import AttackResult
from ssdlib.blackbox import BlackBox
from ssdlib.data import FaceSet
from ssdlib.models import EvaluationClassifier


class FakeEmbedder:
    """'Embedding' = the first 128 pixel values of a 3x8x8 image."""

    def embed(self, images):
        return images.float().flatten(1)[:, :128].clone()

    def embed_faceset(self, faceset):
        return self.embed(faceset.float_images())


def flat(value, n=1):
    return torch.full((n, 3, 8, 8), value)


@pytest.fixture
def private():
    images = torch.stack([torch.full((3, 8, 8), v, dtype=torch.uint8) for v in (0, 255, 51)])
    return FaceSet(images, torch.tensor([0, 0, 1]), ["a", "b"], "private/train")


@pytest.fixture
def evaluator():
    ev = EvaluationClassifier(["a", "b"], embedder=FakeEmbedder())
    with torch.no_grad():
        ev.scale.fill_(2.0)
        ev.head.weight.zero_()
        ev.head.weight[1] = 1.0
        ev.head.bias.copy_(torch.tensor([0.0, -0.075 * 128]))  # class 1 iff mean embedding > 0.15
    return ev.eval()


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    acc = topk_accuracy(logits, [0, 2, 0], ks=(1, 2, 5))
    assert acc == {"acc@1": pytest.approx(1 / 3), "acc@2": pytest.approx(2 / 3), "acc@5": 1.0}
    with pytest.raises(ValueError, match="labels"):
        topk_accuracy(logits, [0, 1])


def test_nearest_class_distance_by_hand_not_squared():
    feats = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    ref = torch.tensor([[3.0, 4.0], [6.0, 8.0], [10.0, 1.0]])
    d = nearest_class_distance(feats, [0, 0], ref, [0, 0, 1])
    assert torch.allclose(d, torch.tensor([5.0, math.hypot(7.0, 4.0)]))  # class-1 reference ignored
    with pytest.raises(ValueError, match="no reference"):
        nearest_class_distance(feats, [0, 2], ref, [0, 0, 1])


def test_attack_metrics_by_hand(private, evaluator):
    images = torch.cat([flat(0.1), flat(0.2), flat(0.9)])  # attacked classes 0, 0, 1
    out = attack_metrics(images, [0, 0, 1], evaluator, private, per_image=True,
                         target=lambda x: torch.tensor([0, 1, 1]))
    # evaluator: 0.1 -> class 0 (hit), 0.2 -> class 1 (miss), 0.9 -> class 1 (hit)
    assert out["acc@1"] == pytest.approx(2 / 3) and out["acc@5"] == 1.0
    root = math.sqrt(128)
    expected_face = torch.tensor([0.1 * root, 0.2 * root, abs(0.9 - 51 / 255) * root])
    assert torch.allclose(out["delta_face_all"], expected_face, atol=1e-4)
    assert out["delta_face"] == pytest.approx(float(expected_face.mean()), rel=1e-5)
    # linear head: penultimate features = (e - mean) / scale, so delta_eval = delta_face / scale exactly
    assert out["delta_eval"] == pytest.approx(out["delta_face"] / 2.0, rel=1e-5)
    assert out["target_acc@1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same classes"):
        attack_metrics(images, [0, 0, 1], evaluator, FaceSet(private.images, private.labels, ["b", "a"], "x"))


def test_target_accuracy_through_an_oracle():
    class Fixed(torch.nn.Module):
        num_classes = 2

        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1) * 10

    images = torch.cat([flat(0.9), flat(0.1)])
    for mode in ("soft", "hard"):
        oracle = BlackBox(Fixed(), mode=mode)
        assert target_accuracy(oracle, images, [0, 0]) == 0.5 and oracle.queries == 2


def test_prior_only_and_results_metrics(private, evaluator):
    class Flat(torch.nn.Module):
        def forward(self, z):
            return torch.sigmoid(z[:, :1, None, None]).expand(-1, 3, 8, 8)

    from ssdlib.priors import Prior
    prior = Prior(Flat(), 2, key="flat")
    out = prior_only_metrics(prior, [0, 1], 3, evaluator, private)
    assert out["n"] == 6 and 0 <= out["acc@1"] <= 1
    r = [AttackResult("toy", c, flat(0.1 if c == 0 else 0.9, 2), torch.zeros(2, 2), torch.ones(2), 100 * (c + 1),
                      1.5, 0.2, 0.9, setup_queries=50, setup_seconds=3.0) for c in (0, 1)]
    res = results_metrics(r, evaluator, private)
    assert res["acc@1"] == 1.0 and res["queries_per_class"] == 150 and res["setup_queries"] == 50
    assert res["seconds_per_class"] == 1.5 and res["classes"] == 2


def test_metrics_table_adds_ratios_to_the_undefended_row():
    rows = {"No Def.": {"acc@1": 0.5, "delta_eval": 2.0, "delta_face": 0.4},
            "SSD": {"acc@1": 0.1, "delta_eval": 3.0, "delta_face": 0.6}}
    table = metrics_table(rows)
    assert list(table.index) == ["No Def.", "SSD"]
    assert table.loc["SSD", "delta_eval_ratio"] == pytest.approx(1.5)
    assert table.loc["SSD", "delta_face_ratio"] == pytest.approx(1.5)
    assert table.loc["No Def.", "delta_face_ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference row"):
        metrics_table(rows, reference="none")
