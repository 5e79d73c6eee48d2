"""The one cache of derived artifacts (decoded faces, trained models, embeddings, attack runs), keyed by content.

Every expensive artifact is a pure function of a JSON-serialisable configuration (which includes fingerprints of
the data it saw). :func:`cached` stores it under ``cache_dir(kind)/<name>-<hash>.pt``, written atomically, so an
interrupted run never leaves a torn file and a changed parameter recomputes only what depends on it. The cache
lives in ``$SSD_CACHE_DIR`` or the user's cache folder (``$XDG_CACHE_HOME/ssdlib``, default ``~/.cache/ssdlib``),
never beside the installed package.

Many processes may fill one cache (a cluster's workers on a shared file system): a temporary file's name is unique
across hosts (:func:`temporary_path`: hostname, pid and a random suffix), and renaming it into place is atomic, so
two workers writing the same artifact leave one whole file. :func:`recording` lists the artifacts a piece of code
loads or computes (the grid's job report), :func:`forbid_compute` turns a cache miss into an error (a book rebuilt
from a filled cache must compute nothing), and every computed payload records the torch version and thread count it
was computed with (``environment``), plus what :func:`environment` adds (the grid's device).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import secrets
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .scales import dry_run

__all__ = ["cache_dir", "config_hash", "fingerprint", "state_fingerprint", "temporary_path", "atomic_save", "cached",
           "CacheInfo", "CacheMiss", "recording", "forbid_compute", "environment", "FORBID_ENV", "LOG_ENV"]


def cache_root() -> Path:
    """``$SSD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssdlib``, else ``~/.cache/ssdlib``; in the dry run
    (:func:`ssdlib.scales.dry_run`) the default is ``ssdlib-dry-run`` beside it, so capped artifacts never mix in."""
    explicit = os.environ.get("SSD_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / ("ssdlib-dry-run" if dry_run() else "ssdlib")


def cache_dir(sub: str | None = None) -> Path:
    """The cache folder (or its subfolder ``sub``), created on first use."""
    path = cache_root() / sub if sub else cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable configuration (keys sorted), the key of a cached artifact.

    >>> config_hash({"lr": 0.1, "epochs": 5})
    '79022445ade3'
    >>> config_hash({"epochs": 5, "lr": 0.1})  # the order of the keys does not matter
    '79022445ade3'
    """
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Content hash of tensors, arrays, bytes and strings (in order): what a cached artifact's data was.

    >>> import torch
    >>> fingerprint(torch.arange(3)) == fingerprint(torch.arange(3).clone())  # the content, not the object
    True
    >>> fingerprint(torch.arange(3)) == fingerprint(torch.arange(3.0))  # the dtype is part of the content
    False
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            if part.size:  # the array's bytes, read in place (tobytes() would copy them first)
                digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:length]


def state_fingerprint(state: dict, length: int = 12) -> str:
    """Content hash of a state dict (names and tensors, in name order): which weights a model started from."""
    return fingerprint(*(x for name in sorted(state) for x in (name, state[name])), length=length)


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path``, unique across hosts and processes: ``.<name>.<host>.<pid>.<random>
    .tmp`` (a pid alone collides between the hosts of a cluster sharing one cache folder)."""
    path = Path(path)
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
    return path.with_name(f".{path.name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path`` (:func:`temporary_path`), then rename: a crash never leaves
    a torn file, and two processes writing the same artifact leave one whole copy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
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
    kind: str = ""


class CacheMiss(RuntimeError):
    """An artifact had to be computed where :func:`forbid_compute` (or ``$SSD_CACHE_FORBID``) forbids it."""


#: Environment variable: kinds (comma-separated, or ``all``) that :func:`cached` must not compute, e.g. in a
#: notebook kernel rendering a book whose grid already filled the cache.
FORBID_ENV = "SSD_CACHE_FORBID"
_RECORDERS: contextvars.ContextVar[tuple] = contextvars.ContextVar("ssdlib_cache_recorders", default=())
_FORBIDDEN: contextvars.ContextVar[frozenset | None] = contextvars.ContextVar("ssdlib_cache_forbidden", default=None)
_ENVIRONMENT: contextvars.ContextVar[tuple] = contextvars.ContextVar("ssdlib_cache_environment", default=())


@contextlib.contextmanager
def recording() -> Iterator[list[CacheInfo]]:
    """Collect the :class:`CacheInfo` of every artifact :func:`cached` loads or computes in this block (nested blocks
    each see their own and the inner ones')."""
    found: list[CacheInfo] = []
    token = _RECORDERS.set(_RECORDERS.get() + (found,))
    try:
        yield found
    finally:
        _RECORDERS.reset(token)


@contextlib.contextmanager
def forbid_compute(kinds: Iterable[str] | None = None) -> Iterator[None]:
    """In this block a cache miss of ``kinds`` (None: every kind) raises :class:`CacheMiss` instead of computing."""
    token = _FORBIDDEN.set(frozenset(["all"] if kinds is None else kinds))
    try:
        yield
    finally:
        _FORBIDDEN.reset(token)


@contextlib.contextmanager
def environment(**extra) -> Iterator[None]:
    """Add ``extra`` (e.g. ``device="cuda:0"``) to the ``environment`` of every payload computed in this block."""
    token = _ENVIRONMENT.set(tuple({**dict(_ENVIRONMENT.get()), **extra}.items()))
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


def _forbidden(kind: str) -> bool:
    kinds = _FORBIDDEN.get()
    if kinds is None:
        kinds = {k.strip() for k in os.environ.get(FORBID_ENV, "").split(",") if k.strip()}
    return "all" in kinds or kind in kinds


#: Environment variable: a file to which :func:`cached` appends one JSON line per artifact loaded or computed (the
#: notebook runner sets it for a notebook's kernel, to list what each page depends on and what it computed).
LOG_ENV = "SSD_CACHE_LOG"


def _record(info: CacheInfo) -> CacheInfo:
    for found in _RECORDERS.get():
        found.append(info)
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"kind": info.kind, "cached": info.cached, "seconds": round(info.seconds, 2)}) + "\n")
    return info


def cached(kind: str, config: dict, compute: Callable[[Path | None], dict], *, name: str = "",
           enabled: bool = True, mmap: bool = False) -> tuple[dict, CacheInfo]:
    """Load the artifact of ``config`` from ``cache_dir(kind)``, or ``compute`` and store it.

    ``compute(partial)`` returns a dict payload; ``partial`` is a path it may use to checkpoint and resume (None when
    the cache is disabled). The stored payload carries ``config``, which is checked on load, and the seconds the
    computation took (``seconds``, summed over resumed runs if ``compute`` adds earlier ones itself).
    ``mmap=True`` maps a payload of plain tensors and containers from disk instead of reading it (large images).

    >>> def squares(partial):  # the expensive computation; partial: where it may checkpoint
    ...     return {"squares": [i * i for i in range(3)]}
    >>> payload, info = cached("examples", {"n": 3}, squares, enabled=False)  # enabled=False: nothing stored
    >>> payload["squares"], info.cached, info.key
    ([0, 1, 4], False, '389d42d9a576')
    """
    if dry_run():  # a capped artifact has a key (and a stored configuration) of its own
        config = {**config, "dry_run": True}
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
                return payload, _record(CacheInfo(path, key, True, float(payload.get("seconds", 0.0)), kind))
            warnings.warn(f"cache file {path} holds another configuration; recomputing")
    if _forbidden(kind):
        raise CacheMiss(f"{kind} artifact {name + '-' if name else ''}{key} is not in the cache "
                        f"({folder or 'cache disabled'}) and computing it is forbidden here; fill the cache first "
                        f"(python -m ssdlib.grid run --scale SCALE). Configuration: "
                        f"{json.dumps(config, sort_keys=True, default=str)[:2000]}")
    partial = path.with_name(f"{path.stem}.partial.pt") if path is not None else None
    start = time.perf_counter()
    payload = dict(compute(partial))
    payload.setdefault("seconds", time.perf_counter() - start)
    payload["config"] = config
    payload["environment"] = {"torch": str(torch.__version__), "threads": torch.get_num_threads(),
                              **dict(_ENVIRONMENT.get()), **dict(payload.get("environment") or {}),
                              **({"dry_run": True} if dry_run() else {})}
    if path is not None:
        atomic_save(payload, path)
        partial.unlink(missing_ok=True)
    return payload, _record(CacheInfo(path, key, False, float(payload["seconds"]), kind))
