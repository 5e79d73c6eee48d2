"""Face crops in relative frame coordinates, JPEG decoding to square uint8 arrays, and the eye measurement behind the crops.

Crop boxes are ``(left, top, right, bottom)`` as fractions of the image width/height, so the same box serves the
official full-size frames and the half-resolution copies in ``../shared/data``.

Measured with :func:`measure_eye_positions` (dlib frontal detector + 5-point landmarks; see ``data/README.md``)
on 200 images per data set drawn by :func:`ssdlib.data.sample_frames` (seed 0); faces found: CelebA 197, LFW 200.

* CelebA aligned (subset, 89x109 = the 178x218 frame halved): mean eye centres at (0.3888, 0.5150) and
  (0.6036, 0.5150) of the frame = (69.2, 112.3), (107.4, 112.3) px of 178x218. The usual central 108x108 box
  at (35, 55) puts them at (20.3, 33.9) and (42.9, 33.9) of the 64x64 output, inter-ocular distance 22.7 px.
* LFW deep-funneled 250x250: mean eye centres at (0.4162, 0.4553) and (0.5801, 0.4514) of the frame
  = (104.0, 113.8), (145.0, 112.9) px, inter-ocular distance 41.0 px. :func:`fit_crop` gives the square box
  ``LFW_CROP`` = 115.9x115.9 px at (67.3, 51.9), which puts them at (20.3, 34.2) and (42.9, 33.7), distance 22.7 px.
"""
from __future__ import annotations

import importlib.util
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

Box = tuple[float, float, float, float]

FULL_FRAME: Box = (0.0, 0.0, 1.0, 1.0)
# Usual model-inversion crop of aligned CelebA: the 108x108 box at (35, 55) of the 178x218 frame.
CELEBA_CROP: Box = (35 / 178, 55 / 218, 143 / 178, 163 / 218)
# Fitted by fit_crop(CELEBA_EYES_64, LFW_FRAME_EYES) from the measurement in the module docstring.
LFW_CROP: Box = (0.2693, 0.2076, 0.7328, 0.6710)
# Measured mean eye centres (image-left, image-right) of the CelebA crop, in 64x64 output pixels.
CELEBA_EYES_64 = ((20.27, 33.94), (42.92, 33.94))
# Measured mean eye centres of LFW deep-funneled, in relative coordinates of the 250x250 frame.
LFW_FRAME_EYES = ((0.4162, 0.4553), (0.5801, 0.4514))


def check_box(box: Sequence[float]) -> Box:
    """Validate a relative crop box ``(left, top, right, bottom)`` inside the unit frame and return it as floats."""
    if len(box) != 4:
        raise ValueError(f"crop box must have 4 numbers (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (float(v) for v in box)
    if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
        raise ValueError(f"crop box {box!r} must satisfy 0 <= left < right <= 1 and 0 <= top < bottom <= 1 "
                         "(fractions of the image width/height)")
    return left, top, right, bottom


def open_rgb(data: bytes, what: str) -> Image.Image:
    """Decode image bytes fully into an RGB PIL image; a corrupt or truncated file raises ValueError naming ``what``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {what}: {err}. The file is corrupt or truncated; "
                         "re-extract or re-download the data set.") from err


def crop_resize(image: Image.Image, box: Box, size: int) -> np.ndarray:
    """Crop the relative ``box`` of ``image`` and resize it (antialiased bilinear) to a uint8 ``[3, size, size]`` array."""
    width, height = image.size
    left, top, right, bottom = box
    pixels = (left * width, top * height, right * width, bottom * height)
    out = image.resize((size, size), Image.Resampling.BILINEAR, box=pixels)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


def decode_crop(data: bytes, box: Box, size: int, what: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG bytes and return the cropped, resized uint8 ``[3, size, size]`` array."""
    return crop_resize(open_rgb(data, what), box, size)


def predictor_path() -> Path:
    """Path of dlib's 5-point landmark model shipped by the ``face_recognition_models`` package (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package face_recognition_models is not installed (pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.is_file():
        raise FileNotFoundError(f"dlib landmark model not found at {path}")
    return path


@dataclass(frozen=True)
class EyeStats:
    """Mean eye centres (image-left, image-right) in relative image coordinates, and how many faces were found."""

    left: tuple[float, float]
    right: tuple[float, float]
    iod: float  # mean inter-ocular distance as a fraction of the image width
    n_images: int
    n_found: int

    def pixels(self, width: int, height: int | None = None) -> dict:
        """The same statistics in pixels of a ``width`` x ``height`` image."""
        height = width if height is None else height
        return {"left": (self.left[0] * width, self.left[1] * height),
                "right": (self.right[0] * width, self.right[1] * height),
                "iod": self.iod * width, "n_images": self.n_images, "n_found": self.n_found}


def measure_eye_positions(images: Iterable, *, min_side: int = 200) -> EyeStats:
    """Mean eye centres of the largest face in each image (dlib detector + 5-point landmarks), relative to image size.

    ``images``: uint8 arrays ``[H, W, 3]``, a uint8 tensor/array ``[N, 3, H, W]``, or PIL images. Small images are
    upscaled to ``min_side`` pixels first because dlib's detector misses faces under ~80 px.
    """
    import dlib  # optional dependency (extra "faces"), imported only for the measurement

    if hasattr(images, "ndim") and getattr(images, "ndim") == 4:
        images = [np.asarray(im).transpose(1, 2, 0) for im in images]
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path()))
    lefts, rights, iods = [], [], []
    n_images = 0
    for image in images:
        n_images += 1
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        pil = pil.convert("RGB")
        width, height = pil.size
        scale = max(1.0, min_side / min(width, height))
        if scale > 1.0:
            pil = pil.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
        sx, sy = pil.size[0] / width, pil.size[1] / height
        arr = np.ascontiguousarray(np.asarray(pil))
        faces = detector(arr, 1)
        if len(faces) == 0:
            continue
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = predictor(arr, face)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
        pts /= (sx, sy)
        eyes = sorted([pts[0:2].mean(0), pts[2:4].mean(0)], key=lambda p: p[0])
        lefts.append(eyes[0] / (width, height))
        rights.append(eyes[1] / (width, height))
        iods.append(math.hypot(*(eyes[1] - eyes[0])) / width)
    if not lefts:
        raise ValueError(f"no face found in any of the {n_images} images given to measure_eye_positions")
    left, right = np.mean(lefts, 0), np.mean(rights, 0)
    return EyeStats((float(left[0]), float(left[1])), (float(right[0]), float(right[1])),
                    float(np.mean(iods)), n_images, len(lefts))


def map_to_crop(point: Sequence[float], box: Box, size: int) -> tuple[float, float]:
    """Where a point in relative frame coordinates lands in the ``size`` x ``size`` output of ``box``."""
    left, top, right, bottom = box
    return ((point[0] - left) / (right - left) * size, (point[1] - top) / (bottom - top) * size)


def fit_crop(target_eyes, frame_eyes, *, size: int = 64, frame_aspect: float = 1.0) -> Box:
    """Crop box giving square output pixels that maps mean eye centres ``frame_eyes`` (relative frame coordinates)
    onto ``target_eyes`` (pixels of the ``size`` output): same eye midpoint and same eye distance.

    ``frame_aspect`` is the frame's width / height (1 for LFW's 250x250).
    """
    (tl, tr), (fl, fr) = np.asarray(target_eyes, float) / size, np.asarray(frame_eyes, float)
    target_dist = math.hypot(tr[0] - tl[0], tr[1] - tl[1])
    frame_dist = math.hypot(fr[0] - fl[0], (fr[1] - fl[1]) / frame_aspect)
    if target_dist <= 0 or frame_dist <= 0:
        raise ValueError("eye positions must be distinct to fit a crop")
    width = frame_dist / target_dist
    height = width * frame_aspect
    mid_t, mid_f = (tl + tr) / 2, (fl + fr) / 2
    left, top = mid_f[0] - mid_t[0] * width, mid_f[1] - mid_t[1] * height
    return check_box((left, top, left + width, top + height))
