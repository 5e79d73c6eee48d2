"""The training loop: it learns, is deterministic, resumes exactly after a crash, and caches by config."""
import pytest
import torch

import ssdlib.training as training
from ssdlib.cache import config_hash
from ssdlib.data import FaceSet
from ssdlib.defenses import TrainingDefense, build_defense
from ssdlib.experiments.targets import default_config
from ssdlib.models import build_model
from ssdlib.training import (TrainConfig, batch_bounds, evaluate, fit, init_model, model_config, predict_proba,
                             train_or_load)

K = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def model_key(*args):
    return config_hash(model_config(*args))


def _toy(n_per_class=16, seed=0, name="toy"):
    """A learnable synthetic face set: class c brightens quadrant c, plus noise."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(K):
        x = torch.rand(n_per_class, 3, 64, 64, generator=g) * 0.5
        r, q = divmod(c, 2)
        x[:, :, 32 * r:32 * r + 32, 32 * q:32 * q + 32] += 0.5
        images.append((x * 255).round().to(torch.uint8))
        labels.append(torch.full((n_per_class,), c))
    return FaceSet(torch.cat(images), torch.cat(labels), [f"toy:{c}" for c in range(K)], name)


def _config(**kw):
    base = dict(family="ir152", scale="smoke", num_classes=K, epochs=3, batch_size=16, lr=0.05, seed=3,
                augment=True)
    return TrainConfig(**{**base, **kw})


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_reduces_loss_and_learns():
    train, valid = _toy(seed=0), _toy(n_per_class=8, seed=1)
    cfg = _config(epochs=6, augment=False)
    net, history = fit(build_model("ir152", K, "smoke"), train, valid, config=cfg, progress=False)
    assert len(history) == 6 and [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["valid_acc"] > 0.5  # chance is 0.25
    assert not net.training


def test_deterministic_given_seed():
    train = _toy()
    cfg = _config(family="vgg16", epochs=2)
    a, ha = fit(init_model(cfg), train, config=cfg, progress=False)
    torch.manual_seed(123)  # a different global state before the second run must not matter
    b, hb = fit(init_model(cfg), train, config=cfg, progress=False)
    assert _same_weights(a, b)
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    cfg4 = _config(family="vgg16", epochs=2, seed=4)
    c, _ = fit(init_model(cfg4), train, config=cfg4, progress=False)
    assert not _same_weights(a, c)


class _CrashAt(TrainingDefense):
    """Plain cross-entropy that raises in a given epoch, to simulate a crash mid-run."""

    def __init__(self, epoch):
        self.crash_epoch = epoch

    def loss(self, net, x, y, epoch, total_epochs):
        if epoch == self.crash_epoch:
            raise KeyboardInterrupt("simulated crash")
        return super().loss(net, x, y, epoch, total_epochs)


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    train, valid = _toy(), _toy(n_per_class=4, seed=1)
    cfg = _config(epochs=3, defense="mid", defense_params={"beta": 0.01})  # MID: also checks noise RNG
    ref, ref_hist = fit(init_model(cfg), train, valid, config=cfg, progress=False)

    ckpt = tmp_path / "run.pt"

    class CrashingMID(_CrashAt, type(build_defense("mid"))):
        pass

    crashing = CrashingMID(2)
    crashing.beta, crashing.k = 0.01, None
    with pytest.raises(KeyboardInterrupt):
        fit(init_model(cfg), train, valid, config=cfg, defense=crashing, checkpoint=ckpt, progress=False)
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2

    resumed, hist = fit(init_model(cfg), train, valid, config=cfg, checkpoint=ckpt, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert _same_weights(resumed, ref)
    assert hist[-1]["train_loss"] == ref_hist[-1]["train_loss"]
    with pytest.raises(ValueError, match="another config"):
        fit(build_model("ir152", K, "smoke"), train, config=_config(epochs=4), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="another data"):  # same config, other images: never resume
        fit(init_model(cfg), _toy(seed=9), valid, config=cfg, checkpoint=ckpt, progress=False)


def test_train_or_load_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    train, valid = _toy(), _toy(n_per_class=4, seed=1)
    cfg = _config(epochs=2, family="vgg16")
    net, info = train_or_load(cfg, train, valid, device="cpu", progress=False)
    assert not info["cached"] and info["path"].is_file() and info["train_seconds"] > 0
    assert not list(tmp_path.glob("models/*.partial.pt"))
    def no_training(*args, **kwargs):
        raise AssertionError("a cached model was retrained")

    monkeypatch.setattr(training, "fit", no_training)
    net2, info2 = train_or_load(cfg, train, valid, device="cpu", progress=False)
    assert info2["cached"]
    assert _same_weights(net, net2) and info2["history"] == info["history"]
    assert info2["train_seconds"] == info["train_seconds"]
    # the key depends on the data and the config
    assert model_key(cfg, _toy(seed=5), valid) != info["key"]
    assert model_key(_config(epochs=3, family="vgg16"), train, valid) != info["key"]
    from ssdlib.models import classifiers
    monkeypatch.setitem(classifiers.ARCHITECTURES, ("vgg16", "smoke"), dict(width=8, convs=(1, 1, 1, 1, 1), downsample=2))
    assert model_key(cfg, train, valid) != info["key"]  # a changed architecture table never loads stale weights


def test_predict_and_evaluate():
    train = _toy()
    net, _ = fit(build_model("ir152", K, "smoke"), train, config=_config(epochs=1), progress=False)
    probs = predict_proba(net, train, batch_size=20)
    assert probs.shape == (len(train), K)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(train)))
    torch.testing.assert_close(predict_proba(net, train.images), probs)
    torch.testing.assert_close(predict_proba(net, train.float_images()), probs)
    res = evaluate(net, train, return_probs=True)
    assert res["accuracy"] == pytest.approx((probs.argmax(1) == train.labels).float().mean().item())
    with pytest.raises(ValueError, match="images"):
        predict_proba(net, torch.rand(3, 64, 64))


def test_config_validation():
    assert default_config("vgg16", "cpu", 10).epochs >= 1
    for bad in (dict(family="alexnet"), dict(scale="tiny"), dict(num_classes=1), dict(optimizer="rmsprop"),
                dict(schedule="poly"), dict(epochs=0)):
        with pytest.raises(ValueError):
            _config(**bad)
    with pytest.raises(ValueError, match="FaceSet"):
        fit(build_model("vgg16", K, "smoke"), [1, 2, 3], config=_config(family="vgg16"), progress=False)


def test_transfer_learning_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    from ssdlib.defenses import TransferLearning
    from ssdlib.experiments.targets import pretrain_public

    public = _toy(n_per_class=8, seed=7, name="public")
    backbone = pretrain_public("ir152", "smoke", public, epochs=1, device="cpu", progress=False)
    assert _same_weights(backbone, pretrain_public("ir152", "smoke", public, epochs=1, progress=False))  # cached
    cfg = _config(epochs=1, defense="tl", defense_params={"freeze_fraction": 0.5})
    tl = TransferLearning(backbone, **cfg.defense_params)
    net, info = train_or_load(cfg, _toy(), None, defense=tl, device="cpu", progress=False)
    torch.testing.assert_close(net.input_layer[0].weight, backbone.input_layer[0].weight)  # frozen stem
    net2, info2 = train_or_load(cfg, _toy(), None, defense=TransferLearning(backbone, freeze_fraction=0.5),
                                progress=False)
    assert info2["cached"] and _same_weights(net, net2)
    with pytest.raises(ValueError, match="JSON"):
        _config(defense="tl", defense_params={"pretrained": backbone})
    with pytest.raises(ValueError, match="defense given"):
        fit(init_model(cfg), _toy(), config=_config(), defense=tl, progress=False)


def test_a_last_batch_of_one_image_joins_the_previous_batch():
    assert batch_bounds(33, 16) == [(0, 16), (16, 33)]
    assert batch_bounds(32, 16) == [(0, 16), (16, 32)]
    assert batch_bounds(1, 16) == [(0, 1)]
    train = _toy(n_per_class=4)  # 16 images
    subset = FaceSet(train.images[:9], train.labels[:9], train.classes, "nine")  # 8 + 1 at batch 8
    net, history = fit(build_model("vgg16", K, "smoke"), subset, config=_config(family="vgg16", epochs=1,
                                                                                 batch_size=8), progress=False)
    assert len(history) == 1 and history[0]["train_loss"] > 0


def test_training_starts_from_given_weights_and_checks_them():
    from ssdlib.cache import state_fingerprint
    from ssdlib.training import body_state

    public = _toy(n_per_class=8, seed=7, name="public")
    backbone, _ = fit(build_model("ir152", K, "smoke"), public, config=_config(epochs=1), progress=False)
    state = body_state(backbone)
    assert not any(k.startswith("classifier.") for k in state)
    cfg = _config(epochs=1, init=state_fingerprint(state), num_classes=3)
    start = init_model(cfg, state)
    torch.testing.assert_close(start.input_layer[0].weight, backbone.input_layer[0].weight)
    assert start.classifier.out_features == 3  # a new head for the private classes
    with pytest.raises(ValueError, match="go together"):
        init_model(cfg)
    with pytest.raises(ValueError, match="go together"):
        init_model(_config(epochs=1), state)
    other = {k: v + 1 for k, v in state.items()}
    with pytest.raises(ValueError, match="another backbone"):
        init_model(cfg, other)
