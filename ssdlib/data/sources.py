"""Finding and reading face data (identity folders, official CelebA layout; extracted or archived) into cached uint8 tensors.

Decoded, cropped images are cached (``ssdlib.cache``, kind "faces") as ``<name>-<size>px-<hash>.pt``; the hash covers
the data set name, the source files (archive names and sizes, or every file's relative path and size), the crop
and the size, so a second load reads one file instead of decoding JPEGs again.
"""
from __future__ import annotations

import os
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import cached
from ..utils import data_root
from .crops import CELEBA_CROP, FULL_FRAME, LFW_CROP, Box, check_box, decode_crop, open_rgb
from .faceset import FaceSet

CACHE_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IDENTITY_FILE = "identity_CelebA.txt"
HOW_TO_GET = {
    "lfw": "LFW (deep-funneled) from http://vis-www.cs.umass.edu/lfw : lfw-deepfunneled.tgz, kept as is or extracted",
    "celeba": "CelebA from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html : Img/img_align_celeba.zip (or extracted "
              "img_align_celeba/) and Anno/identity_CelebA.txt",
    "facescrub": "FaceScrub (http://vintage.winklerbros.net/facescrub.html), pre-cropped faces as facescrub/<identity>/*.jpg",
}
DEFAULT_CROPS: dict[str, Box] = {"lfw": LFW_CROP, "celeba": CELEBA_CROP, "facescrub": FULL_FRAME}


@dataclass(frozen=True)
class Source:
    """Where a data set lies: ``layout`` "folders" (``<identity>/<image>``) or "celeba" (images + identity file);
    ``path`` a folder, .tgz/.tar or .zip; ``identity_file`` the CelebA identity file when not inside ``path``."""

    name: str
    layout: str
    path: Path
    identity_file: Path | None = None

    @property
    def is_archive(self) -> bool:
        return self.path.is_file()


def _candidates(dataset: str, root: Path) -> list[Source]:
    """Known layouts of ``dataset`` under ``root``, in order of preference (extracted folders before archives)."""
    if dataset == "lfw":
        names = ["lfw-deepfunneled", "lfw"]
        return ([Source("lfw", "folders", root / n) for n in names]
                + [Source("lfw", "folders", root / f"{n}{ext}") for n in names for ext in (".tgz", ".tar.gz", ".tar")])
    if dataset == "facescrub":
        return [Source("facescrub", "folders", root / "facescrub")] + [
            Source("facescrub", "folders", root / f"facescrub{ext}") for ext in (".tgz", ".tar.gz", ".tar", ".zip")]
    if dataset == "celeba":
        out = []
        for base in (root / "celeba", root):
            ids = [base / IDENTITY_FILE, base / "Anno" / IDENTITY_FILE]
            for images in (base / "img_align_celeba", base / "Img" / "img_align_celeba",
                           base / "img_align_celeba.zip", base / "Img" / "img_align_celeba.zip"):
                out += [Source("celeba", "celeba", images, ident) for ident in ids]
        out += [Source("celeba", "celeba", root / f"{n}{ext}") for n in ("celeba-subset", "celeba")
                for ext in (".tgz", ".tar.gz", ".tar")]
        return out
    raise ValueError(f"unknown data set {dataset!r}: expected 'celeba', 'lfw' or 'facescrub'")


def find_source(dataset: str, root: str | os.PathLike | None = None) -> Source:
    """Locate ``dataset`` under the data root (argument, ``$SSD_DATA_ROOT`` or ``../shared/data``)."""
    root = data_root(root)
    candidates = _candidates(dataset, root)
    for src in candidates:
        if src.path.exists() and (src.identity_file is None or src.identity_file.is_file()):
            return src
    expected = sorted({str(s.path) + (f" + {s.identity_file}" if s.identity_file else "") for s in candidates})
    shown = "\n  ".join(expected[:8] + (["..."] if len(expected) > 8 else []))
    raise FileNotFoundError(
        f"{dataset} data not found under data root {root} (set it with the root argument or $SSD_DATA_ROOT). "
        f"Expected one of:\n  {shown}\nGet {HOW_TO_GET[dataset]}.")


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _folder_files(folder: Path) -> list[tuple[str, int]]:
    """Sorted (relative posix path, size) of every image file below ``folder``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if _is_image(f):
                p = Path(dirpath) / f
                out.append((p.relative_to(folder).as_posix(), p.stat().st_size))
    return sorted(out)


def _fingerprint(src: Source) -> tuple[list, list[tuple[str, int]] | None]:
    """What the cache key covers about the source files; also the folder listing, when the source is a folder."""
    listing = None if src.is_archive else _folder_files(src.path)
    fp: list = [src.layout, src.path.name, src.path.stat().st_size if src.is_archive else listing]
    if src.identity_file is not None:
        fp.append([src.identity_file.name, src.identity_file.stat().st_size])
    return fp, listing


def _archive_error(src: Source, err: Exception) -> ValueError:
    return ValueError(f"archive {src.path} is truncated or corrupt ({type(err).__name__}: {err}). "
                      f"Re-download it: {HOW_TO_GET.get(src.name, 'from its official site')}.")


def _iter_files(src: Source, listing: list[tuple[str, int]] | None, wanted=None) -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, bytes) of the image files (and a CelebA identity file) of ``src``, streaming archives.

    ``wanted``: an optional predicate on the relative path selecting which files to read.
    """
    keep = (lambda n: _is_image(n) or n.rsplit("/", 1)[-1] == IDENTITY_FILE)
    take = (lambda n: keep(n) and (wanted is None or wanted(n)))
    if not src.is_archive:
        for rel, _ in listing if listing is not None else _folder_files(src.path):
            if take(rel):
                yield rel, (src.path / rel).read_bytes()
        return
    try:
        if zipfile.is_zipfile(src.path):
            with zipfile.ZipFile(src.path) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and take(info.filename):
                        yield info.filename, zf.read(info)
            return
        with tarfile.open(src.path, "r|*") as tf:
            for member in tf:
                if member.isfile() and take(member.name):
                    fh = tf.extractfile(member)
                    yield member.name, fh.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise _archive_error(src, err) from err


def _parse_identities(text: str, where: str) -> dict[str, str]:
    """Map image file name -> identity number from the lines ``NNNNNN.jpg <identity>`` of identity_CelebA.txt."""
    out = {}
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not _is_image(parts[0]):
            raise ValueError(f"{where}, line {i}: expected '<image>.jpg <identity>', got {line!r}")
        out[parts[0]] = parts[1]
    if not out:
        raise ValueError(f"identity file {where} is empty")
    return out


def _decode_all(src, listing, box, size, progress) -> tuple[list[str], list[np.ndarray], str | None]:
    """Decode and crop every image of ``src``; return relative paths, arrays and the identity file text (if in the archive)."""
    names, arrays, ident_text = [], [], None
    bar = tqdm(total=len(listing) if listing is not None else None, desc=f"decoding {src.name} faces",
               unit="img", disable=not progress, mininterval=1.0)
    for rel, data in _iter_files(src, listing):
        if rel.rsplit("/", 1)[-1] == IDENTITY_FILE:
            ident_text = data.decode("utf-8", errors="replace")
            continue
        arrays.append(decode_crop(data, box, size, what=f"{rel} in {src.path}"))
        names.append(rel)
        bar.update()
    bar.close()
    return names, arrays, ident_text


def _assign_identities(src: Source, names: list[str], ident_text: str | None) -> tuple[list[int], list[str]]:
    """Indices of the images that have an identity, and those identities (folder name, or CelebA identity number)."""
    if src.layout == "folders":
        keep = [i for i, n in enumerate(names) if "/" in n]
        return keep, [names[i].rsplit("/", 2)[-2] for i in keep]
    where = str(src.identity_file) if src.identity_file is not None else f"{IDENTITY_FILE} in {src.path}"
    if src.identity_file is not None:
        ident_text = src.identity_file.read_text(encoding="utf-8", errors="replace")
    if ident_text is None:
        raise ValueError(f"no {IDENTITY_FILE} found in {src.path}; get it from {HOW_TO_GET['celeba']}")
    mapping = _parse_identities(ident_text, where)
    keep = [i for i, n in enumerate(names) if n.rsplit("/", 1)[-1] in mapping]
    if not keep:
        raise ValueError(f"identity file {where} names none of the {len(names)} images found in {src.path}")
    if len(keep) < len(names):
        warnings.warn(f"{len(names) - len(keep)} images in {src.path} are not in {where}; they are ignored")
    return keep, [mapping[names[i].rsplit("/", 1)[-1]] for i in keep]


def load_source(src: Source, *, crop: Box | None = None, size: int = 64, cache: bool = True,
                progress: bool = True) -> FaceSet:
    """Every identified face of ``src`` as a FaceSet (classes ``"<name>:<identity>"``, sorted), decoded once and cached."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    box = check_box(DEFAULT_CROPS.get(src.name, FULL_FRAME) if crop is None else crop)
    if not src.path.exists():
        raise FileNotFoundError(f"{src.path} does not exist. Get {HOW_TO_GET.get(src.name, 'the data set')}.")
    fingerprint, listing = _fingerprint(src)
    if listing is not None and not listing:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {src.path}")
    config = {"v": CACHE_VERSION, "name": src.name, "src": fingerprint, "crop": list(box), "size": size}

    def decode(_partial):
        names, arrays, ident_text = _decode_all(src, listing, box, size, progress)
        if not names:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {src.path}")
        keep, identities = _assign_identities(src, names, ident_text)
        if not keep:
            raise ValueError(f"no image of {src.path} lies in an identity folder (<identity>/<image>)")
        order = sorted(range(len(keep)), key=lambda j: (identities[j], names[keep[j]]))
        classes = sorted(set(identities))
        index = {c: k for k, c in enumerate(classes)}
        return {"images": torch.from_numpy(np.stack([arrays[keep[j]] for j in order])),
                "labels": torch.tensor([index[identities[j]] for j in order], dtype=torch.int64),
                "classes": [f"{src.name}:{c}" for c in classes], "files": [names[keep[j]] for j in order]}

    blob, _ = cached("faces", config, decode, name=f"{src.name}-{size}px", enabled=cache, mmap=True)
    return FaceSet(blob["images"], blob["labels"], list(blob["classes"]), src.name, tuple(blob["files"]))


def load_faces(dataset: str, root: str | os.PathLike | None = None, *, crop: Box | None = None, size: int = 64,
               cache: bool = True, progress: bool = True) -> FaceSet:
    """All faces of ``dataset`` ("celeba", "lfw", "facescrub") under the data root, cropped with its default crop."""
    return load_source(find_source(dataset, root), crop=crop, size=size, cache=cache, progress=progress)


def load_identity_folders(path: str | os.PathLike, name: str, **kwargs) -> FaceSet:
    """Faces of a ``<path>/<identity>/*.jpg`` folder or archive (LFW, pre-cropped FaceScrub), classes ``"<name>:<identity>"``."""
    return load_source(Source(name, "folders", Path(path)), **kwargs)


def load_celeba(path: str | os.PathLike, identity_file: str | os.PathLike | None = None, *, name: str = "celeba",
                **kwargs) -> FaceSet:
    """Faces of an official-layout CelebA: ``img_align_celeba/`` folder or zip plus ``identity_CelebA.txt``,
    or an archive holding both."""
    ident = Path(identity_file) if identity_file is not None else None
    if ident is not None and not ident.is_file():
        raise FileNotFoundError(f"identity file {ident} not found. Get {HOW_TO_GET['celeba']}.")
    return load_source(Source(name, "celeba", Path(path), ident), **kwargs)


def sample_frames(dataset: str, root: str | os.PathLike | None = None, n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded random uncropped images (``[H, W, 3]`` uint8) of ``dataset``, e.g. to re-measure eye positions."""
    src = find_source(dataset, root)
    _, listing = _fingerprint(src)
    all_names = [r for r, _ in listing] if listing is not None else _archive_names(src)
    all_names = sorted(r for r in all_names if _is_image(r))
    if not all_names:
        raise ValueError(f"no images found in {src.path}")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(all_names, size=min(n, len(all_names)), replace=False).tolist())
    found = {rel: np.asarray(open_rgb(data, f"{rel} in {src.path}"))
             for rel, data in _iter_files(src, listing, wanted=chosen.__contains__)}
    return [found[r] for r in sorted(found)]


def _archive_names(src: Source) -> list[str]:
    """Names of the members of an archive (without reading their contents where the format allows)."""
    try:
        if zipfile.is_zipfile(src.path):
            with zipfile.ZipFile(src.path) as zf:
                return zf.namelist()
        with tarfile.open(src.path, "r|*") as tf:
            return [m.name for m in tf if m.isfile()]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
        raise _archive_error(src, err) from err


def measure_crop_alignment(root: str | os.PathLike | None = None, n: int = 200, seed: int = 0, size: int = 64) -> dict:
    """Re-run the crop measurement: mean eye centres of CelebA (in its crop) and LFW (in its frame), and the fitted
    LFW box that matches them; the numbers behind ``LFW_CROP`` (takes about a minute)."""
    from .crops import fit_crop, map_to_crop, measure_eye_positions

    celeba = measure_eye_positions(sample_frames("celeba", root, n, seed))
    lfw = measure_eye_positions(sample_frames("lfw", root, n, seed))
    target = [map_to_crop(celeba.left, CELEBA_CROP, size), map_to_crop(celeba.right, CELEBA_CROP, size)]
    box = fit_crop(target, [lfw.left, lfw.right], size=size)
    return {"celeba_frame": celeba, "lfw_frame": lfw, "celeba_eyes_out": target, "lfw_box": box,
            "lfw_eyes_out": [map_to_crop(lfw.left, box, size), map_to_crop(lfw.right, box, size)]}
