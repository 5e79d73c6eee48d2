"""Small shared helpers: the repository root, the data root, devices and seeding (caching is in ``ssdlib.cache``)."""
from __future__ import annotations

import os
import random
from pathlib import Path

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


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator seeded likewise."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
