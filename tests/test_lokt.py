"""LOKT on a toy DCGAN prior and a toy linear target: hard labels only, surrogates that agree with the target, no
query in the white-box phase, planned and budgeted setup queries, equal effort against a defended oracle."""
import pytest
import torch
from torch import nn

from ssdlib.attacks.base import QueryBudgetExceeded
from ssdlib.attacks.lokt import LOKT, ConditionalGenerator, augment, max_margin_loss
from ssdlib.blackbox import BlackBox
from ssdlib.models.generators import Discriminator, Generator
from ssdlib.priors import Prior

D_LATENT, C = 8, 5
#: most toy attacks start D from scratch on purpose (cheap); the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore:LOKT's discriminator starts from scratch")


def toy_generator() -> Generator:
    """A tiny DCGAN generator with non-trivial batch-norm statistics and affine parameters."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(latent_dim=D_LATENT, dim=4)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=gen))
                m.bias.copy_(0.3 * torch.randn(n, generator=gen))
                m.reset_running_stats()
                m.momentum = None  # cumulative: the running statistics become those of the batch below
        G.train()(torch.randn(1024, D_LATENT, generator=gen))  # as a trained prior's: eval mode ~ train mode
    for m in G.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = 0.1
    return G.eval()


class ToyTarget(nn.Module):
    """A fixed linear classifier of 8x8-pooled pixels, centred on the toy prior's mean image (varied labels)."""

    num_classes = C

    def __init__(self, mean: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.fc = nn.Linear(3 * 64, C, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(C, 3 * 64, generator=torch.Generator().manual_seed(1)))

    def forward(self, x):
        return 30 * self.fc(nn.functional.avg_pool2d(x - self.mean, 8).flatten(1))


class Relabel(nn.Module):
    """A seeded defense that answers a uniformly random class for every query (the worst case for LOKT)."""

    def __init__(self, seed: int):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, probs, inputs=None):
        labels = torch.randint(0, probs.shape[1], (len(probs),), generator=self.gen)
        return nn.functional.one_hot(labels, probs.shape[1]).float()


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test on one thread: on a shared 2-core machine two threads per process run far slower."""
    yield


@pytest.fixture(scope="module")
def prior():
    return Prior(toy_generator(), D_LATENT, name="toy-dcgan", key="toy-dcgan")


@pytest.fixture(scope="module")
def target(prior):
    return ToyTarget(prior.decode(prior.sample(256)).mean(0))


@pytest.fixture(scope="module")
def public(prior):
    return (prior.decode(prior.sample(64, torch.Generator().manual_seed(5))) * 255).round().to(torch.uint8)


SMALL = dict(warmup_steps=1, tacgan_steps=3, batch_size=8, n_dis=1, per_class=6, surrogates=1, surrogate_steps=3,
             surrogate_batch=8, surrogate_growth=4, surrogate_layers=(1, 1), holdout=16, attack_steps=3, top_k=2)
#: enough training for the surrogates to learn the toy target (a few seconds on one thread)
LEARN = dict(SMALL, tacgan_steps=20, per_class=60, surrogate_steps=80, surrogate_batch=32, holdout=200,
             surrogate_growth=6, surrogate_layers=(2, 2), surrogate_lr=0.05)


def test_conditional_batch_norm_at_initialisation_is_the_prior(prior):
    G = ConditionalGenerator(prior.generator, C).eval()
    z = prior.sample(16, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = prior.generator(z)
        for y in (0, 3):
            assert torch.allclose(G(z, torch.full((16,), y)), expected, atol=1e-5)
        assert torch.allclose(G(z, torch.arange(16) % C), expected, atol=1e-5)
    # the class embeddings are separate parameters: changing one class leaves the others at the prior
    with torch.no_grad():
        G.body[1].bias.weight[2] += 1.0
        assert not torch.allclose(G(z, torch.full((16,), 2)), expected, atol=1e-3)
        assert torch.allclose(G(z, torch.full((16,), 1)), expected, atol=1e-5)


@pytest.fixture(scope="module")
def learned(prior, target, public):
    """A setup trained long enough for the surrogates to learn the toy target (shared by two tests)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        attack = LOKT(prior, public=public, scale="smoke", **{**LEARN, "attack_steps": 30, "top_k": 3})
        oracle = BlackBox(target, mode="hard")
        return attack, oracle, attack.setup(oracle, seed=0)
    finally:
        torch.set_num_threads(n)


def test_surrogates_agree_with_the_target_above_chance(prior, target, learned):
    attack, _, setup = learned
    d = setup["diagnostics"]
    assert d["agreement_ensemble"] > d["agreement_majority"] + 0.1
    assert max(d["agreement_surrogates"]) > d["agreement_majority"] + 0.1
    # checked independently on fresh generated images against the target itself
    G = attack.conditional_generator(setup)
    gen = torch.Generator().manual_seed(99)
    z, y = prior.sample(300, gen), torch.randint(0, C, (300,), generator=gen)
    with torch.no_grad():
        x = G(z, y).clamp(0, 1)
        truth = target(x).argmax(1)
        guess = attack.surrogate_models(setup, discriminator=False)[0](x).argmax(1)
    majority = torch.bincount(truth, minlength=C).max().item() / len(truth)
    assert (guess == truth).float().mean().item() > majority + 0.1
    assert d["labelled_images"] == C * LEARN["per_class"] and 1 <= d["labelled_distinct"] <= C
    assert 1 / C <= d["labelled_largest_share"] <= 1


def test_attack_class_never_queries_and_beats_random_samples(prior, target, learned):
    attack, oracle, setup = learned
    used = oracle.queries
    results = [attack.attack_class(oracle, c, setup, seed=0) for c in range(C)]
    assert oracle.queries == used and all(r.queries == 0 for r in results)
    result = results[2]
    assert result.images.shape == (3, 3, 64, 64) and result.latents.shape == (3, D_LATENT)
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    assert result.setup_queries == setup["queries"] == used
    G = attack.conditional_generator(setup)
    with torch.no_grad():  # the images are the conditional generator's decoding of the latents
        assert torch.allclose(G(result.latents, torch.full((3,), 2)).clamp(0, 1), result.images, atol=1e-5)
    # the white-box objective rises, and the target itself labels the reconstructions as the class more often than
    # random prior samples
    before = sum(r.diagnostics["ensemble_before"] for r in results) / C
    after = sum(r.diagnostics["ensemble_after"] for r in results) / C
    assert after > before + 0.05
    with torch.no_grad():
        hit = torch.cat([target(r.images).argmax(1) == r.target for r in results]).float().mean().item()
        x = prior.decode(prior.sample(3 * C, torch.Generator().manual_seed(8)))
        base = (target(x).argmax(1) == torch.arange(C).repeat_interleave(3)).float().mean().item()
    assert hit > base + 0.15


def test_setup_follows_its_plan_and_respects_a_budget(prior, target, public):
    attack = LOKT(prior, public=public, scale="smoke", **SMALL)
    plan = attack.planned_queries(C)
    assert plan == {"setup": 3 * 1 * 8 + C * 6 + 16, "per_class": 0}
    oracle = BlackBox(target, mode="hard", budget=plan["setup"])
    setup = attack.setup(oracle)
    d = setup["diagnostics"]
    assert setup["queries"] == oracle.queries == plan["setup"]
    assert (d["queries_tacgan"], d["queries_labelling"], d["queries_holdout"]) == (24, C * 6, 16)
    short = BlackBox(target, mode="hard", budget=plan["setup"] - 1)
    with pytest.raises(QueryBudgetExceeded):
        attack.setup(short)
    assert short.queries <= plan["setup"] - 1


def test_same_queries_against_an_undefended_and_a_defended_oracle(prior, target, public):
    attack = LOKT(prior, public=public, scale="smoke", **SMALL)
    runs = []
    for defense in (None, Relabel(7)):
        oracle = BlackBox(target, defense, mode="hard")
        setup = attack.setup(oracle, seed=0)
        result = attack.attack_class(oracle, 1, setup, seed=0)
        d = setup["diagnostics"]
        runs.append((oracle.queries, d["queries_tacgan"], d["queries_labelling"], d["queries_holdout"],
                     result.queries, result.generations, d["agreement_ensemble"]))
    assert runs[0][:6] == runs[1][:6]
    assert runs[0][0] == attack.planned_queries(C)["setup"]


def test_refuses_a_soft_oracle_and_a_raw_module(prior, target, public):
    attack = LOKT(prior, public=public, scale="smoke", **SMALL)
    with pytest.raises(ValueError, match="label-only attack|hard-label attack"):
        attack.setup(BlackBox(target, mode="soft"))
    with pytest.raises(ValueError, match="label-only attack|hard-label attack"):
        attack.run(BlackBox(target), [0])
    with pytest.raises(TypeError, match="BlackBox"):
        attack.setup(target)
    with pytest.raises(TypeError, match="BlackBox"):
        attack.run(lambda x: x, [0])


def test_reproducible_for_a_seed(prior, target, public):
    def run(seed):
        attack = LOKT(prior, public=public, scale="smoke", **SMALL)
        oracle = BlackBox(target, mode="hard")
        setup = attack.setup(oracle, seed=seed)
        return setup, attack.attack_class(oracle, 3, setup, seed=seed)

    (s1, r1), (s2, r2), (_, r3) = run(0), run(0), run(1)
    for k in s1["generator"]:
        assert torch.equal(s1["generator"][k], s2["generator"][k])
    assert all(torch.equal(s1["surrogates"][0][k], s2["surrogates"][0][k]) for k in s1["surrogates"][0])
    assert torch.equal(r1.latents, r2.latents) and torch.equal(r1.images, r2.images)
    assert not torch.equal(r1.latents, r3.latents)


def test_warmup_is_query_free_pure_and_can_be_passed_in(prior, target, public):
    attack = LOKT(prior, public=public, scale="smoke", **{**SMALL, "warmup_steps": 2})
    with pytest.raises(ValueError, match="number of classes"):
        attack.warmup(0)  # no oracle to ask: the classes must be given
    warm = attack.warmup(0, num_classes=C)
    again = LOKT(prior, public=public, scale="smoke", **{**SMALL, "warmup_steps": 2}).warmup(0, num_classes=C)
    assert all(torch.equal(warm["generator"][k], again["generator"][k]) for k in warm["generator"])
    assert warm["steps"] == 2 and warm["history"]
    a, b = BlackBox(target, mode="hard"), BlackBox(target, mode="hard")
    fresh = LOKT(prior, public=public, scale="smoke", **{**SMALL, "warmup_steps": 2})
    s1, s2 = attack.setup(a, seed=0, warm=warm), fresh.setup(b, seed=0)
    assert a.queries == b.queries
    assert all(torch.equal(s1["generator"][k], s2["generator"][k]) for k in s1["generator"])
    other = LOKT(prior, public=public, scale="smoke", **SMALL)
    with pytest.raises(ValueError, match="warm-up given"):
        other.setup(BlackBox(target, mode="hard"), warm=warm)
    config = attack.warmup_config(0, num_classes=C)
    assert config["prior"] == prior.key and config["params"]["warmup_steps"] == 2 and config["num_classes"] == C
    assert attack.warmup_config(1, num_classes=C) != config


def test_discriminator_state_initialises_d_and_enters_the_setup_key(prior, target, public):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        disc = Discriminator(4, "batch")
    plain = LOKT(prior, public=public, scale="smoke", **SMALL)
    seeded = LOKT(prior, public=public, scale="smoke", discriminator=disc.state_dict(), **SMALL)
    with pytest.warns(UserWarning, match="from scratch"):  # a random critic degrades the prior's images
        LOKT(prior, public=public, scale="smoke", **SMALL)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LOKT(prior, public=public, scale="smoke", discriminator=disc, **{**SMALL, "warmup_steps": 0})
    assert plain.setup_params["discriminator"] is None and seeded.setup_params["discriminator"]
    assert plain.setup_params["public"] == seeded.setup_params["public"]
    _, D = seeded._networks(C)
    assert torch.equal(D.features[0].weight, disc.body[0].weight) and D.norm == "batch"
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():  # the real/fake head is the prior's critic; the class head is new
        adv, cls = D.eval()(x)
        assert torch.allclose(adv, disc.eval()(x), atol=1e-5) and cls.shape == (4, C)
    setup = seeded.setup(BlackBox(target, mode="hard"))
    assert len(seeded.surrogate_models(setup)) == 2  # one DenseNet + D's class head


def test_bad_inputs_are_named(prior, public):
    with pytest.raises(ValueError, match="public images"):
        LOKT(prior, scale="smoke")
    with pytest.raises(ValueError, match=r"\[N, 3, 64, 64\]"):
        LOKT(prior, public=torch.zeros(4, 3, 32, 32), scale="smoke")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LOKT(prior, public=torch.full((4, 3, 64, 64), 2.0), scale="smoke")
    with pytest.raises(TypeError, match="DCGAN"):
        LOKT(Prior(nn.Sequential(nn.Linear(D_LATENT, 3 * 64 * 64), nn.Unflatten(1, (3, 64, 64))), D_LATENT),
             public=public, scale="smoke")
    with pytest.raises(ValueError, match="unknown lokt parameters"):
        LOKT(prior, public=public, scale="smoke", attack_step=3)
    with pytest.raises(ValueError, match="num_classes"):
        LOKT(prior, public=public, scale="smoke", num_classes=1)
    attack = LOKT(prior, public=public, scale="smoke", **SMALL)
    assert attack.params["attack_steps"] == 3 and LOKT.EFFORT["paper"]["attack_steps"] == 600


def test_augment_and_margin_loss():
    x = torch.rand(6, 3, 64, 64, requires_grad=True)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    (g,) = torch.autograd.grad(out.sum(), [x])
    assert g.abs().sum() > 0  # differentiable: the white-box phase descends through it
    same = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    # class 0: -3 + 2; class 2 of row 2: -1 + 5
    assert max_margin_loss(logits, torch.tensor([0, 2])).item() == pytest.approx(((-3 + 2) + (-1 + 5)) / 2)


def test_lokt_keeps_the_black_box_discipline():
    """No private oracle attribute, no import of the training code, defenses, data, experiments or classifiers."""
    from pathlib import Path

    from test_blackbox import oracle_violations

    import ssdlib.attacks.lokt as module
    assert oracle_violations(Path(module.__file__).read_text()) == []
