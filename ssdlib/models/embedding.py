"""dlib's pretrained 128-d face-recognition ResNet (99.38% on LFW) as an embedder of our 64x64 face crops.

From crop to dlib chip. dlib's descriptor expects a 150x150 chip aligned as ``dlib.get_face_chip`` does it
(5-point landmarks, padding 0.25). Our crops are already aligned (eyes at about (20.3, 33.9) and (42.9, 33.9) of
64x64), so the chip is one fixed square box of the crop: over 800 CelebA crops (40 identities x 20), the chip that
``get_face_chip`` cuts after dlib's 5-point predictor (run on the crop upsampled to 150 px, full-crop box) spans
x -0.51..64.61, y 13.05..78.17 of the 64 px crop (std about 2 px, angle std 0.07 rad), i.e. :data:`CHIP_BOX`; the
bottom 14 px (chin) lie outside the crop and are zero-padded, as ``get_face_chip`` does.
Measured on those 800 crops (10 train / 10 test images per identity): (a) landmarks + ``get_face_chip``:
nearest-centroid 97.0%, 1-NN 96.8%; (b) the fixed box: nearest-centroid 97.0%, 1-NN 97.5%; same-identity mean
distance 0.48 vs 0.80 for different identities in both. Equal accuracy, so (b) is used: it needs no landmark
model, cannot fail on odd (reconstructed) faces, and is batched (that measurement is how :data:`CHIP_BOX` was
chosen). dlib runs the descriptor on one thread, so :class:`DlibEmbedder` spreads batches over worker processes;
descriptors are bit-identical across batch sizes and worker counts (a test checks it).
"""
from __future__ import annotations

import importlib.util
import math
import multiprocessing as mp
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..cache import cached, fingerprint

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_DIM = 128
CHIP_SIZE = 150
# Mean dlib face-chip box in a crop of side 1: (left, top, side); measured as described in the module docstring.
CHIP_BOX = (-0.51 / 64, 13.05 / 64, 65.12 / 64)
INSTALL_HINT = "pip install dlib-bin face-recognition-models (the ssdlib[faces] extra)"


def default_model_path() -> Path:
    """Path of dlib's face-recognition ResNet inside the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package face_recognition_models is not installed; {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE


def check_images(images) -> torch.Tensor:
    """Validate float images ``[N, 3, H, W]`` (square) in [0, 1] (tensor or array); return a CPU float32 tensor."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch tensor or numpy array, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0, 1], got dtype {images.dtype} (use FaceSet.float_images())")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or images.shape[2] < 8:
        raise ValueError(f"images must have shape [N, 3, S, S] (square RGB, S >= 8), got {tuple(images.shape)}")
    images = images.detach().to("cpu", torch.float32)
    if images.numel():
        lo, hi = (float(v) for v in torch.aminmax(images))  # one pass; a NaN or an infinity reaches min or max
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("images contain NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return images.contiguous()


def to_chips(images: torch.Tensor, size: int = CHIP_SIZE, box=CHIP_BOX) -> np.ndarray:
    """Cut the fixed dlib chip box out of aligned crops (zero padding outside): uint8 ``[N, size, size, 3]``."""
    images = check_images(images)
    left, top, side = box
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gx = 2 * (left + lin * side) - 1  # normalised coordinates, align_corners=False
    gy = 2 * (top + lin * side) - 1
    grid = torch.stack((gx.expand(size, size), gy[:, None].expand(size, size)), dim=-1)
    chips = F.grid_sample(images, grid.expand(len(images), size, size, 2), mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return chips.mul_(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


_WORKER_MODEL = None


def _worker_init(model_path: str) -> None:
    global _WORKER_MODEL
    import dlib
    _WORKER_MODEL = dlib.face_recognition_model_v1(model_path)


def _worker_describe(chips: np.ndarray) -> np.ndarray:
    return _describe(_WORKER_MODEL, chips)


def _describe(model, chips: np.ndarray) -> np.ndarray:
    """Descriptors of a batch of 150x150 chips with dlib's batch API, float32 ``[n, 128]``."""
    out = model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], 0)
    return np.asarray([np.asarray(v) for v in out], dtype=np.float32).reshape(len(chips), EMBEDDING_DIM)


class DlibEmbedder:
    """Maps float face crops ``[N, 3, S, S]`` in [0, 1] to dlib's 128-d descriptors (torch float32 ``[N, 128]``).

    Results of calls with at least ``min_cache`` images are cached (``ssdlib.cache``, kind "embeddings") keyed by
    the image bytes, so re-embedding a private set is free; ``num_workers`` processes share large calls.
    """

    dim = EMBEDDING_DIM

    def __init__(self, model_path: str | os.PathLike | None = None, *, batch_size: int = 32,
                 num_workers: int | None = None, cache: bool = True, min_cache: int = 64, progress: bool | None = None):
        try:
            import dlib
        except ImportError as err:
            raise ImportError(f"dlib is not installed; {INSTALL_HINT}") from err
        self.model_path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"dlib face-recognition model not found at {self.model_path}; {INSTALL_HINT}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1)
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cache, self.min_cache, self.progress = bool(cache), int(min_cache), progress
        self.model = dlib.face_recognition_model_v1(str(self.model_path))
        stat = self.model_path.stat()
        self._model_key = f"{self.model_path.name}:{stat.st_size}:{CHIP_SIZE}:{CHIP_BOX}"

    def __repr__(self) -> str:
        return f"DlibEmbedder(model_path='{self.model_path}', num_workers={self.num_workers})"

    def cache_config(self, images: torch.Tensor) -> dict:
        """What an embedding depends on: the model file, the chip geometry and the (float32) image bytes."""
        return {"model": self._model_key, "images": fingerprint(images, length=24)}

    def embed(self, images, *, cache: bool | None = None, progress: bool | None = None) -> torch.Tensor:
        """Embed float images ``[N, 3, S, S]`` in [0, 1] (tensor or array): float32 tensor ``[N, 128]``.
        ``cache`` None: cache calls of at least ``min_cache`` images (if the embedder caches); True: cache this
        call whatever its size (e.g. an attack's reconstructions, re-read by later tables); False: never."""
        images = check_images(images)
        if len(images) == 0:
            return torch.zeros(0, EMBEDDING_DIM)
        use = (self.cache and len(images) >= self.min_cache) if cache is None else bool(cache)
        if not use:
            return torch.from_numpy(self._compute(images, progress))
        payload, _ = cached("embeddings", self.cache_config(images),
                            lambda _: {"embeddings": torch.from_numpy(self._compute(images, progress))})
        return payload["embeddings"]

    __call__ = embed

    def embed_faceset(self, faceset, **kwargs) -> torch.Tensor:
        """Embed every image of a ``ssdlib.data.FaceSet``."""
        return self.embed(faceset.float_images(), **kwargs)

    def _compute(self, images: torch.Tensor, progress: bool | None) -> np.ndarray:
        progress = self.progress if progress is None else progress
        progress = len(images) >= 256 if progress is None else progress
        starts = range(0, len(images), self.batch_size)
        chunks = (to_chips(images[s:s + self.batch_size]) for s in starts)
        bar = tqdm(total=len(images), desc="dlib embedding", unit="img", disable=not progress)
        out = []
        try:
            if self.num_workers > 1 and len(images) >= 2 * self.batch_size:
                method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
                with ProcessPoolExecutor(self.num_workers, mp_context=mp.get_context(method),
                                         initializer=_worker_init, initargs=(str(self.model_path),)) as pool:
                    pending = deque()  # at most 2 batches per worker in flight, so chips never pile up in memory
                    for chips in chunks:
                        pending.append(pool.submit(_worker_describe, chips))
                        if len(pending) >= 2 * self.num_workers:
                            out.append(pending.popleft().result())
                            bar.update(len(out[-1]))
                    while pending:
                        out.append(pending.popleft().result())
                        bar.update(len(out[-1]))
            else:
                for chips in chunks:
                    out.append(_describe(self.model, chips))
                    bar.update(len(chips))
        finally:
            bar.close()
        return np.concatenate(out)
