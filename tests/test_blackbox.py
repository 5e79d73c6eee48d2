"""The black-box oracle: exact query counting, no gradients, labels only in hard mode, budgets, batching."""
import pickle

import pytest
import torch
from torch import nn

from ssdlib.blackbox import BlackBox, QueryBudgetExceeded


class Tiny(nn.Module):
    """A fixed linear classifier on mean colours, with batch norm (so train/eval mode matters)."""

    def __init__(self, classes=5):
        super().__init__()
        self.num_classes = classes
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, classes)
        self.seen_training = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return self.fc(self.bn(x.mean((2, 3))))


def images(n, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_soft_answers_are_probabilities_of_the_eval_model():
    model = Tiny().train()
    oracle = BlackBox(model)
    x = images(7)
    p = oracle(x)
    assert p.shape == (7, 5) and p.dtype == torch.float32
    assert torch.allclose(p.sum(-1), torch.ones(7), atol=1e-6)
    assert model.seen_training == [False], "the oracle must run the model in eval mode"
    with torch.no_grad():
        assert torch.allclose(p, torch.softmax(model.eval()(x), -1))


def test_counts_every_image_exactly_across_batches():
    oracle = BlackBox(Tiny(), batch_size=4)
    for n in (1, 4, 9, 0, 3):
        oracle(images(n))
    assert oracle.queries == 17 and oracle.calls == 5


def test_no_gradient_reaches_the_caller():
    model = Tiny()
    oracle = BlackBox(model)
    x = images(3).requires_grad_(True)
    p = oracle(x)
    assert not p.requires_grad and p.grad_fn is None
    with pytest.raises(RuntimeError):
        p.sum().backward()
    assert all(q.grad is None for q in model.parameters())
    assert not hasattr(oracle, "parameters") and not hasattr(oracle, "model")
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(oracle)


def test_hard_mode_returns_labels_only():
    model = Tiny()
    soft, hard = BlackBox(model), BlackBox(model, mode="hard")
    x = images(20, seed=1)
    labels = hard(x)
    assert labels.dtype == torch.int64 and labels.shape == (20,)
    assert torch.equal(labels, soft(x).argmax(-1))


def test_budget_stops_with_a_clear_message_and_answers_nothing_past_it():
    oracle = BlackBox(Tiny(), budget=10)
    oracle(images(6))
    with pytest.raises(QueryBudgetExceeded, match="budget of 10 images exceeded: 6 used, 5 more asked"):
        oracle(images(5))
    assert oracle.queries == 6 and oracle.remaining == 4
    oracle(images(4))
    assert oracle.remaining == 0


def test_defense_post_processes_with_the_inputs():
    seen = {}

    def defense(probs, inputs):
        seen["inputs"] = inputs.shape
        return torch.full_like(probs, 1.0 / probs.shape[-1])

    oracle = BlackBox(Tiny(), defense)
    p = oracle(images(4))
    assert seen["inputs"] == (4, 3, 8, 8) and torch.allclose(p, torch.full((4, 5), 0.2))


@pytest.mark.parametrize("bad, message", [(torch.zeros(2, 1, 8, 8), "images"), (torch.zeros(2, 3, 8, 8).long(), "float"),
                                          (torch.full((1, 3, 8, 8), float("nan")), "NaN")])
def test_bad_queries_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        BlackBox(Tiny())(bad)


def test_bad_construction():
    with pytest.raises(TypeError, match="nn.Module"):
        BlackBox(lambda x: x)
    with pytest.raises(ValueError, match="mode"):
        BlackBox(Tiny(), mode="logits")
    with pytest.raises(ValueError, match="budget"):
        BlackBox(Tiny(), budget=-1)


def test_eval_mode_on_every_query_even_after_train_elsewhere():
    model = Tiny()
    oracle = BlackBox(model)
    before = model.bn.running_mean.clone()
    model.train()  # e.g. someone fine-tunes the model after the oracle was built
    a = oracle(images(16, seed=1))
    assert torch.equal(model.bn.running_mean, before)  # no BatchNorm statistics moved
    assert model.seen_training[-1] is False and model.training  # answered in eval mode, the caller's mode restored
    model.eval()
    assert torch.allclose(a, oracle(images(16, seed=1)))


def test_hard_answers_under_ssd_are_the_argmax_of_the_defended_probabilities():
    from ssdlib import SSD
    model = Tiny()
    x = images(300, seed=2)
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x), -1)
    q = 0.8 * torch.eye(5) + 0.04  # class means that each peak at their own class
    soft = BlackBox(model, SSD(q, T=0.3, eps=1.0, seed=7), mode="soft")(x)
    hard = BlackBox(model, SSD(q, T=0.3, eps=1.0, seed=7), mode="hard")(x)
    assert hard.dtype == torch.int64 and torch.equal(hard, soft.argmax(-1))
    assert not torch.equal(hard, probs.argmax(-1))  # SSD does change some labels here


FORBIDDEN = ("training", "defenses", "data", "experiments", "models.classifiers")


def oracle_violations(source: str) -> list[str]:
    """What in ``source`` (a module of ssdlib.attacks) breaks the black-box discipline."""
    import ast
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (node.attr.startswith("_BlackBox") or node.attr in ("__model",
                                                                                                   "__defense")):
            found.append(f"attribute {node.attr}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "_BlackBox__" in node.value:
            found.append("private attribute by name")
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level == 0 and name.startswith("ssdlib."):
                name, level = name.removeprefix("ssdlib."), 2
            else:
                level = node.level
            if level >= 2 and any(name == m or name.startswith(m + ".") for m in FORBIDDEN):
                found.append(f"import {name}")
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if any(a.name.startswith(f"ssdlib.{m}") for m in FORBIDDEN)]
    return found


def test_the_discipline_check_finds_violations():
    bad = ("from ..training import fit\nimport ssdlib.defenses.ssd\nfrom ssdlib.data import public_set\n"
           "def f(o):\n    o._BlackBox__queries = 0\n    return getattr(o, '_BlackBox__model')\n")
    assert len(oracle_violations(bad)) == 5
    assert oracle_violations("from ..blackbox import BlackBox\nfrom ..priors import Prior\n") == []


def test_attacks_never_reach_into_an_oracle():
    """Static check of the black-box discipline: no module of ssdlib.attacks touches a BlackBox's private
    attributes or imports the training code, the defenses, the private data or the experiments."""
    from pathlib import Path
    import ssdlib.attacks
    files = sorted(Path(ssdlib.attacks.__file__).parent.rglob("*.py"))
    assert len(files) >= 4
    for path in files:
        assert oracle_violations(path.read_text()) == [], path.name
