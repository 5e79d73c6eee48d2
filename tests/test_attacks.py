"""Black-box attacks on a tiny synthetic target: they improve the target-class objective, respect query budgets,
reach the target only through the oracle, and cached runs are reused."""
import pytest
import torch
from torch import nn

from ssdlib.experiments.attack_runs import OracleFactory, attack_run, attack_runs, run_config, setup_config
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


MIRROR = dict(pool=64, population=8, generations=12, top_k=3)
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
    if cls is Mirror:  # better than random search with its per-class queries (the top_k of that many samples)
        with torch.no_grad():
            z = prior.sample(result.queries, torch.Generator().manual_seed(123))
            random_scores = torch.softmax(ToyTarget()(prior.decode(z)), -1)[:, 3]
        # (the toy target is easy, so compare the probability mass left on the other classes)
        assert (1 - result.scores).mean() < 0.8 * (1 - random_scores.topk(len(result.scores)).values).mean()
    else:  # DE moves its population: the mass left on other classes falls by a third from stage I's population
        assert 1 - result.history[-1]["mean"] < (2 / 3) * (1 - result.history[0]["mean"])
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
    """Stage I descends through the user's representation toward the inverted goal, and leaves no gradient in the
    representation or the prior's generator (only the latents are optimised)."""
    rep = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16))
    attack = C2F(prior, scale="smoke", representation=rep, **{**C2F_PARAMS, "stage1_steps": 20, "stage1_lr": 0.05})
    setup = attack.setup(BlackBox(ToyTarget()))
    net = attack.inversion_net(setup)
    gen = torch.Generator().manual_seed(0)
    z0, z = attack._stage1(net, 1, C, gen)
    vec = torch.randn(len(z0), C, generator=torch.Generator().manual_seed(0)).abs()
    with torch.no_grad():
        goal = net(torch.nn.functional.normalize(torch.cat([vec[:, :1], vec[:, 1:]], 1), dim=1))
        before = ((rep(prior.decode(z0)) - goal) ** 2).mean()
        after = ((rep(prior.decode(z)) - goal) ** 2).mean()
    assert after < before
    result = attack.run(BlackBox(ToyTarget()), [1])[0]
    assert result.diagnostics["stage1_before"] >= 0 and result.queries == attack.planned_queries(C)["per_class"]
    assert all(p.grad is None for p in rep.parameters())
    assert all(p.grad is None for p in prior.generator.parameters())


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
        build_attack("no-such-attack", prior)


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
    rows = attack_runs(attack, OracleFactory(ToyTarget()), [2, 4], progress=False, **{**ids, "defense": "x"})
    assert rows[1].setup_queries == attack.planned_queries(C)["setup"]  # a new identity computes a new setup


def toy_ssd_factory(prior, T=1.0, eps=0.5, seed=0, mode="soft"):
    from ssdlib import SSD, estimate_q_table
    with torch.no_grad():
        probs = torch.softmax(ToyTarget()(prior.decode(prior.sample(200))), -1)
    q = estimate_q_table(probs, probs.argmax(-1), C, missing="uniform")
    return OracleFactory(ToyTarget(), lambda s: SSD(q, T=T, eps=eps, seed=s), mode=mode, seed=seed)


def test_a_defended_oracle_is_seeded_per_run_and_class(prior, tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    factory = toy_ssd_factory(prior)
    seeds = {(r, c): factory.defense_seed(r, c) for r in (0, 1) for c in (1, 2)}
    assert len(set(seeds.values())) == 4  # every (run seed, class) draws its own defense randomness
    assert OracleFactory(ToyTarget()).defense_seed(0, 1) is None  # no randomised defense, nothing to seed
    images = prior.decode(prior.sample(64))
    assert torch.equal(factory(0, 1)(images), factory(0, 1)(images))  # same run and class: same draws
    assert not torch.equal(factory(0, 1)(images), factory(1, 1)(images))  # another attack seed: other draws
    ids = dict(target_key="toy-target", prior_key=None, setting="toy", defense="ssd",
               defense_params={"T": 1.0, "eps": 0.5})
    params = {**MIRROR, "generations": 3}
    a = attack_runs(Mirror(prior, scale="smoke", **params), factory, [1], cache=False, progress=False, **ids)[0]
    b = attack_runs(Mirror(prior, scale="smoke", **params), factory, [1], cache=False, progress=False, **ids)[0]
    c = attack_runs(Mirror(prior, scale="smoke", **params), factory, [1], seed=1, cache=False, progress=False,
                    **ids)[0]
    assert torch.equal(a.latents, b.latents) and a.queries == b.queries > 0
    assert not torch.equal(a.latents, c.latents)
    # the defense's seed is part of every run's and setup's cache key
    attack = Mirror(prior, scale="smoke", **params)
    keys = {str(run_config(attack, factory(0, 1), 1, seed=0, defense_seed=factory.defense_seed(r, 1), **ids))
            for r in (0, 1)}
    assert len(keys) == 2
    setups = {str(setup_config(attack, factory(0, "setup"), seed=0, defense_seed=s, **ids)) for s in (1, 2)}
    assert len(setups) == 2


def test_setup_key_changes_with_the_defense_parameters(prior):
    attack = C2F(prior, scale="smoke", **C2F_PARAMS)
    ids = dict(target_key="toy-target", prior_key=None, setting="toy", defense="ssd")
    from ssdlib.cache import config_hash
    keys = {config_hash(setup_config(attack, BlackBox(ToyTarget()), defense_params={"T": t, "eps": e}, **ids))
            for t in (0.1, 0.3) for e in (0.5, 1.0)}
    assert len(keys) == 4


@pytest.mark.parametrize("cls, params", [(Mirror, MIRROR), (C2F, C2F_PARAMS)])
def test_equal_effort_against_a_defended_and_an_undefended_oracle(prior, cls, params, one_thread):
    """The same class and seed cost the same queries and generations whatever the oracle answers."""
    attack = cls(prior, scale="smoke", **params)
    plain, defended = OracleFactory(ToyTarget()), toy_ssd_factory(prior, T=0.3, eps=1.0)
    for target in (0, 3):
        results = []
        for factory in (plain, defended):
            oracle = factory(0, target)
            setup = attack.setup(oracle, seed=0)
            results.append((attack.attack_class(oracle, target, setup, seed=0), oracle.queries))
        (a, qa), (b, qb) = results
        assert qa == qb and a.queries == b.queries == attack.planned_queries(C)["per_class"]
        assert a.generations == b.generations == params["generations"]
        assert a.stopped == b.stopped == "generations"


def test_mirror_official_early_stop_is_an_option_and_none_means_no_threshold(prior):
    confident = Mirror(prior, scale="smoke", **{**MIRROR, "min_score": 0.2})
    result = confident.run(BlackBox(ToyTarget()), [3])[0]
    assert result.stopped == "threshold" and result.generations < MIRROR["generations"]
    never = Mirror(prior, scale="smoke", **{**MIRROR, "min_score": None}).run(BlackBox(ToyTarget()), [3])[0]
    assert never.stopped == "generations" and never.generations == MIRROR["generations"]
    assert Mirror(prior, scale="smoke").params["min_score"] is None  # the tables' default: no early stop
    with pytest.raises(ValueError, match="min_score"):
        Mirror(prior, scale="smoke", min_score=1.5)


def test_mirror_breeding_rates_share_and_clipping(prior):
    """Mutation touches about mutation_prob of the coordinates by at most mutation_scale * std; crossover takes
    the fitter parent's coordinate with its softmax share; children stay in the latent box."""
    attack = Mirror(prior, scale="smoke", **{**MIRROR, "mutation_prob": 0.25, "mutation_scale": 0.1})
    std = prior.stats()[1]
    gen = torch.Generator().manual_seed(0)
    same = torch.zeros(401, D)  # identical parents: every change is a mutation
    children = attack._breed(same, torch.zeros(401), std, gen)
    changed = children != 0
    assert abs(changed.float().mean().item() - 0.25) < 0.02
    assert torch.all(children.abs() <= 0.1 * std + 1e-6)
    # crossover: two parents with softmax weights 0.8 / 0.2, no mutation; P(coordinate from the fitter parent) =
    # 0.8^2 (both parents the fitter) + 2 * 0.8 * 0.2 * 0.8 (mixed pair, share 0.8) = 0.896
    attack = Mirror(prior, scale="smoke", **{**MIRROR, "mutation_prob": 0.0, "bound_std": None})
    a, b = torch.full((D,), 0.5), torch.full((D,), -0.5)
    pop, fit = torch.stack([a, b]), torch.log(torch.tensor([0.8, 0.2]))
    kids = torch.cat([attack._breed(pop, fit, std, gen) for _ in range(3000)])
    assert abs((kids == 0.5).float().mean().item() - 0.896) < 0.015
    # clipping into mean +- bound_std * std
    attack = Mirror(prior, scale="smoke", **{**MIRROR, "mutation_prob": 1.0, "mutation_scale": 50.0})
    far = attack._breed(torch.full((50, D), 3.0), torch.zeros(50), std, gen)
    lo, hi = prior.bounds(1.0)
    assert torch.all(far >= lo - 1e-6) and torch.all(far <= hi + 1e-6) and torch.any(far == hi)


def test_c2f_step_size_schedule_and_population_fill(prior):
    attack = C2F(prior, scale="smoke", **C2F_PARAMS)
    G = 500
    official = [0.1 if g < 470 else 0.1 * (500 - g) / 50 for g in range(G)]
    assert [attack.step_size(g, G) for g in range(G)] == pytest.approx(official)
    # fill: the survivors stay first; each new member is 0.7 * (x1 + x2 + 2 x3) / 4 + 0.3 * (mean of 3 samples)
    attack = C2F(prior, scale="smoke", **{**C2F_PARAMS, "population": 400, "stage1_keep": 4})
    survivors = torch.full((4, D), 2.0)
    pop = attack._extend(survivors, torch.Generator().manual_seed(0))
    assert pop.shape == (400, D) and torch.equal(pop[:4], survivors)
    noise = (pop[4:] - 0.7 * 2.0) / 0.3  # the mean of 3 standard-normal samples: std 1 / sqrt(3)
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 3 ** -0.5) < 0.05
