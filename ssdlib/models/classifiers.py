"""Target-model families of the paper (VGG-16-BN, IR-152 for 64x64 faces; ResNet-152 for its 224x224 tables), with
smaller members per scale.

Every model takes float images in [0, 1] of shape ``[N, 3, 64, 64]`` (``[N, 3, 224, 224]`` for ResNet-152) and
normalises them inside.
``model(x)`` gives logits, ``model.forward_features(x)`` the penultimate features, ``model.classifier``
is the final linear layer and ``model.forward_hidden(x)`` returns ``(hidden_activations, logits)``
(one activation per stage, the last being the penultimate feature) for BiDO's HSIC terms.
"""
from __future__ import annotations

import torch
from torch import nn

from ..scales import check_scale

FAMILIES = ("ir152", "vgg16", "resnet152")

# One table of architectures: (family, scale) -> constructor keyword arguments.
#  vgg16: ``width`` = channels of the first stage (x1, x2, x4, x8, x8 for the five stages);
#         ``convs`` = 3x3 convolutions per stage ((2, 2, 3, 3, 3) is VGG-16).
#  ir152: ``stages`` = bottleneck_IR units per stage ((3, 8, 36, 3) is IR-152); ``widths`` per stage;
#         ``feat_dim`` = size of the embedding produced by the output layer (512 in the paper).
#  both:  ``downsample`` = the model average-pools its 64x64 input by this factor first (cpu/smoke members
#         see 32x32 faces: a step about 4x cheaper, which is what fits a few minutes of CPU per target).
# The cpu members were chosen for the 2-core budget: the full VGG-16 depth at this width trained far worse in the
# same time than the shallower member kept here, and 64x64 inputs cost 3.5-4x per step.
ARCHITECTURES: dict[tuple[str, str], dict] = {
    ("vgg16", "paper"): dict(width=64, convs=(2, 2, 3, 3, 3)),
    ("vgg16", "cpu"): dict(width=16, convs=(1, 1, 2, 2, 2), downsample=2),
    ("vgg16", "smoke"): dict(width=4, convs=(1, 1, 1, 1, 1), downsample=2),
    ("ir152", "paper"): dict(stages=(3, 8, 36, 3), widths=(64, 128, 256, 512), feat_dim=512),
    ("ir152", "cpu"): dict(stages=(1, 2, 2, 1), widths=(16, 32, 64, 128), feat_dim=256, downsample=2),
    ("ir152", "smoke"): dict(stages=(1, 1, 1, 1), widths=(4, 8, 16, 16), feat_dim=32, downsample=2),
    # resnet152: the 224x224 target of the paper's Tables 10/11 (``stages`` of bottlenecks, ``widths`` before the
    # x4 expansion); any input size works (global average pooling), so the family also runs on 64x64 faces.
    ("resnet152", "paper"): dict(stages=(3, 8, 36, 3), widths=(64, 128, 256, 512)),
    ("resnet152", "cpu"): dict(stages=(1, 2, 2, 1), widths=(8, 16, 32, 64), downsample=2),
    ("resnet152", "smoke"): dict(stages=(1, 1, 1, 1), widths=(4, 4, 8, 8)),
}


class _Normalize(nn.Module):
    """Map [0, 1] images to [-1, 1] (and average-pool them by ``downsample``), so callers never normalise."""

    def __init__(self, downsample: int = 1):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape [N, 3, H, W], got {tuple(x.shape)}")
        x = (x - 0.5) / 0.5
        return nn.functional.avg_pool2d(x, self.downsample) if self.downsample > 1 else x


class _FaceClassifier(nn.Module):
    """Shared API: logits from features through ``classifier``; subclasses define ``forward_hidden``."""

    feat_dim: int
    num_classes: int
    classifier: nn.Linear

    def forward_hidden(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, feat_dim]`` (the input of ``classifier``)."""
        return self._features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._features(x))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class VGG16BN(_FaceClassifier):
    """VGG-16 with batch norm for 64x64 inputs, as in model-inversion work: five conv stages with max-pooling,
    the flattened 2x2 map (``8 * width * 4`` features) batch-normalised, then a linear classifier."""

    def __init__(self, num_classes: int, width: int = 64, convs: tuple[int, ...] = (2, 2, 3, 3, 3),
                 image_size: int = 64, downsample: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if width < 1 or len(convs) != 5 or min(convs) < 1:
            raise ValueError(f"VGG16BN needs width >= 1 and five stages of >= 1 conv, got {width}, {convs}")
        if downsample < 1 or image_size % (32 * downsample):
            raise ValueError(f"image_size {image_size} must be a multiple of 32 * downsample ({downsample})")
        self.num_classes = num_classes
        self.normalize = _Normalize(downsample)
        image_size //= downsample
        channels = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        stages, c_in = [], 3
        for c_out, n in zip(channels, convs):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        side = image_size // 32
        self.feat_dim = channels[-1] * side * side
        self.bn = nn.BatchNorm1d(self.feat_dim)
        self.classifier = nn.Linear(self.feat_dim, num_classes)

    def forward_hidden(self, x):
        hiddens, h = [], self.normalize(x)
        for stage in self.stages:
            h = stage(h)
            hiddens.append(h)
        feat = self.bn(h.flatten(1))
        hiddens[-1] = feat
        return hiddens, self.classifier(feat)

    def _features(self, x):
        h = self.normalize(x)
        for stage in self.stages:
            h = stage(h)
        return self.bn(h.flatten(1))


class BottleneckIR(nn.Module):
    """face.evoLVe's ``bottleneck_IR``: BN-conv3x3-PReLU-conv3x3(stride)-BN plus a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_in == c_out:
            self.shortcut: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.residual = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class IRNet(_FaceClassifier):
    """Improved-residual ResNet (IR-50/101/152 of face.evoLVe/InsightFace) for 64x64 inputs: input
    conv3x3-BN-PReLU, stages of bottleneck_IR units (first unit strides 2), output layer
    BN-Dropout-Flatten-Linear-BN1d giving a ``feat_dim`` embedding, then a linear classifier."""

    def __init__(self, num_classes: int, stages: tuple[int, ...] = (3, 8, 36, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512), feat_dim: int = 512, image_size: int = 64,
                 dropout: float = 0.5, downsample: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if len(stages) != len(widths) or not stages or min(stages) < 1 or min(widths) < 1:
            raise ValueError(f"stages and widths must be equally long positive tuples, got {stages}, {widths}")
        if downsample < 1 or image_size % (downsample * 2 ** len(stages)):
            raise ValueError(f"image_size {image_size} is not divisible by downsample * 2**{len(stages)}")
        side = image_size // (downsample * 2 ** len(stages))
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.normalize = _Normalize(downsample)
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0]))
        body, c_in = [], widths[0]
        for n, c_out in zip(stages, widths):
            units = [BottleneckIR(c_in, c_out, 2)] + [BottleneckIR(c_out, c_out, 1) for _ in range(n - 1)]
            body.append(nn.Sequential(*units))
            c_in = c_out
        self.body = nn.ModuleList(body)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(c_in), nn.Dropout(dropout), nn.Flatten(),
                                          nn.Linear(c_in * side * side, feat_dim), nn.BatchNorm1d(feat_dim))
        self.classifier = nn.Linear(feat_dim, num_classes)

    def forward_hidden(self, x):
        hiddens, h = [], self.input_layer(self.normalize(x))
        for stage in self.body:
            h = stage(h)
            hiddens.append(h)
        feat = self.output_layer(h)
        hiddens.append(feat)
        return hiddens, self.classifier(feat)

    def _features(self, x):
        h = self.input_layer(self.normalize(x))
        for stage in self.body:
            h = stage(h)
        return self.output_layer(h)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck: conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1 (x4 channels)-BN, plus a
    (projected) shortcut, then ReLU."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.residual(x) + self.shortcut(x))


class ResNet(_FaceClassifier):
    """ResNet-50/101/152 (He et al.; torchvision's layout) for 224x224 inputs, the target of the paper's
    high-resolution Tables 10/11: conv7x7/2-BN-ReLU-maxpool stem, stages of bottlenecks (stages 2-4 stride 2),
    global average pooling (``feat_dim = 4 * widths[-1]``), then a linear classifier."""

    def __init__(self, num_classes: int, stages: tuple[int, ...] = (3, 8, 36, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512), downsample: int = 1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if len(stages) != len(widths) or not stages or min(stages) < 1 or min(widths) < 1:
            raise ValueError(f"stages and widths must be equally long positive tuples, got {stages}, {widths}")
        self.num_classes = num_classes
        self.normalize = _Normalize(downsample)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        body, c_in = [], widths[0]
        for i, (n, width) in enumerate(zip(stages, widths)):
            units = [Bottleneck(c_in, width, 1 if i == 0 else 2)]
            c_in = width * Bottleneck.expansion
            units += [Bottleneck(c_in, width, 1) for _ in range(n - 1)]
            body.append(nn.Sequential(*units))
        self.body = nn.ModuleList(body)
        self.feat_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)

    def forward_hidden(self, x):
        hiddens, h = [], self.stem(self.normalize(x))
        for stage in self.body:
            h = stage(h)
            hiddens.append(h)
        feat = h.mean((2, 3))
        hiddens.append(feat)
        return hiddens, self.classifier(feat)

    def _features(self, x):
        h = self.stem(self.normalize(x))
        for stage in self.body:
            h = stage(h)
        return h.mean((2, 3))


def resnet152(num_classes: int, **kwargs) -> ResNet:
    """ResNet-152 as in the paper's 224x224 experiments: bottleneck stages (3, 8, 36, 3), 2048-d features."""
    return ResNet(num_classes, **{**ARCHITECTURES[("resnet152", "paper")], **kwargs})


def ir152(num_classes: int, **kwargs) -> IRNet:
    """IR-152 as in the paper: stages (3, 8, 36, 3), widths (64, 128, 256, 512), 512-d embedding."""
    return IRNet(num_classes, **{**ARCHITECTURES[("ir152", "paper")], **kwargs})


def vgg16_bn(num_classes: int, **kwargs) -> VGG16BN:
    """VGG-16-BN as in the paper (64 base channels, 2-2-3-3-3 convolutions)."""
    return VGG16BN(num_classes, **{**ARCHITECTURES[("vgg16", "paper")], **kwargs})


def build_model(family: str, num_classes: int, scale: str = "cpu", **overrides) -> nn.Module:
    """Build the ``family`` member for ``scale`` from ``ARCHITECTURES`` (``overrides`` replace table entries).

    >>> import torch
    >>> model = build_model("vgg16", num_classes=10, scale="smoke")
    >>> model(torch.rand(2, 3, 64, 64)).shape  # logits of 64x64 face crops
    torch.Size([2, 10])
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    check_scale(scale)
    kwargs = {**ARCHITECTURES[(family, scale)], **overrides}
    return {"ir152": IRNet, "vgg16": VGG16BN, "resnet152": ResNet}[family](num_classes, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters, for size tables.

    >>> import torch
    >>> count_parameters(torch.nn.Linear(4, 3))
    15
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
