"""Model families: shapes of logits, features and hidden activations at every scale; the factory's errors."""
import os

import pytest
import torch

from ssdlib.models import (ARCHITECTURES, FAMILIES, IRNet, VGG16BN, build_model, count_parameters, ir152,
                           vgg16_bn)


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_shapes(family, scale):
    torch.manual_seed(0)
    model = build_model(family, 7, scale).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        hiddens, logits2 = model.forward_hidden(x)
    assert logits.shape == (3, 7)
    assert feats.shape == (3, model.feat_dim)
    assert model.classifier.in_features == model.feat_dim and model.classifier.out_features == 7
    torch.testing.assert_close(model.classifier(feats), logits)
    torch.testing.assert_close(logits2, logits)
    assert len(hiddens) == 5 and all(h.shape[0] == 3 for h in hiddens)
    torch.testing.assert_close(hiddens[-1], feats)  # the last hidden activation is the penultimate feature


def test_normalisation_inside_model():
    model = build_model("vgg16", 3, "smoke").eval()
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(2, 1, 64, 64))
    # constant mid-grey input maps to zeros after normalisation: the first conv sees only its bias
    x = torch.full((1, 3, 64, 64), 0.5)
    assert torch.allclose(model.normalize(x), torch.zeros(1, 3, 32, 32))


def test_paper_members_are_the_papers_architectures():
    vgg = vgg16_bn(10)
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and convs[-1].out_channels == 512 and vgg.feat_dim == 512 * 2 * 2
    assert ARCHITECTURES[("ir152", "paper")]["stages"] == (3, 8, 36, 3)
    with torch.device("meta"):  # instantiate IR-152 without allocating its 62M parameters
        net = ir152(10)
    units = sum(len(stage) for stage in net.body)
    assert units == 50 and net.feat_dim == 512
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * 50 + 3  # stem, two per unit, projections where the width grows (3 stages)
    assert count_parameters(net) > 50e6


def test_vgg16_paper_forward():
    model = vgg16_bn(5).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.skipif(not os.environ.get("SSD_SLOW_TESTS"), reason="IR-152 forward takes ~10 s on CPU; set SSD_SLOW_TESTS=1")
def test_ir152_paper_forward():
    model = ir152(5).eval()
    with torch.no_grad():
        hiddens, logits = model.forward_hidden(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 5) and hiddens[-1].shape == (2, 512)


def test_bad_arguments():
    with pytest.raises(ValueError, match="family"):
        build_model("resnet", 10, "cpu")
    with pytest.raises(ValueError, match="scale"):
        build_model("vgg16", 10, "huge")
    with pytest.raises(ValueError, match="num_classes"):
        VGG16BN(1)
    with pytest.raises(ValueError, match="stages"):
        IRNet(10, stages=(1, 1), widths=(8,))
    with pytest.raises(ValueError, match="divisible"):
        IRNet(10, stages=(1, 1, 1, 1), widths=(4, 4, 4, 4), image_size=40)
