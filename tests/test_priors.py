"""The DCGAN prior: shapes and ranges, the pluggable Prior API, resumable cached training, quality measures."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from ssdlib.data import FaceSet
from ssdlib.models.generators import ARCHITECTURES, Discriminator, Generator, build_generator
from ssdlib.metrics.distances import nearest_distance
from ssdlib.metrics.prior_quality import face_detection_rate
from ssdlib.priors import Prior, PriorTrainingStopped, prior_data, save_grid, train_prior
from ssdlib.utils import data_root

HAS_DLIB = importlib.util.find_spec("dlib") is not None
HAS_FACES = (Path(data_root()) / "lfw-deepfunneled.tgz").is_file() or (Path(data_root()) / "lfw").is_dir()


def toy_faces(n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 64, 64), generator=gen, dtype=torch.uint8)
    return FaceSet(images, torch.arange(n) % 4, [f"toy:{i}" for i in range(4)], "toy")


def test_generator_and_discriminator_shapes_and_ranges():
    G, D = Generator(100, 4).eval(), Discriminator(4)
    with torch.no_grad():
        x = G(torch.randn(5, 100) * 10)
    assert x.shape == (5, 3, 64, 64) and x.min() >= 0 and x.max() <= 1
    assert D(x).shape == (5,)
    assert set(ARCHITECTURES) == {"smoke", "cpu", "paper"} and build_generator("paper").dim == 64
    with pytest.raises(ValueError, match="latents"):
        G(torch.randn(5, 7))
    with pytest.raises(ValueError, match="images"):
        D(torch.rand(2, 3, 32, 32))


class Tiny(nn.Module):
    def forward(self, z):
        return torch.sigmoid(z[:, :3, None, None].expand(-1, 3, 4, 4) * 3)


def test_prior_bounds_clip_decode_and_key():
    prior = Prior(Tiny(), 5, key="tiny")
    lo, hi = prior.bounds(1.0)
    assert torch.allclose(lo, -torch.ones(5), atol=0.05) and torch.allclose(hi, torch.ones(5), atol=0.05)
    z = torch.tensor([[5.0, -5.0, 0.5, 0.0, 0.0]])
    assert torch.equal(prior.clip(z, None), z)
    clipped = prior.clip(z, 1.0)
    assert torch.allclose(clipped[0, :2], torch.stack([hi[0], lo[1]])) and clipped[0, 2] == 0.5
    assert prior.decode(prior.sample(600)).shape == (600, 3, 4, 4)  # batched past batch_size
    seeded = [prior.sample(3, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(*seeded)
    torch.manual_seed(0)
    key = Prior(Generator(100, 4)).key
    torch.manual_seed(0)
    assert Prior(Generator(100, 4)).key == key and len(key) == 16  # a fingerprint of the weights
    with pytest.raises(ValueError, match="sampler"):
        Prior(Tiny(), 5, sampler=lambda n, g: torch.randn(n, 4)).sample(2)
    with pytest.raises(TypeError, match="nn.Module"):
        Prior(lambda z: z, 5)


def test_prior_training_resumes_from_a_partial_checkpoint(tmp_path, monkeypatch, one_thread):
    faces = toy_faces()
    recipe = dict(steps=6, batch_size=8, checkpoint_every=2)
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "whole"))
    whole, info = train_prior("smoke", faces, progress=False, **recipe)
    assert info["steps"] == 6 and not info["cached"] and info["resumed_from"] == 0

    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "split"))
    with pytest.raises(PriorTrainingStopped, match="after step 3"):
        train_prior("smoke", faces, progress=False, stop_after=3, **recipe)
    partial = list((tmp_path / "split" / "priors").glob("*.partial.pt"))
    assert len(partial) == 1 and torch.load(partial[0], weights_only=False)["step"] == 3
    resumed, info = train_prior("smoke", faces, progress=False, **recipe)
    assert info["resumed_from"] == 3 and info["steps"] == 6
    assert not list((tmp_path / "split" / "priors").glob("*.partial.pt"))
    for a, b in zip(whole.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    again, info = train_prior("smoke", faces, progress=False, **recipe)
    assert info["cached"] and again.key == resumed.key
    _, info = train_prior("smoke", faces, progress=False, **{**recipe, "lr": 1e-4})
    assert not info["cached"]  # a changed recipe trains anew


def test_prior_data_holds_out_images_and_checks_input():
    train, hold = prior_data("smoke", toy_faces(64))
    assert len(train) + len(hold) == 64 and len(hold) == 16
    rows = [set(map(tuple, part.images.flatten(1)[:, :8].tolist())) for part in (train, hold)]
    assert not rows[0] & rows[1]
    with pytest.raises(ValueError, match="64x64"):
        prior_data("smoke", FaceSet(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                                     ["a"], "small"))


def test_nearest_distance_and_grid(tmp_path):
    d = nearest_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]]))
    assert torch.allclose(d, torch.tensor([1.0, 4.0]))  # L2, not squared
    path = save_grid(torch.rand(10, 3, 8, 8), tmp_path / "grid.png", nrow=4)
    from PIL import Image
    assert Image.open(path).size == (4 * 10 + 2, 3 * 10 + 2)


@pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed")
def test_face_detector_finds_no_face_in_flat_images():
    assert face_detection_rate(torch.full((3, 3, 64, 64), 0.5)) == 0.0


@pytest.mark.skipif(not HAS_FACES, reason="face data not found")
def test_smoke_prior_trains_on_the_public_faces(one_thread):
    from ssdlib.data import public_set
    from ssdlib.priors import PRIOR_RECIPES
    public = public_set(max_images=PRIOR_RECIPES["smoke"]["max_images"], progress=False)
    prior, info = train_prior("smoke", public, progress=False, cache=False)  # nothing written to the cache
    assert info["steps"] == 30 and info["history"][-1]["step"] == 30 and info["path"] is None
    assert len(info["holdout"]) == 32 and not set(info["holdout"].files) & set(info["train"].files)
    x = prior.decode(prior.sample(8))
    assert x.shape == (8, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and x.std() > 0.01
