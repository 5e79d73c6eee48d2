"""Black-box attacks on a tiny synthetic target: they improve the target-class objective, respect query budgets,
reach the target only through the oracle, and cached runs are reused."""
import pytest
import torch
from torch import nn

from ssdlib.experiments.attack_runs import attack_run, attack_runs
from ssdlib.attacks import C2F, Mirror, build_attack
from ssdlib.attacks.c2f import inversion_input
from ssdlib.blackbox import BlackBox
from ssdlib.priors import Prior

D, C = 8, 5


class ToyGenerator(nn.Module):
    """A fixed random map from R^8 to 3x8x8 images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, 3 * 8 * 8)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            self.fc.weight.copy_(torch.randn(3 * 64, D, generator=gen))
            self.fc.bias.zero_()

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(len(z), 3, 8, 8)


class ToyTarget(nn.Module):
    """A fixed linear classifier on pixels, 5 classes."""

    num_classes = C

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 64, C)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            self.fc.weight.copy_(torch.randn(C, 3 * 64, generator=gen) * 0.3)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture
def prior():
    return Prior(ToyGenerator(), D, name="toy", key="toy-prior")


MIRROR = dict(pool=64, population=8, generations=12, top_k=3, min_score=1.0)
C2F_PARAMS = dict(inversion_samples=256, inversion_epochs=5, inversion_hidden=32, stage1_batch=8, stage1_steps=5,
                  stage1_keep=4, population=8, generations=30, top_k=3)


def planned_total(attack, n_classes=1):
    plan = attack.planned_queries(C)
    return plan["setup"] + n_classes * plan["per_class"]


@pytest.mark.parametrize("cls, params", [(Mirror, MIRROR), (C2F, C2F_PARAMS)])
def test_attack_raises_the_target_objective_within_the_query_budget(prior, cls, params, one_thread):
    attack = cls(prior, scale="smoke", **params)
    budget = planned_total(attack)
    oracle = BlackBox(ToyTarget(), budget=budget)  # a query past the plan would raise QueryBudgetExceeded
    setup = attack.setup(oracle, seed=0)
    result = attack.attack_class(oracle, 3, setup, seed=0)
    assert result.stopped == "generations"
    assert result.final_score > result.initial_score + 1e-3
    assert result.history[-1]["best"] >= result.history[0]["best"]
    assert setup["queries"] + result.queries == oracle.queries <= budget
    assert result.queries == attack.planned_queries(C)["per_class"]
    assert result.images.shape == (3, 3, 8, 8) and result.latents.shape == (3, D)
    assert torch.all(result.scores[:-1] >= result.scores[1:])  # best first
    with torch.no_grad():
        true = torch.softmax(ToyTarget()(prior.decode(result.latents)), -1)[:, 3]
    assert torch.allclose(result.scores, true, atol=1e-5)  # reported scores are the oracle's answers


@pytest.mark.parametrize("cls, params", [(Mirror, MIRROR), (C2F, C2F_PARAMS)])
def test_attack_beats_random_prior_samples(prior, cls, params, one_thread):
    attack = cls(prior, scale="smoke", **params)
    result = attack.run(BlackBox(ToyTarget()), [2], seed=1)[0]
    with torch.no_grad():
        random = torch.softmax(ToyTarget()(prior.decode(prior.sample(64))), -1)[:, 2]
    assert float(result.scores.mean()) > float(random.mean()) + 0.1


@pytest.mark.parametrize("cls, params", [(Mirror, MIRROR), (C2F, C2F_PARAMS)])
def test_a_small_budget_stops_the_search_and_is_never_exceeded(prior, cls, params):
    attack = cls(prior, scale="smoke", **params)
    budget = attack.planned_queries(C)["setup"] + attack.planned_queries(C)["per_class"] // 3
    oracle = BlackBox(ToyTarget(), budget=budget)
    result = attack.run(oracle, [1])[0]
    assert result.stopped == "budget" and oracle.queries <= budget
    assert len(result.images) >= 1


@pytest.mark.parametrize("cls", [Mirror, C2F])
def test_attacks_refuse_a_raw_module(prior, cls):
    attack = cls(prior, scale="smoke")
    with pytest.raises(TypeError, match="BlackBox"):
        attack.run(ToyTarget(), [0])
    with pytest.raises(TypeError, match="BlackBox"):
        attack.setup(lambda x: x)


@pytest.mark.parametrize("cls", [Mirror, C2F])
def test_soft_label_attacks_refuse_a_hard_label_oracle(prior, cls):
    hard = BlackBox(ToyTarget(), mode="hard")
    labels = hard(prior.decode(prior.sample(4)))
    assert labels.dtype == torch.int64 and labels.shape == (4,)  # hard mode: labels only
    with pytest.raises(ValueError, match="soft-label attack"):
        cls(prior, scale="smoke").run(hard, [0])


def test_runs_are_reproducible_and_classes_independent(prior):
    a = Mirror(prior, scale="smoke", **MIRROR).run(BlackBox(ToyTarget()), [0, 4], seed=3)
    b = Mirror(prior, scale="smoke", **MIRROR).run(BlackBox(ToyTarget()), [4], seed=3)
    assert torch.equal(a[1].latents, b[0].latents)


def test_mirror_keeps_latents_in_the_prior_range(prior):
    result = Mirror(prior, scale="smoke", **{**MIRROR, "generations": 4}).run(BlackBox(ToyTarget()), [0])[0]
    lo, hi = prior.bounds(1.0)
    children = result.latents[(result.latents >= lo).all(1) & (result.latents <= hi).all(1)]
    assert len(children) >= len(result.latents) - 1  # all but possibly the initial elite (an unclipped pool sample)


def test_c2f_inversion_network_carries_class_information(prior, one_thread):
    attack = C2F(prior, scale="smoke", **{**C2F_PARAMS, "inversion_samples": 1024, "inversion_epochs": 50,
                                                 "inversion_lr": 1e-2})
    setup = attack.setup(BlackBox(ToyTarget()))
    assert setup["history"][-1]["valid_mse"] < 0.9 * setup["valid_mse_of_mean"]


def test_c2f_with_a_differentiable_representation(prior):
    rep = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16))
    attack = C2F(prior, scale="smoke", representation=rep, **C2F_PARAMS)
    result = attack.run(BlackBox(ToyTarget()), [1])[0]
    assert result.final_score >= result.initial_score
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in rep.parameters())


def test_inversion_input_keeps_the_top_k_log_probabilities():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    x = inversion_input(probs, 2)
    assert x[0, 2] == 0 and x[0, 3] == 0 and x[0, 0] > x[0, 1] > 0
    assert torch.allclose(x.norm(dim=1), torch.ones(1))


def test_bad_parameters_are_named(prior):
    with pytest.raises(ValueError, match="unknown mirror parameters"):
        Mirror(prior, scale="smoke", populaton=3)
    with pytest.raises(ValueError, match="scale"):
        Mirror(prior, scale="laptop")
    with pytest.raises(TypeError, match="Prior"):
        C2F(ToyGenerator(), scale="smoke")
    with pytest.raises(ValueError, match="unknown attack"):
        build_attack("brep", prior)


def test_cached_run_is_reused_and_a_changed_parameter_reruns(prior, tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    attack = Mirror(prior, scale="smoke", **MIRROR)
    ids = dict(target_key="toy-target", setting="toy", defense="none")
    oracle = BlackBox(ToyTarget())
    first, info = attack_run(attack, oracle, 2, **ids)
    used = oracle.queries
    assert not info.cached and used == attack.planned_queries(C)["setup"] + first.queries
    again, info = attack_run(Mirror(prior, scale="smoke", **MIRROR), oracle, 2, **ids)
    assert info.cached and oracle.queries == used and torch.equal(again.latents, first.latents)
    # a new class reuses the cached setup (no pool queries), a changed parameter reruns the class
    other, info = attack_run(attack, oracle, 3, **ids)
    assert not info.cached and oracle.queries == used + other.queries
    changed, info = attack_run(Mirror(prior, scale="smoke", **{**MIRROR, "mutation_prob": 0.3}), oracle, 2, **ids)
    assert not info.cached
    fresh = BlackBox(ToyTarget())
    rows = attack_runs(attack, fresh, [2, 3], progress=False, **ids)
    assert torch.equal(rows[0].latents, first.latents) and torch.equal(rows[1].latents, other.latents)
    assert fresh.queries == 0  # cached runs touch neither the setup nor the oracle
    rows = attack_runs(attack, lambda: BlackBox(ToyTarget()), [2, 4], progress=False, **{**ids, "defense": "x"})
    assert rows[1].setup_queries == attack.planned_queries(C)["setup"]  # a new identity computes a new setup


def test_attacks_run_through_a_defended_oracle_reproducibly(prior, tmp_path, monkeypatch):
    from ssdlib import SSD, estimate_q_table
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    with torch.no_grad():
        probs = torch.softmax(ToyTarget()(prior.decode(prior.sample(200))), -1)
    q = estimate_q_table(probs, probs.argmax(-1), C, missing="uniform")

    def defended():  # a fresh defense per run, so its sampling generator starts from the same state
        return BlackBox(ToyTarget(), SSD(q, T=1.0, eps=0.5, seed=0))

    ids = dict(target_key="toy-target", setting="toy", defense="ssd", defense_params={"T": 1.0, "eps": 0.5})
    params = {**MIRROR, "generations": 3}
    a = attack_runs(Mirror(prior, scale="smoke", **params), defended, [1], cache=False, progress=False, **ids)[0]
    b = attack_runs(Mirror(prior, scale="smoke", **params), defended, [1], cache=False, progress=False, **ids)[0]
    assert torch.equal(a.latents, b.latents) and a.queries == b.queries > 0
