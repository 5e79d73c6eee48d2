"""How good the attacker's prior is, without downloads: face detection and nearest-public-image distance.

The rate at which dlib's frontal face detector finds a face in samples vs in real held-out public images (upscaled
to 200 px as :func:`ssdlib.data.measure_eye_positions` does), and the mean L2 distance (dlib 128-d embedding) from
samples, vs from held-out real images, to their nearest public training image.
"""
from __future__ import annotations

import numpy as np
import torch

from ..scales import budget
from .distances import nearest_distance

__all__ = ["QUALITY_SIZES", "face_detection_rate", "prior_quality"]

#: Samples and reference images used by :func:`prior_quality` per scale (dlib embeds ~4 images/s on 2 cores).
QUALITY_SIZES = {"smoke": dict(samples=16, reference=64), "cpu": dict(samples=200, reference=1000),
                 "paper": dict(samples=1000, reference=5000)}


def face_detection_rate(images: torch.Tensor, *, min_side: int = 200, upsample: int = 1) -> float:
    """Fraction of float images ``[N, 3, H, W]`` in [0, 1] in which dlib's frontal detector finds a face.

    Small images are upscaled (bicubic) to ``min_side`` px first, as :func:`ssdlib.data.measure_eye_positions` does,
    because the detector misses faces under ~80 px; ``upsample`` is the detector's own pyramid upsampling.
    """
    import dlib
    from PIL import Image
    if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"images must be a non-empty float tensor [N, 3, H, W], got {tuple(images.shape)}")
    detector = dlib.get_frontal_face_detector()
    arrs = images.detach().cpu().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    found = 0
    for arr in arrs:
        pil = Image.fromarray(arr)
        scale = max(1.0, min_side / min(pil.size))
        if scale > 1.0:
            pil = pil.resize((round(pil.size[0] * scale), round(pil.size[1] * scale)), Image.Resampling.BICUBIC)
        found += len(detector(np.ascontiguousarray(np.asarray(pil)), upsample)) > 0
    return found / len(arrs)


def prior_quality(prior, train_set, holdout, *, scale: str = "cpu", embedder=None, seed: int = 0,
                  n_samples: int | None = None, n_reference: int | None = None) -> dict:
    """Face-detection rate and nearest-public-image distance (dlib 128-d) of prior samples vs held-out real faces.

    ``train_set`` is what the prior saw (the reference images are a seeded subset of it), ``holdout`` real public
    images it did not see; ``n_samples`` samples and as many held-out images are judged (sizes: :data:`QUALITY_SIZES`).
    """
    sizes = budget(QUALITY_SIZES, scale)
    n = min(n_samples or sizes["samples"], len(holdout))
    m = min(n_reference or sizes["reference"], len(train_set))
    gen = torch.Generator().manual_seed(seed)
    samples = prior.decode(prior.sample(n, gen))
    real = holdout.float_images()[torch.randperm(len(holdout), generator=gen)[:n]]
    ref = train_set.float_images()[torch.sort(torch.randperm(len(train_set), generator=gen)[:m]).values]
    if embedder is None:
        from ..models.embedding import DlibEmbedder
        embedder = DlibEmbedder()
    e_ref, e_samples, e_real = embedder.embed(ref), embedder.embed(samples), embedder.embed(real)
    d_samples, d_real = nearest_distance(e_samples, e_ref), nearest_distance(e_real, e_ref)
    return {"detect_samples": face_detection_rate(samples), "detect_real": face_detection_rate(real),
            "nn_dist_samples": float(d_samples.mean()), "nn_dist_real": float(d_real.mean()),
            "nn_dist_samples_std": float(d_samples.std()), "nn_dist_real_std": float(d_real.std()),
            "n_samples": n, "n_reference": m}
