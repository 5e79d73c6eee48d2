"""Small shared helpers: paths, devices, seeding and configuration hashing."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when available and CPU otherwise when ``device`` is None/"auto"."""
    if device is None or str(device) in ("", "auto", "None"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Face data root: the argument, else ``$SSD_DATA_ROOT``, else ``../shared/data`` beside the repository."""
    if root is None:
        root = os.environ.get("SSD_DATA_ROOT") or REPO_ROOT.parent / "shared" / "data"
    return Path(root).expanduser()


def cache_dir(sub: str | None = None) -> Path:
    """Cache folder for derived artifacts (decoded images, checkpoints): ``$SSD_CACHE_DIR`` or ``data/cache``."""
    base = Path(os.environ.get("SSD_CACHE_DIR") or REPO_ROOT / "data" / "cache").expanduser()
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable configuration, used to key cached artifacts."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded likewise."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
