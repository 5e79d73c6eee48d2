"""dlib embedding and evaluation classifier on a small real LFW subset: determinism, identity separation, accuracy,
top-k monotonicity, KNN/centroid distances, save/load, caching and input validation."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("dlib") is None
                                or importlib.util.find_spec("face_recognition_models") is None,
                                reason="dlib-bin / face-recognition-models not installed (the ssdlib[faces] extra)")

from ssdlib.models.embedding import CHIP_SIZE, DlibEmbedder, check_images, to_chips  # noqa: E402
from ssdlib.experiments.evaluators import train_or_load_evaluator  # noqa: E402
from ssdlib.metrics import knn_distance  # noqa: E402
from ssdlib.models.evaluator import EvaluationClassifier  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """10 LFW private identities x 10 images split 6/2/2, embedded once into a temporary embedding cache."""
    from ssdlib.data import find_source, private_split
    try:
        find_source("lfw")
    except FileNotFoundError as err:
        pytest.skip(f"LFW data absent: {err}")
    data = private_split("lfw", max_identities=10, max_per_identity=10, fractions=(0.6, 0.2, 0.2), progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSD_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        embedder = DlibEmbedder(num_workers=1, min_cache=1, progress=False)
        emb = {s: embedder.embed_faceset(getattr(data, s)) for s in ("train", "valid", "test")}
        yield data, embedder, emb


def test_embedding_shape_determinism_and_cache(small):
    data, embedder, emb = small
    e = emb["train"]
    assert e.dtype == torch.float32 and e.shape == (len(data.train), 128)
    assert torch.isfinite(e).all()
    norms = e.norm(dim=1)
    assert 0.5 < float(norms.min()) and float(norms.max()) < 3.0  # dlib descriptors: norm ~1.5, no scaling
    x = data.train.float_images()[:3]
    again = embedder.embed(torch.cat([x, x[:1]]), cache=False)
    assert torch.equal(again[0], again[3])                       # same image twice -> same vector
    assert torch.allclose(again[:3], e[:3], atol=1e-6)           # cached result equals a fresh computation
    with pytest.MonkeyPatch.context() as mp:                     # the split's embedding is read from the cache
        mp.setattr(embedder, "_compute", lambda *a: pytest.fail("a cached embedding was recomputed"))
        assert torch.equal(embedder.embed_faceset(data.train), e)


def test_small_calls_are_cached_only_when_asked(small, tmp_path, monkeypatch):
    data, _, _ = small
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    embedder = DlibEmbedder(num_workers=1, progress=False)  # default min_cache: 64 images
    x = data.train.float_images()[:2]
    calls = []
    compute = embedder._compute
    monkeypatch.setattr(embedder, "_compute", lambda *a: calls.append(1) or compute(*a))
    embedder.embed(x)
    embedder.embed(x)
    assert len(calls) == 2  # below min_cache: computed each time
    first = embedder.embed(x, cache=True)
    assert torch.equal(embedder.embed(x, cache=True), first) and len(calls) == 3  # forced: computed once


def test_same_identity_closer(small):
    data, _, emb = small
    e, y = torch.cat([emb["train"], emb["test"]]), torch.cat([data.train.labels, data.test.labels])
    d = torch.cdist(e, e)
    same = (y[:, None] == y[None]) & ~torch.eye(len(y), dtype=torch.bool)
    diff = y[:, None] != y[None]
    assert float(d[same].mean()) < 0.75 * float(d[diff].mean())


def test_worker_pool_matches_single_process(small):
    data, embedder, _ = small
    x = data.test.float_images()[:8]
    pooled = DlibEmbedder(num_workers=2, batch_size=3, cache=False, progress=False).embed(x)
    assert torch.allclose(pooled, embedder.embed(x, cache=False), atol=1e-6)


def test_chip_geometry():
    x = torch.zeros(2, 3, 64, 64)
    x[:, :, :32] = 1.0  # top half white
    chips = to_chips(x)
    assert chips.shape == (2, CHIP_SIZE, CHIP_SIZE, 3) and chips.dtype == np.uint8
    assert chips[0, 5, 75].min() == 255 and chips[0, -3, 75].max() == 0  # face box starts in the top half


def test_classifier_accuracy_topk_and_save_load(small, tmp_path):
    data, embedder, emb = small
    model = EvaluationClassifier(data.classes, embedder=embedder).fit(data.train, data.valid)
    assert 0.7 <= model.metrics["valid_acc"] <= 1.0
    test = data.test
    acc = model.topk_accuracy(test.float_images(), test.labels, k=(1, 2, 5, 50))
    assert acc["acc@1"] >= 0.7  # chance is 0.1
    assert acc["acc@1"] <= acc["acc@2"] <= acc["acc@5"] <= acc["acc@50"] == 1.0
    proba = model.predict_proba(test.float_images())
    assert proba.shape == (len(test), 10) and proba.dtype == torch.float32
    assert torch.allclose(proba.sum(1), torch.ones(len(test)), atol=1e-5)
    path = model.save(tmp_path / "head.pt")
    assert path.stat().st_size < 100_000
    loaded = EvaluationClassifier.load(path, embedder=embedder)
    assert loaded.classes == data.classes and loaded.metrics == model.metrics
    assert torch.allclose(loaded.predict_proba(test.float_images()), proba)


def test_train_or_load_evaluator_caches(small):
    data, embedder, _ = small
    first = train_or_load_evaluator(data, embedder=embedder, weight_decays=(1e-2,))
    assert first.metrics["test_acc@1"] >= 0.7 and first.metrics["num_classes"] == 10
    from ssdlib.cache import cache_dir
    assert len(list(cache_dir("evaluators").glob("lfw-*.pt"))) == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EvaluationClassifier, "fit", lambda *a, **k: pytest.fail("a cached evaluator was retrained"))
        second = train_or_load_evaluator(data, embedder=embedder, weight_decays=(1e-2,))
    assert second.metrics == first.metrics
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_knn_distance(small):
    data, embedder, _ = small
    train = data.train
    own = knn_distance(train.float_images()[:12], train.labels[:12], train, embedder)
    assert own.shape == (12,) and own.dtype == torch.float32
    assert float(own.max()) < 1e-5  # a training image is its own nearest neighbour
    test = data.test
    other = (test.labels + 1) % test.num_classes
    d_own, d_other = (knn_distance(test.float_images(), lab, train, embedder) for lab in (test.labels, other))
    assert float(d_own.mean()) < float(d_other.mean()) and float((d_own < d_other).float().mean()) >= 0.8


def test_check_images_finds_one_bad_pixel():
    """One pass (min and max) finds a NaN, an infinity of either sign or a value outside [0, 1] anywhere."""
    for value, message in ((float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"),
                           (-float("inf"), "NaN or infinite"), (1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]")):
        images = torch.rand(3, 3, 16, 16)
        images[2, 1, 7, 9] = value
        with pytest.raises(ValueError, match=message):
            check_images(images)
    assert check_images(torch.rand(2, 3, 16, 16).double()).dtype == torch.float32
    assert check_images(torch.zeros(0, 3, 16, 16)).shape == (0, 3, 16, 16)


def test_bad_input_raises(small, tmp_path):
    data, embedder, _ = small
    good = data.test.float_images()[:2]
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(good.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        embedder.embed(good * 2)
    with pytest.raises(ValueError, match="float"):
        embedder.embed(data.test.images[:2])
    with pytest.raises(ValueError, match="NaN"):
        check_images(torch.full((1, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="labels"):
        knn_distance(good, torch.tensor([0, 99]), data.train, embedder)
    model = EvaluationClassifier(data.classes, embedder=embedder)
    with pytest.raises(ValueError, match="k must"):
        model.topk_accuracy(good, data.test.labels[:2], k=(0,))
    with pytest.raises(ValueError, match="embeddings"):
        model.logits_from_embeddings(torch.zeros(2, 64))
    with pytest.raises(FileNotFoundError, match="dlib-bin"):
        DlibEmbedder(model_path=tmp_path / "missing.dat")
    with pytest.raises(FileNotFoundError):
        EvaluationClassifier.load(tmp_path / "missing.pt")


def test_mlp_head_features_are_its_hidden_activation():
    """delta_eval's space with the book's MLP head: ReLU(W1 (e - mean) / scale + b1), 256-d, whose second layer
    gives the logits; with a linear head it is the standardised embedding itself."""
    from ssdlib.experiments.evaluators import EVALUATOR_HIDDEN
    torch.manual_seed(0)
    mlp = EvaluationClassifier([f"id{i}" for i in range(4)], hidden=EVALUATOR_HIDDEN)
    mlp.mean.copy_(torch.randn(128))
    mlp.scale.fill_(0.3)
    emb = torch.randn(6, 128)
    with torch.no_grad():
        feats = mlp.features_from_embeddings(emb)
        w1, b1 = mlp.head[0].weight, mlp.head[0].bias
        by_hand = torch.relu(((emb - mlp.mean) / 0.3) @ w1.T + b1)
        torch.testing.assert_close(feats, by_hand)
        torch.testing.assert_close(mlp.logits_from_embeddings(emb), feats @ mlp.head[2].weight.T + mlp.head[2].bias)
    assert feats.shape == (6, EVALUATOR_HIDDEN) and (feats >= 0).all() and (feats == 0).any()
    linear = EvaluationClassifier([f"id{i}" for i in range(4)], hidden=0)
    linear.mean.copy_(mlp.mean)
    linear.scale.fill_(0.3)
    torch.testing.assert_close(linear.features_from_embeddings(emb), (emb - mlp.mean) / 0.3)
