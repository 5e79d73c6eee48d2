"""Tables 10/11 at 224x224: the ResNet-152 family's shapes, the skip message, a prior loaded by path, the shape check."""
import warnings

import pytest
import torch

from ssdlib.experiments import high_resolution as hr
from ssdlib.models import ResNet, build_model, count_parameters, resnet152
from ssdlib.priors.external import ImageAdapter, load_prior

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_resnet_family_shapes_at_224(scale):
    torch.manual_seed(0)
    model = build_model("resnet152", 4, scale).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
        hiddens, logits2 = model.forward_hidden(x)
    assert isinstance(model, ResNet) and logits.shape == (2, 4) and feats.shape == (2, model.feat_dim)
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(hiddens[-1], feats)
    assert len(hiddens) == 5 and hiddens[0].shape[-1] == 224 // (4 * model.normalize.downsample)


def test_resnet152_paper_member_is_resnet152():
    with torch.device("meta"):
        net = resnet152(10)
    blocks = sum(len(stage) for stage in net.body)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert blocks == 50 and net.feat_dim == 2048
    assert len(convs) == 1 + 3 * 50 + 4  # stem, three per bottleneck, one projection per stage
    assert 58e6 < count_parameters(net) < 59e6  # torchvision's ResNet-152 body: 58.1M parameters + the head


def test_resnet_rejects_bad_configurations():
    with pytest.raises(ValueError, match="num_classes"):
        ResNet(1)
    with pytest.raises(ValueError, match="equally long"):
        ResNet(3, stages=(1, 1), widths=(4,))


def test_skip_reason_names_what_is_needed(monkeypatch, tmp_path):
    monkeypatch.delenv(hr.PRIOR_ENV, raising=False)
    for scale in ("smoke", "cpu"):
        reason = hr.skip_reason(scale, tmp_path / "anything.pt")
        assert reason.startswith(f"skipped at scale '{scale}'") and "paper" in reason and "prior" in reason
    assert hr.skip_reason("paper").startswith("skipped: no prior given")
    assert "does not exist" in hr.skip_reason("paper", tmp_path / "missing.pt")
    with pytest.raises(hr.HighResolutionSkipped, match="needs|need"):
        hr.high_resolution_tables("smoke")
    path = hr.save_toy_prior(tmp_path / "prior.pt")
    assert hr.skip_reason("paper", path) is None
    monkeypatch.setenv(hr.PRIOR_ENV, str(path))
    assert hr.skip_reason("paper") is None
    with pytest.raises(ValueError, match="unknown scale|scale"):
        hr.skip_reason("huge")


def test_paper_settings_are_table_11():
    assert hr.ssd_params()["T"] == 1.0 and hr.ssd_params()["eps"] == 20.0
    assert hr.defense_params("mid") == {"beta": 0.005} and hr.defense_params("tl") == {"freeze_fraction": 0.7}
    attacks, utility = hr.paper_tables()
    assert list(attacks.defense) == ["No Defense", "MID", "BiDO", "LS", "TL", "SSD (ours)"]
    assert attacks["Acc@1 (%)"].iloc[-1] == 42.0 and utility["Acc (%)"].iloc[0] == 98.5


def test_toy_prior_loaded_by_path(tmp_path):
    path = hr.save_toy_prior(tmp_path / "prior.pt", latent_dim=16)
    prior = load_prior(path, image_size=224)
    images = prior.decode(prior.sample(3, torch.Generator().manual_seed(1)))
    assert prior.latent_dim == 16 and images.shape == (3, 3, 224, 224)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
    assert load_prior(path).key == prior.key  # the key is the file's hash: same file, same cached runs
    other = hr.save_toy_prior(tmp_path / "other.pt", seed=1)
    assert load_prior(other).key != prior.key


def test_prior_file_formats_and_errors(tmp_path):
    gen = hr._ToyGenerator(8)
    bank = torch.randn(5, 8)
    torch.save({"generator": gen, "latents": bank}, tmp_path / "module.pt")
    prior = load_prior(tmp_path / "module.pt", image_size=64)
    z = prior.sample(20, torch.Generator().manual_seed(0))
    assert all(any(torch.equal(row, b) for b in bank) for row in z)  # latents drawn from the stored bank
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(gen, torch.randn(2, 8)), str(tmp_path / "scripted.pt"))
    assert load_prior(tmp_path / "scripted.pt", latent_dim=8, image_size=32).decode(z[:2]).shape == (2, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="no prior file"):
        load_prior(tmp_path / "missing.pt")
    torch.save({"weights": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'generator'"):
        load_prior(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'latents' must be"):
        load_prior(tmp_path / "module.pt", latent_dim=9)
    torch.save(torch.nn.Sequential(*gen.net), tmp_path / "plain.pt")  # a pickled module without latent_dim
    with pytest.raises(ValueError, match="latent size is unknown"):
        load_prior(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="decoding two latents"):  # fails at load, not mid-attack
        load_prior(tmp_path / "plain.pt", latent_dim=9)


def test_image_adapter_crops_the_centre_then_resizes():
    class Framed(torch.nn.Module):  # a 10x10 image: 0 on a 2-pixel border, 1 inside
        def forward(self, z):
            x = torch.zeros(len(z), 3, 10, 10)
            x[:, :, 2:8, 2:8] = 1
            return 2 * x - 1  # in [-1, 1]

    out = ImageAdapter(Framed(), image_size=4, crop=0.6, value_range=(-1, 1))(torch.zeros(2, 1))
    assert out.shape == (2, 3, 4, 4) and torch.allclose(out, torch.ones_like(out))
    full = ImageAdapter(Framed(), image_size=10, crop=0.6, value_range=(-1, 1))(torch.zeros(1, 1))
    assert full[0, 0, 0, 0] == 0  # the generator's size already: no crop
    with pytest.raises(ValueError, match="crop"):
        ImageAdapter(Framed(), crop=0)


def test_shape_check_runs_the_224_pipeline():
    table = hr.shape_check()
    values = dict(zip(table.check, table.value))
    assert values["SSD answers sum to 1"] == "True" and values["L1 change within eps * H(f(x))"] == "True"
    assert values["Mirror reconstructions of class 0"] == "(2, 3, 224, 224)"
    assert int(values["Mirror queries through BlackBox"]) > 0


def _faces(n_per_class: int, classes: int, name: str, seed: int):
    from ssdlib.data import FaceSet
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_per_class * classes, 3, 224, 224), generator=g, dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return FaceSet(images, labels, [f"{name.split('/')[0]}:{k}" for k in range(classes)], name)


@pytest.mark.slow
def test_paper_path_runs_end_to_end_on_toy_data(tmp_path, monkeypatch):
    """The `paper` branch, at the smallest members, on random 224-px faces and a toy prior file: every row trained,
    attacked through BlackBox and scored (the data and the scale's gate are the only things replaced)."""
    from ssdlib.data import PrivateData
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "cache"))
    private = PrivateData(_faces(4, 3, "lfw/train", 0), _faces(2, 3, "lfw/valid", 1), _faces(2, 3, "lfw/test", 2),
                          dataset="lfw")
    monkeypatch.setattr(hr, "private_data", lambda scale, seed=0, root=None: private)
    monkeypatch.setattr(hr.D, "public_set", lambda *a, **k: _faces(3, 4, "public", 3))
    monkeypatch.setattr(hr, "skip_reason", lambda scale, prior_path=None: None)
    monkeypatch.setitem(hr.PROTOCOL, "classes", 2)
    monkeypatch.setitem(hr.PROTOCOL, "per_class", 2)
    prior = hr.save_toy_prior(tmp_path / "prior.pt")
    attacks, utility = hr.high_resolution_tables("smoke", prior, rows=("none", "mid", "bido", "tl", "ssd"), device="cpu",
                                                 progress=False)
    assert list(attacks.row) == ["none", "mid", "bido", "tl", "ssd"] and list(utility.row) == list(attacks.row)
    assert attacks["acc@1"].between(0, 100).all() and (attacks["n"] == 4).all()
    assert utility.set_index("row").loc["none", "avg_l1"] == 0
    assert utility.set_index("row").loc["ssd", "avg_l1"] >= 0
    shown = hr.with_paper(utility, hr.paper_tables()[1], {"test_acc": "Acc (%)"})
    assert shown.set_index("row").loc["ssd", "paper test_acc"] == 96.9
