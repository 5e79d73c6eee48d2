"""In-memory face sets (uint8 images, integer labels, namespaced identity names) and their torch Dataset view."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


@dataclass
class FaceSet:
    """Face images ``[N, 3, H, W]`` uint8 with labels ``[N]`` int64 indexing ``classes`` (names like ``"lfw:Name"``).

    ``files`` names each image's source file (relative path), so splits can be checked for shared images.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    files: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4 \
                or self.images.shape[1] != 3:
            raise ValueError(f"FaceSet images must be a uint8 tensor [N, 3, H, W], got "
                             f"{getattr(self.images, 'dtype', type(self.images))} {tuple(getattr(self.images, 'shape', ()))}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 \
                or self.labels.shape != (len(self.images),):
            raise ValueError(f"FaceSet labels must be an int64 tensor [{len(self.images)}], got "
                             f"{getattr(self.labels, 'dtype', type(self.labels))} {tuple(getattr(self.labels, 'shape', ()))}")
        self.classes = list(self.classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"FaceSet labels must lie in 0..{len(self.classes) - 1} (one per class name)")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("FaceSet class names must be unique")
        self.files = tuple(self.files)
        if self.files and len(self.files) != len(self.images):
            raise ValueError(f"FaceSet files must name each of the {len(self.images)} images, got {len(self.files)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> torch.Tensor:
        """Number of images of each class, ``[num_classes]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices, name: str | None = None) -> FaceSet:
        """The images at ``indices`` (same classes and labels), e.g. one split of this set."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64).reshape(-1)
        if len(idx) and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise ValueError(f"subset indices out of range for a FaceSet of {len(self)} images")
        files = tuple(self.files[i] for i in idx.tolist()) if self.files else ()
        return FaceSet(self.images[idx].contiguous(), self.labels[idx].clone(), list(self.classes),
                       name or self.name, files)

    def float_images(self) -> torch.Tensor:
        """Images as float32 in [0, 1], the input convention of every model and embedder."""
        return self.images.float().div_(255.0)


def augment(image: torch.Tensor, *, min_scale: float = 0.85, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip plus a random square crop of ``min_scale``..1 of the side, resized back (float ``[3, H, W]``)."""
    if torch.rand((), generator=generator) < 0.5:
        image = image.flip(-1)
    height, width = image.shape[-2:]
    scale = min_scale + (1.0 - min_scale) * float(torch.rand((), generator=generator))
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(torch.randint(0, height - ch + 1, (), generator=generator))
    left = int(torch.randint(0, width - cw + 1, (), generator=generator))
    crop = image[:, top:top + ch, left:left + cw]
    if (ch, cw) == (height, width):
        return crop
    return F.interpolate(crop[None], size=(height, width), mode="bilinear", align_corners=False)[0].clamp_(0, 1)


class FaceDataset(Dataset):
    """Torch Dataset over a FaceSet yielding ``(float image [3, H, W] in [0, 1], label)``, optionally augmented."""

    def __init__(self, faceset: FaceSet, augment: bool = False):
        if not isinstance(faceset, FaceSet):
            raise ValueError(f"FaceDataset needs a FaceSet, got {type(faceset).__name__}")
        self.faceset = faceset
        self.augment = bool(augment)

    def __len__(self) -> int:
        return len(self.faceset)

    def __getitem__(self, index: int):
        image = self.faceset.images[index].float().div_(255.0)
        if self.augment:
            image = augment(image)
        return image, int(self.faceset.labels[index])


def check_faceset(faceset, what: str) -> "FaceSet":
    """``faceset`` if it is a non-empty FaceSet-like object, else a ValueError naming ``what``."""
    if not all(hasattr(faceset, a) for a in ("images", "labels", "classes", "float_images")):
        raise ValueError(f"{what} must be a ssdlib.data.FaceSet, got {type(faceset).__name__}")
    if len(faceset) == 0:
        raise ValueError(f"{what} is empty")
    return faceset


def check_labels(labels, n: int, num_classes: int) -> torch.Tensor:
    """``n`` integer labels in 0..num_classes-1 as a CPU int64 tensor, else a ValueError saying what is wrong."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).cpu()
    if labels.is_floating_point() or labels.shape != (n,):
        raise ValueError(f"labels must be {n} integers (one per image), got {labels.dtype} {tuple(labels.shape)}")
    labels = labels.long()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return labels
