"""RLB-MI on a tiny synthetic target: the agent's reward rises, the best image seen is returned, query budgets and
equal effort hold, hard-label oracles are refused, runs are reproducible, bad parameters are named."""
import math

import pytest
import torch

from ssdlib.attacks.rlb import RLB, rlb_reward
from ssdlib.blackbox import BlackBox
from ssdlib.priors import Prior
from test_attacks import C, D, ToyGenerator, ToyTarget

#: the toy run: 200 one-step episodes with a small agent (under a second on one core)
TOY = dict(episodes=200, hidden=32, top_k=3)


class Recording(BlackBox):
    """A BlackBox that also keeps every (images, answers) pair it gave: the test's view of what the attack saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def query(self, images):
        out = super().query(images)
        self.log.append((images.clone(), out.clone()))
        return out

    __call__ = query


def noisy_defense(seed: int):
    """A seeded random post-processing: mixes each answer with uniform noise (a stand-in for a randomised defense)."""
    gen = torch.Generator().manual_seed(seed)

    def defense(probs, inputs=None):
        out = probs + 0.5 * torch.rand(probs.shape, generator=gen)
        return out / out.sum(1, keepdim=True)
    return defense


@pytest.fixture
def prior():
    return Prior(ToyGenerator(), D, name="toy", key="toy-prior")


@pytest.mark.parametrize("seed", [0, 1])
def test_the_reward_and_the_target_probability_rise_over_episodes(prior, seed, one_thread):
    result = RLB(prior, scale="smoke", **TOY).attack_class(BlackBox(ToyTarget()), 3, {}, seed=seed)
    h = result.history
    assert len(h) == 20 and h[-1]["episode"] == TOY["episodes"]
    first = sum(x["reward"] for x in h[:3]) / 3
    last = sum(x["reward"] for x in h[-3:]) / 3
    assert last > first + 20  # the rewards are about -60 at the start (the margin term is floored at log 1e-7)
    assert sum(x["mean"] for x in h[-3:]) / 3 > sum(x["mean"] for x in h[:3]) / 3 + 0.2
    assert h[0]["alpha"] > 0.5 and h[-1]["alpha"] < 1e-6  # the entropy weight is annealed over the run
    assert result.diagnostics["updates"] == TOY["episodes"] - RLB(prior, scale="smoke").params["warmup"]
    with torch.no_grad():  # better than the random prior samples
        random = torch.softmax(ToyTarget()(prior.decode(prior.sample(64))), -1)[:, 3]
    assert float(result.scores.mean()) > float(random.mean()) + 0.3


def test_the_returned_images_are_the_best_the_oracle_scored(prior, one_thread):
    oracle = Recording(ToyTarget())
    attack = RLB(prior, scale="smoke", **TOY)
    result = attack.attack_class(oracle, 3, {}, seed=0)
    images = torch.cat([x for x, _ in oracle.log])
    scores = torch.cat([y for _, y in oracle.log])[:, 3]
    assert len(scores) == oracle.queries == result.queries == attack.planned_queries(C)["per_class"]
    assert oracle.calls == TOY["episodes"] + 1  # one call per episode, and the last test image alone
    # the best image of the whole run, not the last episode's: the top score is the best answer ever given
    assert float(result.scores[0]) == float(scores.max()) == result.final_score
    assert max(x["best"] for x in result.history) == result.final_score == result.history[-1]["best_so_far"]
    assert torch.allclose(result.images[0], images[scores.argmax()], atol=1e-6)
    top = scores.unique().topk(TOY["top_k"]).values  # distinct answers (the s' and a images coincide)
    assert torch.allclose(result.scores, top)
    assert torch.all(result.scores[:-1] >= result.scores[1:]) and len(result.latents.unique(dim=0)) == TOY["top_k"]
    with torch.no_grad():  # the reported scores are the target's probabilities of the returned latents
        true = torch.softmax(ToyTarget()(prior.decode(result.latents)), -1)[:, 3]
    assert torch.allclose(result.scores, true, atol=1e-5)
    assert result.initial_score <= result.final_score
    assert result.diagnostics["test_best"] <= result.final_score  # the official rule looks at the test images only


def test_a_budget_stops_the_search_and_is_never_exceeded(prior, one_thread):
    attack = RLB(prior, scale="smoke", **{**TOY, "episodes": 40})
    planned = attack.planned_queries(C)["per_class"]
    assert attack.planned_queries(C) == {"setup": 0, "per_class": 3 * 40}
    assert attack.setup(BlackBox(ToyTarget())) == {"queries": 0, "seconds": 0.0}
    exact = BlackBox(ToyTarget(), budget=planned)
    result = attack.attack_class(exact, 1, {}, seed=0)
    assert result.stopped == "generations" and result.generations == 40 and exact.queries == planned
    for budget in (planned // 3, planned - 1, 1):
        oracle = BlackBox(ToyTarget(), budget=budget)
        result = attack.attack_class(oracle, 1, {}, seed=0)
        assert result.stopped == "budget" and oracle.queries <= budget and result.queries == oracle.queries
        assert len(result.images) >= 1
    assert result.generations == 0  # budget 1: not even one episode's call was answered
    oracle = BlackBox(ToyTarget(), budget=planned - 1)  # only the last test image is refused
    assert attack.attack_class(oracle, 1, {}, seed=0).generations == 40


def test_equal_effort_against_a_defended_and_an_undefended_oracle(prior, one_thread):
    attack = RLB(prior, scale="smoke", **{**TOY, "episodes": 60})
    plain = BlackBox(ToyTarget())
    defended = BlackBox(ToyTarget(), noisy_defense(7))
    a = attack.attack_class(plain, 2, {}, seed=0)
    b = attack.attack_class(defended, 2, {}, seed=0)
    assert plain.queries == defended.queries == a.queries == b.queries == attack.planned_queries(C)["per_class"]
    assert plain.calls == defended.calls and a.generations == b.generations == 60
    assert a.stopped == b.stopped == "generations"
    assert not torch.equal(a.latents, b.latents)  # the answers differ, and steer the agent


def test_refuses_a_hard_label_oracle_and_a_raw_module(prior):
    attack = RLB(prior, scale="smoke")
    with pytest.raises(ValueError, match="soft-label attack"):
        attack.attack_class(BlackBox(ToyTarget(), mode="hard"), 0, {})
    with pytest.raises(ValueError, match="soft-label attack"):
        attack.run(BlackBox(ToyTarget(), mode="hard"), [0])
    with pytest.raises(TypeError, match="BlackBox"):
        attack.attack_class(ToyTarget(), 0, {})
    with pytest.raises(ValueError, match="target class 5 out of range"):
        attack.attack_class(BlackBox(ToyTarget()), 5, {})


def test_runs_are_reproducible_and_leave_the_global_rng_alone(prior, one_thread):
    params = {**TOY, "episodes": 40, "diversity": 0.5}  # diversity > 0: s' and a are distinct images
    oracle = BlackBox(ToyTarget())  # (building the toy target draws from the global RNG)
    state = torch.get_rng_state()
    a = RLB(prior, scale="smoke", **params).run(oracle, [0, 4], seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # every draw comes from the run's own generator
    b = RLB(prior, scale="smoke", **params).run(BlackBox(ToyTarget()), [4], seed=3)[0]
    assert torch.equal(a[1].latents, b.latents) and torch.equal(a[1].scores, b.scores)
    assert a[1].history == b.history
    c = RLB(prior, scale="smoke", **params).run(BlackBox(ToyTarget()), [4], seed=4)[0]
    assert not torch.equal(c.latents, b.latents)
    assert a[1].queries == 3 * 40


def test_reward_reads_the_margin_of_the_next_state_image():
    p_next = torch.tensor([[0.6, 0.3, 0.1]])
    p_action = torch.tensor([[0.2, 0.7, 0.1]])
    expected = 2 * math.log(0.6) + 2 * math.log(0.2) + 8 * math.log(0.6 - 0.3)
    assert float(rlb_reward(p_next, p_action, 0)) == pytest.approx(expected, rel=1e-5)
    # class 1 loses the next-state image (0.3 < 0.6): the margin is floored at 1e-7, whatever the action image says
    expected = 2 * math.log(0.3) + 2 * math.log(0.7) + 8 * math.log(1e-7)
    assert float(rlb_reward(p_next, p_action, 1)) == pytest.approx(expected, rel=1e-5)


def test_entropy_weight_follows_the_official_auto_tuning_at_any_length(prior):
    """Officially Adam (lr 5e-4) tunes log alpha against a target entropy of -dim(A) with a per-coordinate mean
    log-probability, so the gradient keeps its sign and log alpha falls by about lr per update; the closed-form
    schedule reproduces that at paper scale and keeps its shape as a fraction of a shortened run."""
    log_alpha = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([log_alpha], lr=5e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        log_pi = torch.empty(256).uniform_(-5.0, 30.0, generator=gen)  # per-coordinate means stay far below 100
        loss = -(log_alpha * (log_pi - 100.0)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    paper = RLB(prior, scale="paper")
    assert math.log(paper.entropy_weight(2000)) == pytest.approx(float(log_alpha.detach()), rel=0.03)
    updates = paper.params["episodes"] - paper.params["warmup"]
    assert math.log(paper.entropy_weight(updates)) == pytest.approx(-5e-4 * updates, rel=1e-3)
    small = RLB(prior, scale="smoke", episodes=108, warmup=8)  # 100 updates
    assert small.entropy_weight(0) == 1.0
    assert small.entropy_weight(50) == pytest.approx(paper.entropy_weight(updates // 2), rel=1e-3)


def test_bad_parameters_are_named(prior):
    with pytest.raises(ValueError, match="unknown rlb parameters"):
        RLB(prior, scale="smoke", episode=3)
    with pytest.raises(ValueError, match="episodes"):
        RLB(prior, scale="smoke", episodes=0)
    with pytest.raises(ValueError, match="diversity"):
        RLB(prior, scale="smoke", diversity=1.0)
    with pytest.raises(ValueError, match="warmup"):
        RLB(prior, scale="smoke", warmup=4, batch_size=8)
    with pytest.raises(ValueError, match="top_k"):
        RLB(prior, scale="smoke", episodes=2, top_k=3)
    with pytest.raises(ValueError, match="actor_lr"):
        RLB(prior, scale="smoke", actor_lr=0.0)
    with pytest.raises(ValueError, match="margin_weight"):
        RLB(prior, scale="smoke", margin_weight=-1.0)
    with pytest.raises(ValueError, match="hidden"):
        RLB(prior, scale="smoke", hidden=2.5)
    with pytest.raises(ValueError, match="scale"):
        RLB(prior, scale="laptop")
    with pytest.raises(TypeError, match="Prior"):
        RLB(ToyGenerator(), scale="smoke")


def test_paper_sac_settings_reach_their_updates(prior, one_thread):
    """The `paper` agent (hidden 256, batch 256 drawn once more than 256 transitions are stored) updates, on the toy
    target: the path the paper dry run cannot reach, since its capped episodes stay below the warm-up."""
    paper = RLB(prior, scale="paper")
    p = paper.params
    assert (p["batch_size"], p["warmup"], p["hidden"]) == (256, 256, 256)
    result = RLB(prior, scale="paper", episodes=p["warmup"] + 3, top_k=2).attack_class(
        BlackBox(ToyTarget()), 1, {}, seed=0)
    assert result.diagnostics["updates"] == 3 and len(result.images) == 2
    assert all(math.isfinite(h["reward"]) for h in result.history)
