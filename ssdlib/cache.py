"""The one cache of derived artifacts (decoded faces, trained models, embeddings, attack runs), keyed by content.

Every expensive artifact is a pure function of a JSON-serialisable configuration (which includes fingerprints of
the data it saw). :func:`cached` stores it under ``cache_dir(kind)/<name>-<hash>.pt``, written atomically, so an
interrupted run never leaves a torn file and a changed parameter recomputes only what depends on it. The cache
lives in ``$SSD_CACHE_DIR`` or the user's cache folder (``$XDG_CACHE_HOME/ssdlib``, default ``~/.cache/ssdlib``),
never beside the installed package.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["cache_dir", "config_hash", "fingerprint", "state_fingerprint", "atomic_save", "cached", "CacheInfo"]


def cache_root() -> Path:
    """``$SSD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssdlib``, else ``~/.cache/ssdlib``."""
    explicit = os.environ.get("SSD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ssdlib"


def cache_dir(sub: str | None = None) -> Path:
    """The cache folder (or its subfolder ``sub``), created on first use."""
    path = cache_root() / sub if sub else cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable configuration (keys sorted), the key of a cached artifact."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Content hash of tensors, arrays, bytes and strings (in order): what a cached artifact's data was."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:length]


def state_fingerprint(state: dict, length: int = 12) -> str:
    """Content hash of a state dict (names and tensors, in name order): which weights a model started from."""
    return fingerprint(*(x for name in sorted(state) for x in (name, state[name])), length=length)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class CacheInfo:
    """Where an artifact lives, its key, whether it was read from the cache, and how long computing it took."""

    path: Path | None
    key: str
    cached: bool
    seconds: float


def cached(kind: str, config: dict, compute: Callable[[Path | None], dict], *, name: str = "",
           enabled: bool = True, mmap: bool = False) -> tuple[dict, CacheInfo]:
    """Load the artifact of ``config`` from ``cache_dir(kind)``, or ``compute`` and store it.

    ``compute(partial)`` returns a dict payload; ``partial`` is a path it may use to checkpoint and resume (None when
    the cache is disabled). The stored payload carries ``config``, which is checked on load, and the seconds the
    computation took (``seconds``, summed over resumed runs if ``compute`` adds earlier ones itself).
    ``mmap=True`` maps a payload of plain tensors and containers from disk instead of reading it (large images).
    """
    key = config_hash(config)
    folder = cache_dir(kind) if enabled else None
    path = folder / f"{name + '-' if name else ''}{key}.pt" if folder is not None else None
    if path is not None and path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=mmap, mmap=mmap)
        except Exception as err:  # a damaged file is recomputed, never trusted
            warnings.warn(f"ignoring unreadable cache file {path}: {err}")
        else:
            if json.loads(json.dumps(payload.get("config"), default=str)) == json.loads(
                    json.dumps(config, default=str)):
                return payload, CacheInfo(path, key, True, float(payload.get("seconds", 0.0)))
            warnings.warn(f"cache file {path} holds another configuration; recomputing")
    partial = path.with_name(f"{path.stem}.partial.pt") if path is not None else None
    start = time.perf_counter()
    payload = dict(compute(partial))
    payload.setdefault("seconds", time.perf_counter() - start)
    payload["config"] = config
    if path is not None:
        atomic_save(payload, path)
        partial.unlink(missing_ok=True)
    return payload, CacheInfo(path, key, False, float(payload["seconds"]))
