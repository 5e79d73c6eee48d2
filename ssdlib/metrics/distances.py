"""Feature distances from images to private ones: the nearest private image of the same class, or its centroid."""
from __future__ import annotations

import torch

from ..models.embedding import DlibEmbedder, check_images
from ..data.faceset import check_faceset, check_labels


def _class_distances(images, labels, private_set, embedder, reduce: str) -> torch.Tensor:
    private_set = check_faceset(private_set, "private_set")
    embedder = embedder or DlibEmbedder()
    emb = embedder.embed(check_images(images))
    labels = check_labels(labels, len(emb), private_set.num_classes)
    ref = embedder.embed_faceset(private_set)
    out = torch.full((len(emb),), float("nan"))
    for c in labels.unique().tolist():
        mine, theirs = labels == c, ref[private_set.labels == c]
        if len(theirs) == 0:
            raise ValueError(f"private_set has no image of class {c} ({private_set.classes[c]})")
        if reduce == "knn":
            out[mine] = torch.cdist(emb[mine], theirs, compute_mode="donot_use_mm_for_euclid_dist").min(1).values  # exact 0 for copies
        else:
            out[mine] = (emb[mine] - theirs.mean(0)).norm(dim=1)
    return out


def knn_distance(images, labels, private_set, embedder: DlibEmbedder | None = None) -> torch.Tensor:
    """Per-image L2 distance (dlib embedding) to the nearest private image of its class ("KNN Dist"), ``[N]``."""
    return _class_distances(images, labels, private_set, embedder, "knn")


def centroid_distance(images, labels, private_set, embedder: DlibEmbedder | None = None) -> torch.Tensor:
    """Per-image L2 distance (dlib embedding) to the mean private embedding of its class, ``[N]``."""
    return _class_distances(images, labels, private_set, embedder, "centroid")
