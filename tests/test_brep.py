"""BREP-MI on tiny synthetic targets: labels only, boundary repulsion, the acceptance test, the 29-of-32 growth rule,
equal effort and query budgets."""
import pytest
import torch
from torch import nn

from ssdlib.attacks import BREP
from ssdlib.blackbox import BlackBox
from ssdlib.experiments.attack_runs import OracleFactory
from ssdlib.priors import Prior
from test_attacks import C, D, ToyGenerator, ToyTarget

SMALL = dict(start_batches=2, start_batch=64, iterations=6, top_k=2)


class LinearImage(nn.Module):
    """z -> a 3x8x8 image that holds z in its first D pixels (so a pixel classifier reads the latent exactly)."""

    def forward(self, z):
        x = torch.full((len(z), 3 * 64), 0.5)
        x[:, :D] = 0.5 + z / 10
        return x.view(len(z), 3, 8, 8)


class HalfSpaces(nn.Module):
    """Class 1 where the latent's first coordinate exceeds 0.3, class 0 elsewhere: the boundary is z_0 = 0.3."""

    num_classes = 2

    def forward(self, x):
        z0 = (x.flatten(1)[:, 0] - 0.5) * 10
        return torch.stack([torch.zeros_like(z0), 50 * (z0 - 0.3)], 1)


@pytest.fixture
def prior():
    return Prior(ToyGenerator(), D, name="toy", key="toy-prior")


@pytest.fixture
def linear_prior():
    return Prior(LinearImage(), D, name="linear", key="linear-prior", stats_samples=512)


def test_brep_moves_away_from_the_boundary_with_labels_only(linear_prior):
    attack = BREP(linear_prior, scale="smoke", start_batches=1, start_batch=64, iterations=40, top_k=3)
    oracle = BlackBox(HalfSpaces(), mode="hard")
    setup = attack.setup(oracle, seed=0)
    result = attack.attack_class(oracle, 1, setup, seed=0)
    start = setup["latents"][setup["first"][1]]
    assert (start[:, 0] > 0.3).all()  # the starts are in the class
    # the returned points lie deeper inside the class than the starts, and the radius grew
    assert float(result.latents[:, 0].mean()) > float(start[:, 0].mean()) + 0.3
    assert result.diagnostics["growths"] > 0 and result.diagnostics["never_grew"] < 1
    assert (result.latents.abs() <= 1.5 + 1e-6).all()  # clamped to the official +-1.5


class Relabel:
    """A post-processing 'defense' that answers by batch position: ``rule(n) -> labels [n]``."""

    def __init__(self, rule):
        self.rule = rule

    def __call__(self, probs, inputs=None):
        labels = self.rule(len(probs))
        return nn.functional.one_hot(labels, probs.shape[1]).float()


def _first_in_class(k, m, inside, target=1):
    """Labels of a batch: the starts' search and the candidate steps (batches of <= k) in class; sphere batches
    (k * m rows) with ``inside`` of each ``m`` points in class."""
    def rule(n):
        if n % m == 0 and n >= m:
            row = torch.tensor([target] * inside + [0] * (m - inside))
            return row.repeat(n // m)
        return torch.full((n,), target)
    return rule


@pytest.mark.parametrize("inside, grows", [(29, True), (28, False), (32, True)])
def test_the_radius_grows_when_29_of_32_sphere_points_are_in_class(prior, inside, grows):
    attack = BREP(prior, scale="smoke", start_batches=1, start_batch=10, iterations=4, top_k=2)
    oracle = BlackBox(ToyTarget(), Relabel(_first_in_class(2, 32, inside)), mode="hard")
    result = attack.run(oracle, [1])[0]
    expected = 2.0 * 1.3 ** 4 if grows else 2.0
    assert result.diagnostics["final_radius"] == pytest.approx(expected)
    assert result.diagnostics["growths"] == (4 if grows else 0)
    if not grows:  # never grew: the start point is returned, reported as such
        assert result.diagnostics["never_grew"] == 1.0


def test_a_step_that_leaves_the_class_is_rejected(prior):
    def rule(n):  # every sphere point in class (so the radius grows), every candidate step outside
        return torch.full((n,), 1) if n % 32 == 0 or n == 10 else torch.full((n,), 0)
    attack = BREP(prior, scale="smoke", start_batches=1, start_batch=10, iterations=5, top_k=2)
    oracle = BlackBox(ToyTarget(), Relabel(rule), mode="hard")
    setup = attack.setup(oracle, seed=0)
    result = attack.attack_class(oracle, 1, setup, seed=0)
    start = setup["latents"][setup["first"][1]]
    assert result.diagnostics["rejected"] == 5  # every step rejected ...
    assert torch.equal(result.latents, start)  # ... so the chains never moved from their starts
    assert result.generations == 5  # a rejected step still costs its queries


def test_queries_are_planned_exactly_and_a_budget_stops_the_chains(prior):
    attack = BREP(prior, scale="smoke", **SMALL)
    plan = attack.planned_queries(C)
    oracle = BlackBox(ToyTarget(), mode="hard", budget=plan["setup"] + plan["per_class"])
    setup = attack.setup(oracle)
    result = attack.attack_class(oracle, 2, setup)
    assert result.stopped == "generations" and result.queries == plan["per_class"]
    assert oracle.queries == plan["setup"] + plan["per_class"]
    small = BlackBox(ToyTarget(), mode="hard", budget=plan["setup"] + plan["per_class"] // 2)
    result = attack.attack_class(small, 2, attack.setup(small))
    assert result.stopped == "budget" and small.queries <= small.budget and len(result.images) == 2


def test_equal_effort_against_a_defended_and_an_undefended_oracle(prior):
    from ssdlib import SSD, estimate_q_table
    with torch.no_grad():
        probs = torch.softmax(ToyTarget()(prior.decode(prior.sample(200))), -1)
    q = estimate_q_table(probs, probs.argmax(-1), C, missing="uniform")
    plain = OracleFactory(ToyTarget(), mode="hard")
    defended = OracleFactory(ToyTarget(), lambda s: SSD(q, T=0.3, eps=1.0, seed=s), mode="hard")
    attack = BREP(prior, scale="smoke", **SMALL)
    for target in (0, 3):
        out = []
        for factory in (plain, defended):
            setup = attack.setup(factory(0, "setup"))
            if setup["first"][target, 0] < 0:
                continue
            out.append(attack.attack_class(factory(0, target), target, setup))
        assert len({(r.queries, r.generations, r.stopped) for r in out}) == 1


def test_a_class_never_found_returns_prior_samples_and_says_so(prior):
    attack = BREP(prior, scale="smoke", **SMALL)
    oracle = BlackBox(ToyTarget(), Relabel(lambda n: torch.zeros(n, dtype=torch.long)), mode="hard")
    setup = attack.setup(oracle)
    assert (setup["first"][1:] < 0).all() and (setup["first"][0] >= 0).all()
    result = attack.attack_class(oracle, 4, setup)
    assert result.stopped == "no start" and result.queries == 0 and len(result.images) == SMALL["top_k"]


def test_the_start_of_a_class_is_the_first_latent_labelled_as_it(prior):
    attack = BREP(prior, scale="smoke", **SMALL)
    setup = attack.setup(BlackBox(ToyTarget(), mode="hard"), seed=1)
    with torch.no_grad():
        labels = ToyTarget()(prior.decode(setup["latents"])).argmax(-1)
    assert torch.equal(labels, setup["labels"])
    for c in range(C):
        hits = (labels == c).nonzero().flatten()[:SMALL["top_k"]]
        assert torch.equal(setup["first"][c][:len(hits)], hits)
    assert (setup["latents"].abs() <= 1.5).all()


def test_label_only_attack_refuses_a_soft_oracle_and_a_module(prior):
    attack = BREP(prior, scale="smoke", **SMALL)
    with pytest.raises(ValueError, match="label-only attack"):
        attack.run(BlackBox(ToyTarget()), [0])
    with pytest.raises(TypeError, match="BlackBox"):
        attack.run(ToyTarget(), [0])


def test_runs_are_reproducible(prior):
    a = BREP(prior, scale="smoke", **SMALL).run(BlackBox(ToyTarget(), mode="hard"), [0, 2], seed=4)
    b = BREP(prior, scale="smoke", **SMALL).run(BlackBox(ToyTarget(), mode="hard"), [2], seed=4)
    assert torch.equal(a[1].latents, b[0].latents)


@pytest.mark.parametrize("bad", [dict(iterations=0), dict(growth_share=1.0), dict(patience=0), dict(radius=-1.0)])
def test_bad_parameters_are_named(prior, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        BREP(prior, scale="smoke", **bad)


def test_the_official_patience_rule_is_an_option(prior):
    # every sphere point in class and every step accepted: the radius grows every iteration, patience never runs out
    attack = BREP(prior, scale="smoke", start_batches=1, start_batch=10, iterations=5, top_k=2, patience=2)
    constant = BlackBox(ToyTarget(), Relabel(lambda n: torch.ones(n, dtype=torch.long)), mode="hard")
    assert attack.run(constant, [1])[0].generations == 5
    # no sphere point in class: no growth, every step accepted, the chains stop after `patience` iterations
    result = attack.run(BlackBox(ToyTarget(), Relabel(_first_in_class(2, 32, 0)), mode="hard"), [1])[0]
    assert result.generations == 2 and result.stopped == "patience"
