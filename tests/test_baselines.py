"""Training-time defenses: each loss matches a hand computation and sends gradients to the model."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssdlib.defenses import (BiDO, MID, NegativeLS, TrainingDefense, TransferLearning, VIBNet, build_defense,
                              freeze_first_layers, gaussian_kernel, gaussian_kl, hsic, ls_schedule,
                              normalized_hsic, smoothed_targets, weight_layers)
from ssdlib.models import build_model

K = 5


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 64, 64, generator=g), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])


def _grads_flow(net, loss):
    net.zero_grad()
    loss.backward()
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    assert sum(p.grad.abs().sum().item() for p in trainable) > 0


def test_no_defense_is_cross_entropy(batch):
    torch.manual_seed(0)
    net = TrainingDefense().wrap(build_model("ir152", K, "smoke"))
    loss, logs, logits = TrainingDefense().loss(net, *batch, 0, 1)
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch[1]))
    _grads_flow(net, loss)


def test_gaussian_kl_by_hand():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    std = torch.tensor([[1.0, 0.5], [2.0, 0.1]])
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2 per dimension
    hand = [sum(math.log(1 / s) + (s * s + m * m) / 2 - 0.5 for m, s in zip(mr, sr))
            for mr, sr in zip(mu.tolist(), std.tolist())]
    torch.testing.assert_close(gaussian_kl(mu, std), torch.tensor(hand))
    assert gaussian_kl(torch.zeros(1, 3), torch.ones(1, 3)).item() == 0.0


def test_mid_loss_and_sampling(batch):
    torch.manual_seed(0)
    mid = MID(beta=0.1, k=6)
    net = mid.wrap(build_model("vgg16", K, "smoke"))
    assert isinstance(net, VIBNet) and net.classifier.in_features == 6 and net.forward_features(batch[0]).shape == (8, 6)
    net.train()
    torch.manual_seed(1)
    loss, logs, logits = mid.loss(net, *batch, 0, 1)
    torch.manual_seed(1)
    logits_again, mu, std = net.vib_forward(batch[0])
    torch.testing.assert_close(logits, logits_again)
    m, sd = mu.detach().double().numpy(), std.detach().double().numpy()  # KL(N(m, sd^2) || N(0, 1)) by hand
    kl = (0.5 * (m ** 2 + sd ** 2 - 1) - np.log(sd)).sum(1).mean()
    expected = F.cross_entropy(logits, batch[1]).item() + 0.1 * kl
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["kl"] == pytest.approx(kl, rel=1e-5)
    _grads_flow(net, loss)
    net.eval()  # eval uses the mean: deterministic and equal to classifier(mu)
    with torch.no_grad():
        torch.testing.assert_close(net(batch[0]), net(batch[0]))
        torch.testing.assert_close(net(batch[0]), net.classifier(net.encode(batch[0])[0]))
    with pytest.raises(ValueError, match="VIBNet"):
        mid.loss(build_model("vgg16", K, "smoke"), *batch, 0, 1)


def _numpy_hsic(k, l):
    m = len(k)
    h = np.eye(m) - np.ones((m, m)) / m
    return np.trace(k @ h @ l @ h) / (m - 1) ** 2


def test_hsic_matches_numpy_formula():
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(6, 4)), rng.normal(size=(6, 3))
    sigma = 1.5
    kx = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * sigma**2 * 4))
    kz = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * sigma**2 * 3))
    tkx = gaussian_kernel(torch.tensor(x), sigma)
    np.testing.assert_allclose(tkx.numpy(), kx, atol=1e-10)
    np.testing.assert_allclose(hsic(tkx, gaussian_kernel(torch.tensor(z), sigma)).item(), _numpy_hsic(kx, kz),
                               rtol=1e-8)
    # independence of a kernel from a constant one: HSIC 0
    assert abs(hsic(tkx, torch.ones(6, 6, dtype=torch.float64)).item()) < 1e-12
    # normalised variant against its numpy formula
    m, eps = 6, 1e-5
    h = np.eye(m) - 1 / m
    rk = (kx @ h) @ np.linalg.inv(kx @ h + eps * m * np.eye(m))
    rl = (kz @ h) @ np.linalg.inv(kz @ h + eps * m * np.eye(m))
    np.testing.assert_allclose(normalized_hsic(tkx, torch.tensor(kz)).item(), (rk * rl.T).sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="square"):
        hsic(tkx, torch.ones(5, 5))


def test_bido_loss_by_hand(batch):
    torch.manual_seed(0)
    bido = BiDO(lambda_x=0.3, lambda_y=2.0, sigma=5.0, estimator="hsic")
    net = bido.wrap(build_model("ir152", K, "smoke")).eval()  # eval: no dropout, so two passes agree
    loss, logs, logits = bido.loss(net, *batch, 0, 1)
    hiddens, _ = net.forward_hidden(batch[0])
    x = batch[0].flatten(1).double().numpy()
    onehot = np.eye(K)[batch[1].numpy()]
    kx = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * 25.0 * x.shape[1]))
    ky = onehot @ onehot.T
    total_x = total_y = 0.0
    for z in hiddens:
        z = z.detach().flatten(1).double().numpy()
        kz = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * 25.0 * z.shape[1]))
        total_x += _numpy_hsic(kx, kz)
        total_y += _numpy_hsic(ky, kz)
    assert logs["hsic_xz"] == pytest.approx(total_x, rel=1e-4)
    assert logs["hsic_yz"] == pytest.approx(total_y, rel=1e-4)
    expected = F.cross_entropy(logits, batch[1]).item() + 0.3 * total_x - 2.0 * total_y
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    _grads_flow(net, loss)
    # the default (normalised) estimator, by hand in numpy: tr(Kc (Kc + eps m I)^-1 Lc (Lc + eps m I)^-1)
    nb = BiDO(lambda_x=0.3, lambda_y=2.0, sigma=5.0)
    _, nlogs, _ = nb.loss(net, *batch, 0, 1)
    m, eps = len(x), 1e-5
    h, eye = np.eye(m) - 1 / m, np.eye(m)

    def nhsic(k, l):
        rk = (k @ h) @ np.linalg.inv(k @ h + eps * m * eye)
        rl = (l @ h) @ np.linalg.inv(l @ h + eps * m * eye)
        return (rk * rl.T).sum()

    n_x = n_y = 0.0
    for z in hiddens:
        z = z.detach().flatten(1).double().numpy()
        kz = np.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * 25.0 * z.shape[1]))
        n_x += nhsic(kx, kz)
        n_y += nhsic(ky, kz)
    assert nlogs["hsic_xz"] == pytest.approx(n_x, rel=1e-3)
    assert nlogs["hsic_yz"] == pytest.approx(n_y, rel=1e-3)


def test_smoothed_targets_and_schedule():
    t = smoothed_targets(torch.tensor([2, 0]), 4, -0.1)
    hand = torch.tensor([[-0.025, -0.025, 1.075, -0.025], [1.075, -0.025, -0.025, -0.025]])
    torch.testing.assert_close(t, hand)
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    # Struppek et al.: 0 for the first half, linear ramp to full by 3/4, then full
    factors = [ls_schedule(e, 100) for e in range(100)]
    assert factors[:50] == [0.0] * 50 and factors[74] == 1.0 and factors[99] == 1.0
    assert factors[50] == pytest.approx(1 / 25) and factors[61] == pytest.approx(12 / 25)
    assert all(a <= b for a, b in zip(factors, factors[1:]))
    with pytest.raises(ValueError):
        ls_schedule(0, 10, start=0.8, full=0.5)


def test_negative_ls_loss(batch):
    torch.manual_seed(0)
    ls = NegativeLS(alpha=-0.2)
    net = ls.wrap(build_model("vgg16", K, "smoke"))
    assert ls.alpha_at(0, 10) == 0.0 and ls.alpha_at(9, 10) == -0.2
    loss, logs, logits = ls.loss(net, *batch, 9, 10)
    logp = F.log_softmax(logits, 1)
    hand = -(1.2 * logp[torch.arange(8), batch[1]] - 0.2 * logp.mean(1)).mean()
    torch.testing.assert_close(loss, hand)
    assert logs["alpha"] == -0.2
    early, _, early_logits = ls.loss(net, *batch, 0, 10)
    torch.testing.assert_close(early, F.cross_entropy(early_logits, batch[1]))
    _grads_flow(net, loss)


def test_transfer_learning_freezes_first_half(batch):
    torch.manual_seed(0)
    public = build_model("ir152", 9, "smoke")  # "pretrained" on 9 public identities
    tl = TransferLearning(public, freeze_fraction=0.5)
    net = tl.wrap(build_model("ir152", K, "smoke"))
    layers = weight_layers(net)
    n = len(layers)
    frozen_layers = [m for m in layers if not m.weight.requires_grad]
    assert frozen_layers == layers[: n // 2]
    assert all(p.requires_grad for m in layers[n // 2:] for p in m.parameters())
    # backbone weights come from the public model; the classifier is new (different class count)
    torch.testing.assert_close(net.input_layer[0].weight, public.input_layer[0].weight)
    assert net.classifier.out_features == K
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen_names = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert frozen_names and frozen_names != {name for name, _ in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, weight_decay=1e-3)
    net.train()
    tl.on_train(net)
    loss, _, _ = tl.loss(net, *batch, 0, 1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = net.state_dict()
    for name in before:
        module_name = name.rsplit(".", 1)[0]
        frozen = any(name == f for f in frozen_names) or any(
            module_name == m for m, mod in net.named_modules() if mod in tl.frozen)
        if frozen:
            torch.testing.assert_close(after[name], before[name])  # weights and BN running stats unchanged
    changed = [name for name in before if not torch.equal(after[name], before[name])]
    assert "classifier.weight" in changed and all(name not in frozen_names for name in changed)
    assert tl.params()["pretrained"] == TransferLearning(public.state_dict()).params()["pretrained"]


def test_freeze_fraction_edge_cases():
    model = build_model("vgg16", K, "smoke")
    assert freeze_first_layers(model, 0.0) == []
    with pytest.raises(ValueError):
        freeze_first_layers(model, 1.0)


def test_registry_builds_every_training_defense_and_only_those():
    from ssdlib.defenses import DEFENSE_NAMES, REGISTRY, TRAINING_DEFENSES

    assert DEFENSE_NAMES[:6] == ("none", "mid", "bido", "ls", "tl", "ssd") and "ssd" not in TRAINING_DEFENSES
    assert TRAINING_DEFENSES == ("none", "mid", "bido", "ls", "tl")
    for name in ("none", "mid", "bido", "ls"):
        built = build_defense(name)
        assert type(built) is REGISTRY[name].cls and built.params()["name"] == name
    with pytest.raises(ValueError, match="post-processing"):
        build_defense("ssd")
    with pytest.raises(ValueError, match="valid: none, mid, bido, ls, tl, ssd, rounding"):
        build_defense("dp")
    with pytest.raises(ValueError, match="pretrained"):
        build_defense("tl")
    with pytest.raises(ValueError, match="bad parameters"):
        build_defense("mid", gamma=1.0)
    with pytest.raises(FileNotFoundError):
        build_defense("tl", pretrained="/nonexistent/weights.pt")
