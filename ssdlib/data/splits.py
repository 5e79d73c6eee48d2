"""Private (train/valid/test, stratified per identity) and public (every other identity) face sets.

Private identities are those with at least ``min_images`` images (CelebA subset: 181, LFW: 62 at 20). LFW is
heavily imbalanced (George_W_Bush 530, Colin_Powell 236, ... down to 20), so by default at most 60 images per LFW
identity are used: the 62 classes then range 20..60 images (3:1 instead of 26:1) while 55 of them (all but
the 7 largest) keep every image; 2,155 of the 3,023 private LFW images are used.
Capped-out images stay private and unused; they never enter the public set. Splits are by identity, never by file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..scales import cap as dry_cap
from .faceset import FaceSet
from .sources import load_faces

PRIVATE_DATASETS = ("celeba", "lfw")
# Per-identity cap applied when max_per_identity is None (see the module docstring for why LFW gets 60).
DEFAULT_MAX_PER_IDENTITY = {"lfw": 60, "celeba": None}


@dataclass
class PrivateData:
    """The private train/valid/test FaceSets (same ``classes``), plus the images left out by the per-identity cap."""

    train: FaceSet
    valid: FaceSet
    test: FaceSet
    dataset: str
    n_capped: int = 0

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def _check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train > 0) summing to 1, got {fractions!r}")
    return fr


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Per-identity (train, valid, test) counts: valid/test rounded, at least one each when their fraction is > 0."""
    n_valid = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise ValueError(f"an identity with {n} images cannot be split {fractions}; raise min_images")
    return n_train, n_valid, n_test


def check_disjoint(public: FaceSet, *private: FaceSet) -> None:
    """Raise ValueError if any identity (namespaced name) of ``public`` is a class of a private set."""
    shared = set().union(*(set(public.classes) & set(p.classes) for p in private))
    if shared:
        raise ValueError(f"public and private sets share {len(shared)} identities, e.g. {sorted(shared)[:3]}")


def private_identities(faces: FaceSet, min_images: int = 20) -> list[str]:
    """Class names of ``faces`` with at least ``min_images`` images."""
    counts = faces.counts().tolist()
    return [c for c, n in zip(faces.classes, counts) if n >= min_images]


def private_split(dataset: str, root: str | os.PathLike | None = None, *, min_images: int = 20,
                  max_per_identity: int | None = None, max_identities: int | None = None, seed: int = 0,
                  fractions=(0.8, 0.1, 0.1), **load_kwargs) -> PrivateData:
    """Seeded train/valid/test split (stratified per identity) of the identities with >= ``min_images`` images.

    ``max_per_identity`` None means the data set's default cap (LFW 60, CelebA none); ``max_identities`` keeps the
    identities with the most images (ties by name), for small-scale runs. Labels index the sorted private names.
    """
    if dataset not in PRIVATE_DATASETS:
        raise ValueError(f"private data set must be one of {PRIVATE_DATASETS}, got {dataset!r}")
    if not isinstance(min_images, int) or min_images < 1:
        raise ValueError(f"min_images must be a positive integer, got {min_images!r}")
    cap = DEFAULT_MAX_PER_IDENTITY[dataset] if max_per_identity is None else max_per_identity
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ValueError(f"max_per_identity must be a positive integer or None, got {max_per_identity!r}")
    if max_identities is not None and (not isinstance(max_identities, int) or max_identities < 1):
        raise ValueError(f"max_identities must be a positive integer or None, got {max_identities!r}")
    fractions = _check_fractions(fractions)
    cap = dry_cap("images_per_identity", cap)  # the dry run loads every image but keeps a few per identity

    faces = load_faces(dataset, root, **load_kwargs)
    counts = faces.counts().tolist()
    chosen = [k for k, n in enumerate(counts) if n >= min_images]
    if not chosen:
        raise ValueError(f"no {dataset} identity has >= {min_images} images")
    if max_identities is not None:
        chosen = sorted(chosen, key=lambda k: (-counts[k], faces.classes[k]))[:max_identities]
    chosen.sort(key=lambda k: faces.classes[k])
    rng = np.random.default_rng(seed)
    labels = faces.labels.numpy()
    parts: list[list[int]] = [[], [], []]
    new_labels: list[list[int]] = [[], [], []]
    n_capped = 0
    for new, k in enumerate(chosen):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if cap is not None and len(idx) > cap:
            n_capped += len(idx) - cap
            idx = idx[:cap]
        n_train, n_valid, _ = _split_counts(len(idx), fractions)
        for p, sel in enumerate((idx[:n_train], idx[n_train:n_train + n_valid], idx[n_train + n_valid:])):
            parts[p] += sorted(sel.tolist())
            new_labels[p] += [new] * len(sel)
    classes = [faces.classes[k] for k in chosen]
    splits = []
    for p, split in enumerate(("train", "valid", "test")):
        idx = torch.tensor(parts[p], dtype=torch.int64)
        files = tuple(faces.files[i] for i in parts[p]) if faces.files else ()
        splits.append(FaceSet(faces.images[idx].contiguous(), torch.tensor(new_labels[p], dtype=torch.int64),
                              classes, f"{dataset}/{split}", files))
    return PrivateData(*splits, dataset=dataset, n_capped=n_capped)


def public_set(root: str | os.PathLike | None = None, *, min_images_private: int = 20, min_images: int = 1,
               max_images: int | None = None, seed: int = 0, datasets=PRIVATE_DATASETS, **load_kwargs) -> FaceSet:
    """Every image of every identity of ``datasets`` that is private in none (fewer than ``min_images_private`` images).

    ``min_images`` keeps identities with at least that many images (classification pretraining); ``max_images``
    draws a seeded random subset (small-scale runs). Labels index the sorted public identities present.
    """
    if not isinstance(min_images_private, int) or min_images_private < 1:
        raise ValueError(f"min_images_private must be a positive integer, got {min_images_private!r}")
    if not isinstance(min_images, int) or min_images < 1:
        raise ValueError(f"min_images must be a positive integer, got {min_images!r}")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
    loaded, origin, names, files, private = [], [], [], [], set()
    for d, dataset in enumerate(datasets):
        faces = load_faces(dataset, root, **load_kwargs)
        counts = faces.counts()
        private |= set(private_identities(faces, min_images_private))
        keep_class = (counts < min_images_private) & (counts >= min_images)
        idx = torch.nonzero(keep_class[faces.labels]).flatten()
        loaded.append(faces)
        origin += [(d, i) for i in idx.tolist()]
        names += [faces.classes[k] for k in faces.labels[idx].tolist()]
        files += [f"{dataset}/{faces.files[i]}" for i in idx.tolist()] if faces.files else [""] * len(idx)
    if not names:
        raise ValueError(f"no public identity in {datasets} with {min_images}..{min_images_private - 1} images")
    sel = np.arange(len(names))
    max_images = dry_cap("public_images", max_images)  # the dry run loads every image but keeps a seeded few
    if max_images is not None and max_images < len(names):
        sel = np.sort(np.random.default_rng(seed).choice(len(names), size=max_images, replace=False))
    classes = sorted({names[i] for i in sel})
    if private & set(classes):
        raise AssertionError(f"public set would contain private identities: {sorted(private & set(classes))[:3]}")
    index = {c: k for k, c in enumerate(classes)}
    labels = torch.tensor([index[names[i]] for i in sel], dtype=torch.int64)
    chunks = []  # gather only the selected images, data set by data set (origin is grouped by data set)
    for d, faces in enumerate(loaded):
        rows = [origin[i][1] for i in sel if origin[i][0] == d]
        chunks.append(faces.images[torch.tensor(rows, dtype=torch.int64)])
    return FaceSet(torch.cat(chunks).contiguous(), labels, classes, "public",
                   tuple(files[i] for i in sel) if all(files) else ())
