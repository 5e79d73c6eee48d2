"""Distances from features to reference features: the nearest reference row, the nearest one of the same class,
and the dlib-embedding distance of images to the nearest private image of their class ("KNN Dist").

The one place where "distance to the nearest image" is computed: the attack metrics (delta_eval, delta_face), the
prior's quality figure and the evaluation chapter all call :func:`nearest_distance`. Distances are exact
(``cdist`` without the matrix-product shortcut), so an image's distance to its own copy is 0.
"""
from __future__ import annotations

import torch

from ..data.faceset import check_faceset, check_labels
from ..models.embedding import DlibEmbedder, check_images

__all__ = ["nearest_distance", "nearest_class_distance", "knn_distance"]


def nearest_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-row L2 distance (not squared) from ``features`` ``[N, D]`` to the nearest row of ``reference`` ``[M, D]``.

    >>> nearest_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]]))
    tensor([1., 4.])
    """
    if features.dim() != 2 or reference.dim() != 2 or features.shape[1] != reference.shape[1] or not len(reference):
        raise ValueError(f"features [N, D] and a non-empty reference [M, D] needed, got {tuple(features.shape)} and "
                         f"{tuple(reference.shape)}")
    return torch.cdist(features.float().cpu(), reference.float().cpu(),
                       compute_mode="donot_use_mm_for_euclid_dist").min(1).values


def _labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).cpu()
    if labels.is_floating_point() or labels.shape != (n,):
        raise ValueError(f"labels must be {n} integers (one class per row), got {labels.dtype} {tuple(labels.shape)}")
    return labels.long()


def nearest_class_distance(features: torch.Tensor, labels, ref_features: torch.Tensor, ref_labels) -> torch.Tensor:
    """Per-row L2 distance (not squared) from ``features`` ``[N, D]`` to the nearest reference row of its class."""
    if features.dim() != 2 or ref_features.dim() != 2 or features.shape[1] != ref_features.shape[1]:
        raise ValueError(f"features [N, D] and reference features [M, D] needed, got {tuple(features.shape)} and "
                         f"{tuple(ref_features.shape)}")
    labels, ref_labels = _labels(labels, len(features)), _labels(ref_labels, len(ref_features))
    out = torch.empty(len(features))
    for c in labels.unique().tolist():
        mine, theirs = labels == c, ref_labels == c
        if not theirs.any():
            raise ValueError(f"no reference (private training) image of class {c}")
        out[mine] = nearest_distance(features[mine], ref_features[theirs])
    return out


def knn_distance(images, labels, private_set, embedder: DlibEmbedder | None = None) -> torch.Tensor:
    """Per-image L2 distance (dlib embedding) to the nearest private image of its class ("KNN Dist"), ``[N]``."""
    private_set = check_faceset(private_set, "private_set")
    embedder = embedder or DlibEmbedder()
    emb = embedder.embed(check_images(images))
    labels = check_labels(labels, len(emb), private_set.num_classes)
    return nearest_class_distance(emb, labels, embedder.embed_faceset(private_set), private_set.labels)
