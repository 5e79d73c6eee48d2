"""A user-supplied pretrained prior loaded by path (e.g. a StyleGAN2 at 224x224), for the paper's Tables 10/11.

The contract. The file at ``path`` is one of
  * a ``torch.export.save``'d program (a ``.pt2`` file), or a TorchScript archive (``torch.jit.save``), of a module mapping latents
    ``[N, d]`` to images ``[N, 3, S, S]`` (export it with a dynamic batch dimension);
  * a ``torch.save``'d ``nn.Module`` doing the same (unpickled: load only files you trust);
  * a ``torch.save``'d dict with ``"generator"`` (either of the above as an object) or ``"builder"`` (an importable
    ``"package.module:function"``) + ``"kwargs"`` + ``"state_dict"``, and optionally ``"latent_dim"`` (int),
    ``"latents"`` (a tensor ``[M, d]`` the sampler draws rows of, e.g. StyleGAN2 w vectors as Mirror presamples
    them; default: standard normal latents), ``"value_range"`` (``[lo, hi]`` of the images, e.g. ``[-1, 1]``)
    and ``"crop"`` (the centred fraction kept before resizing).
The images are mapped from ``value_range`` to [0, 1]; when ``S`` differs from ``image_size`` they are centre-cropped
to ``crop`` of their side (the paper: 800 of StyleGAN2's 1024 pixels) and resized to ``image_size`` (bilinear,
antialiased). ``latent_dim`` comes from the argument, the dict, or the module's ``latent_dim`` attribute.
"""
from __future__ import annotations

import hashlib
import importlib
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from .prior import Prior

__all__ = ["PAPER_CROP", "ImageAdapter", "load_prior"]

#: The paper's Appendix G: StyleGAN2 images (1024 px) centre-cropped to 800 px, then resized to 224 px.
PAPER_CROP = 800 / 1024


class ImageAdapter(nn.Module):
    """Wrap a generator so that it returns ``[N, 3, image_size, image_size]`` images in [0, 1]: value range mapped,
    centre crop (``crop`` of the side) and resize applied only when the generator's size differs."""

    def __init__(self, generator: nn.Module, *, image_size: int = 224, crop: float = PAPER_CROP,
                 value_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        if not 0 < crop <= 1:
            raise ValueError(f"crop must lie in (0, 1], got {crop!r}")
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range!r}")
        self.generator, self.image_size, self.crop, self.value_range = generator, int(image_size), crop, (lo, hi)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.generator(z)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
            raise ValueError("the prior's generator must return square RGB images [N, 3, S, S], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        lo, hi = self.value_range
        x = (x.float() - lo) / (hi - lo)
        side = x.shape[-1]
        if side != self.image_size:
            keep = max(1, round(side * self.crop))
            start = (side - keep) // 2
            x = x[:, :, start:start + keep, start:start + keep]
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                          align_corners=False, antialias=keep > self.image_size)
        return x.clamp(0, 1)


def _file_key(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _build(spec: str, kwargs: dict, state: dict, path: Path) -> nn.Module:
    module_name, _, fn_name = str(spec).partition(":")
    if not fn_name:
        raise ValueError(f"{path}: 'builder' must read 'package.module:function', got {spec!r}")
    module = getattr(importlib.import_module(module_name), fn_name)(**(kwargs or {}))
    module.load_state_dict(state)
    return module


def _read(path: Path, device) -> dict:
    """The file's contents as a dict with at least ``generator`` (an ``nn.Module``)."""
    if path.suffix == ".pt2":
        return {"generator": torch.export.load(str(path)).module()}
    if zipfile.is_zipfile(path):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in recent torch, still a valid export
                warnings.simplefilter("ignore", DeprecationWarning)
                return {"generator": torch.jit.load(str(path), map_location=device)}
        except RuntimeError:
            pass  # a torch.save zip archive, not TorchScript
    blob = torch.load(path, map_location=device, weights_only=False)
    if isinstance(blob, nn.Module):
        return {"generator": blob}
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: expected a TorchScript module, a torch.save'd nn.Module or a dict with "
                         f"'generator' or 'builder' + 'state_dict', got {type(blob).__name__}")
    blob = dict(blob)
    if "generator" not in blob:
        if "builder" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path}: the dict needs 'generator' (a module) or 'builder' and 'state_dict'; "
                             f"it has {sorted(blob)}")
        blob["generator"] = _build(blob["builder"], blob.get("kwargs", {}), blob["state_dict"], path)
    if not isinstance(blob["generator"], nn.Module):
        raise ValueError(f"{path}: 'generator' must be a torch.nn.Module, got {type(blob['generator']).__name__}")
    return blob


def load_prior(path, *, image_size: int = 224, latent_dim: int | None = None, crop: float | None = None,
               value_range: tuple[float, float] | None = None, device=None, name: str = "") -> Prior:
    """The :class:`Prior` in the file at ``path`` (see the module docstring for the contract), decoding to
    ``[N, 3, image_size, image_size]`` in [0, 1]; its key is a hash of the file. Two latents are decoded at once
    so that a file breaking the contract fails here, with the reason."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no prior file at {path}: give a TorchScript or torch.save'd generator "
                                "(see ssdlib.priors.external)")
    device = torch.device(device or "cpu")
    blob = _read(path, device)
    generator = blob["generator"]
    dim = latent_dim or blob.get("latent_dim") or getattr(generator, "latent_dim", None)
    latents = blob.get("latents")
    if dim is None and isinstance(latents, torch.Tensor):
        dim = latents.shape[-1]
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"{path}: the latent size is unknown; pass latent_dim=, or store 'latent_dim' in the dict "
                         "or as the module's latent_dim attribute")
    sampler = None
    if latents is not None:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 2 or latents.shape[1] != dim or not len(latents):
            raise ValueError(f"{path}: 'latents' must be a non-empty tensor [M, {dim}]")
        bank = latents.detach().float().cpu()

        def sampler(n: int, gen: torch.Generator) -> torch.Tensor:
            return bank[torch.randint(len(bank), (n,), generator=gen)]

    adapter = ImageAdapter(generator, image_size=image_size,
                           crop=float(crop if crop is not None else blob.get("crop", PAPER_CROP)),
                           value_range=tuple(value_range or blob.get("value_range", (0.0, 1.0)))).to(device)
    prior = Prior(adapter, latent_dim=int(dim), sampler=sampler, name=name or path.stem,
                  key=f"file-{_file_key(path)}-{image_size}-{adapter.crop:.4f}-{adapter.value_range}")
    prior.device = device
    try:
        probe = prior.decode(prior.sample(2, torch.Generator().manual_seed(0)))
    except (RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: decoding two latents [2, {dim}] failed: {err}") from err
    if probe.shape != (2, 3, image_size, image_size):
        raise ValueError(f"{path}: decoded images have shape {tuple(probe.shape)}, expected (2, 3, {image_size}, "
                         f"{image_size})")
    return prior
