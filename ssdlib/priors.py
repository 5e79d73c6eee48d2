"""The attacker's image prior: a pluggable :class:`Prior`, its training on the public faces, and two quality figures.

An attack never sees the generator's architecture: it takes a :class:`Prior`, i.e. any module mapping latents
``[N, d]`` to images ``[N, 3, 64, 64]`` in [0, 1], plus a latent sampler; the search range is the sampler's
mean +- ``width`` standard deviations per coordinate (as Mirror bounds its search space). A paper-scale user may
wrap a StyleGAN2 (sampler = its W-space samples, a module that crops and resizes to 64x64).

:func:`train_prior` trains the DCGAN-style prior of :mod:`ssdlib.models.generators` on the identity-disjoint public faces
(:func:`ssdlib.data.public_set`, minus a seeded held-out slice used only to judge it), cached by configuration
through :func:`ssdlib.cache.cached` and checkpointed every few hundred steps; all randomness comes from one torch
Generator whose state is checkpointed, so a resumed run ends with the same weights as an uninterrupted one.
Recipes (:data:`PRIOR_RECIPES`): ``paper`` is GMI's WGAN-GP recipe (Adam 2e-4, betas (0.5, 0.999), 5 critic steps
per generator step, gradient penalty 10, batch 64, 150,000 critic steps as in the Model-Inversion-Attack-ToolBox's
``gan_training/gmi.py``); ``cpu`` and ``smoke`` use the non-saturating DCGAN loss with one critic step, because
five critic steps with a double-backward penalty cost ~10x more per generator update than a 20-minute CPU budget
allows, while ~3,000 non-saturating steps already give recognisable faces.

Quality without downloads (:func:`prior_quality`): the rate at which dlib's frontal face detector finds a face in
samples vs in real held-out public images (upscaled to 200 px as :func:`ssdlib.data.measure_eye_positions` does),
and the mean L2 distance (dlib 128-d embedding) from samples, vs from held-out real images, to their nearest public
training image.

Measured (cpu recipe, seed 0, 20,721 training / 500 held-out public faces): 3,000 steps took 4,136 s on one thread
at nice 10 while other jobs held the load average at 8-21 (1.3-5 s per step; two threads took 5-18 s per step under
that load, spinning on each other). Faces are found in 63.5% of 200 samples vs 76.5% of 200 held-out real faces;
the nearest-public distance is 0.528 (std 0.029) for samples vs 0.520 (std 0.058) for real faces, so at this
quality that figure does not separate samples from real faces (blurry samples sit in a dense region of dlib's space).
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .cache import CacheInfo, atomic_save, cached, fingerprint
from .models.generators import ARCHITECTURES, LATENT_DIM, build_discriminator, build_generator
from .scales import check_scale

__all__ = ["Prior", "PRIOR_RECIPES", "QUALITY_SIZES", "PriorTrainingStopped", "prior_data", "prior_config",
           "train_prior", "load_prior", "save_grid", "face_detection_rate", "nearest_distance", "prior_quality"]

Sampler = Callable[[int, torch.Generator], torch.Tensor]

#: Training recipe per scale: generator steps, batch, Adam settings, loss ("ns" or "wgan-gp"), critic steps per
#: generator step, public images held out for :func:`prior_quality`, and limits on the public set (small runs).
PRIOR_RECIPES: dict[str, dict] = {
    "paper": dict(steps=30_000, batch_size=64, lr=2e-4, betas=(0.5, 0.999), loss="wgan-gp", n_critic=5,
                  gp_weight=10.0, holdout=1000, max_images=None, checkpoint_every=500),
    "cpu": dict(steps=3_000, batch_size=64, lr=2e-4, betas=(0.5, 0.999), loss="ns", n_critic=1, gp_weight=0.0,
                holdout=500, max_images=None, checkpoint_every=200),
    "smoke": dict(steps=30, batch_size=16, lr=2e-4, betas=(0.5, 0.999), loss="ns", n_critic=1, gp_weight=0.0,
                  holdout=32, max_images=512, checkpoint_every=10),
}
#: Samples and reference images used by :func:`prior_quality` per scale (dlib embeds ~4 images/s on 2 cores).
QUALITY_SIZES = {"smoke": dict(samples=16, reference=64), "cpu": dict(samples=200, reference=1000),
                 "paper": dict(samples=1000, reference=5000)}
LOSSES = ("ns", "wgan-gp")


class Prior:
    """An image prior as attacks see it: ``prior(z)`` decodes latents ``[N, d]`` to images ``[N, 3, H, W]`` in [0, 1].

    ``sampler(n, generator)`` draws ``n`` latents (default: standard normal); :meth:`bounds` is the search range,
    mean +- ``width`` std per coordinate, estimated from ``stats_samples`` latents (seed 0). ``key`` names the
    prior in cached attack runs (a fingerprint of its weights when not given).
    """

    def __init__(self, generator: nn.Module, latent_dim: int = LATENT_DIM, *, sampler: Sampler | None = None,
                 name: str = "", key: str = "", batch_size: int = 256, stats_samples: int = 10_000):
        if not isinstance(generator, nn.Module):
            raise TypeError(f"the prior's generator must be a torch.nn.Module, got {type(generator).__name__}")
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.generator = generator.eval()
        self.latent_dim = latent_dim
        self.sampler = sampler if sampler is not None else _standard_normal_of(latent_dim)
        self.name = name or type(generator).__name__
        self.batch_size = int(batch_size)
        self._key = key
        self._stats_samples = int(stats_samples)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        param = next(iter(generator.parameters()), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return f"Prior(name={self.name!r}, latent_dim={self.latent_dim}, key={self.key!r})"

    @property
    def key(self) -> str:
        """Identity of the prior in cache configurations: the given key, else a fingerprint of its state."""
        if not self._key:
            state = self.generator.state_dict()
            self._key = fingerprint(self.name, self.latent_dim, *[state[k] for k in sorted(state)])
        return self._key

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents ``[n, d]`` (CPU float32) from the sampler."""
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        z = self.sampler(int(n), generator)
        if z.shape != (n, self.latent_dim):
            raise ValueError(f"the prior's sampler returned shape {tuple(z.shape)}, expected ({n}, {self.latent_dim})")
        return z.float().cpu()

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate mean and standard deviation of the sampler (``stats_samples`` draws, seed 0)."""
        if self._stats is None:
            z = self.sample(self._stats_samples, torch.Generator().manual_seed(0))
            self._stats = (z.mean(0), z.std(0, unbiased=False))
        return self._stats

    def bounds(self, width: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The search range ``mean -+ width * std`` per coordinate (Mirror's ``p_std_ce`` bound)."""
        if not width > 0:
            raise ValueError(f"the latent range width must be positive, got {width!r}")
        mean, std = self.stats()
        return mean - width * std, mean + width * std

    def clip(self, z: torch.Tensor, width: float | None) -> torch.Tensor:
        """``z`` clipped into :meth:`bounds` (unchanged when ``width`` is None)."""
        if width is None:
            return z
        lo, hi = self.bounds(width)
        return torch.maximum(torch.minimum(z, hi.to(z)), lo.to(z))

    def decode(self, z: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [0, 1] of latents ``z`` (batched; with ``grad`` one differentiable pass)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape [N, {self.latent_dim}], got {tuple(z.shape)}")
        self.generator.eval()
        if grad:
            return self._check(self.generator(z.to(self.device)))
        with torch.no_grad():
            out = [self._check(self.generator(z[i:i + self.batch_size].to(self.device))).cpu()
                   for i in range(0, len(z), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0, 3, 64, 64)

    __call__ = decode

    @staticmethod
    def _check(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the prior's generator must return images [N, 3, H, W], got {tuple(x.shape)}")
        return x.clamp(0, 1)


def _standard_normal_of(dim: int) -> Sampler:
    def sampler(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, dim, generator=generator)
    return sampler


# ------------------------------------------------------------------------------------------------ data
def prior_data(scale: str, data=None, *, root=None, seed: int = 0):
    """(train, held-out) public FaceSets of the prior at ``scale``: ``data`` (or the public set) minus a seeded
    held-out slice of ``PRIOR_RECIPES[scale]["holdout"]`` images."""
    recipe = PRIOR_RECIPES[check_scale(scale)]
    if data is None:
        from .data import public_set
        data = public_set(root, max_images=recipe["max_images"], seed=seed)
    if not hasattr(data, "images") or not hasattr(data, "subset"):
        raise ValueError(f"data must be a ssdlib.data.FaceSet, got {type(data).__name__}")
    if tuple(data.images.shape[1:]) != (3, 64, 64):
        raise ValueError(f"prior training needs 64x64 RGB faces, got images of shape {tuple(data.images.shape[1:])}")
    n_hold = min(recipe["holdout"], len(data) // 4)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(torch.sort(order[n_hold:]).values), data.subset(torch.sort(order[:n_hold]).values)


def prior_config(scale: str, train_set, *, seed: int = 0, **overrides) -> dict:
    """The configuration that determines a trained prior: recipe, architecture, data fingerprint, seed."""
    recipe = {**PRIOR_RECIPES[check_scale(scale)], **overrides}
    unknown = set(overrides) - set(PRIOR_RECIPES[scale])
    if unknown:
        raise ValueError(f"unknown prior recipe keys {sorted(unknown)}; valid: {', '.join(PRIOR_RECIPES[scale])}")
    if recipe["loss"] not in LOSSES:
        raise ValueError(f"prior loss must be one of {LOSSES}, got {recipe['loss']!r}")
    if recipe["loss"] == "wgan-gp" and ARCHITECTURES[scale]["norm"] == "batch":
        raise ValueError("WGAN-GP needs a critic without batch norm (its penalty is per sample)")
    recipe.pop("checkpoint_every")  # how often to checkpoint does not change the result
    recipe["betas"] = list(recipe["betas"])
    return {"kind": "dcgan-prior", "scale": scale, "arch": ARCHITECTURES[scale], "latent_dim": LATENT_DIM,
            "recipe": recipe, "seed": int(seed),
            "data": {"n": len(train_set), "sha": fingerprint(train_set.images, train_set.labels)}}


# -------------------------------------------------------------------------------------------- training
class PriorTrainingStopped(RuntimeError):
    """Training stopped on request (``stop_after``) after writing its partial checkpoint."""


def _gradient_penalty(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    alpha = torch.rand(len(real), 1, 1, 1, generator=gen).to(real)
    mix = (real + alpha * (fake - real)).requires_grad_(True)
    grad, = torch.autograd.grad(disc(mix).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _real_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator, device) -> torch.Tensor:
    idx = torch.randint(0, len(images), (batch_size,), generator=gen)
    x = images[idx].float().div_(255.0)
    flip = torch.rand(batch_size, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    return x.to(device)


def _train(config: dict, train_set, partial: Path | None, *, device, progress: bool, stop_after: int | None,
           checkpoint_every: int) -> dict:
    recipe = config["recipe"]
    torch.manual_seed(config["seed"])
    G, D = build_generator(config["scale"]).to(device), build_discriminator(config["scale"]).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=recipe["lr"], betas=tuple(recipe["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe["lr"], betas=tuple(recipe["betas"]))
    gen = torch.Generator().manual_seed(config["seed"] + 1)
    step, history, seconds, resumed_from = 0, [], 0.0, 0
    if partial is not None and partial.is_file():
        state = torch.load(partial, map_location="cpu", weights_only=False)
        if state.get("config") == config:
            G.load_state_dict(state["G"]), D.load_state_dict(state["D"])
            opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
            gen.set_state(state["rng"])
            step, history, seconds = int(state["step"]), list(state["history"]), float(state["seconds"])
            resumed_from = step

    def checkpoint():
        if partial is not None:
            atomic_save({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                         "opt_d": opt_d.state_dict(), "rng": gen.get_state(), "step": step, "history": history,
                         "seconds": seconds + time.perf_counter() - t0, "config": config}, partial)

    images, bs = train_set.images, recipe["batch_size"]
    t0 = time.perf_counter()
    G.train(), D.train()
    bar = tqdm(total=recipe["steps"], initial=step, desc=f"prior {config['scale']}", disable=not progress)
    d_sum = g_sum = 0.0
    while step < recipe["steps"]:
        for _ in range(recipe["n_critic"]):
            real = _real_batch(images, bs, gen, device)
            with torch.no_grad():
                fake = G(torch.randn(bs, LATENT_DIM, generator=gen).to(device))
            if recipe["loss"] == "ns":
                loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
            else:
                loss_d = D(fake).mean() - D(real).mean() + recipe["gp_weight"] * _gradient_penalty(D, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        score = D(G(torch.randn(bs, LATENT_DIM, generator=gen).to(device)))
        loss_g = F.softplus(-score).mean() if recipe["loss"] == "ns" else -score.mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise FloatingPointError(f"prior training diverged at step {step}: D loss {loss_d.item()}, "
                                     f"G loss {loss_g.item()}")
        step += 1
        d_sum, g_sum = d_sum + loss_d.item(), g_sum + loss_g.item()
        bar.update(1)
        if step % 50 == 0 or step == recipe["steps"]:
            n = 50 if step % 50 == 0 else step % 50
            history.append({"step": step, "loss_d": d_sum / n, "loss_g": g_sum / n,
                            "seconds": seconds + time.perf_counter() - t0})
            bar.set_postfix(d=f"{d_sum / n:.3f}", g=f"{g_sum / n:.3f}")
            d_sum = g_sum = 0.0
        if step % checkpoint_every == 0 and step < recipe["steps"]:
            checkpoint()
        if stop_after is not None and step >= stop_after and step < recipe["steps"]:
            checkpoint()
            bar.close()
            raise PriorTrainingStopped(f"prior training stopped after step {step} of {recipe['steps']} "
                                       f"(checkpoint {partial})")
    bar.close()
    return {"generator": {k: v.cpu() for k, v in G.state_dict().items()},
            "discriminator": {k: v.cpu() for k, v in D.state_dict().items()}, "history": history,
            "steps": step, "resumed_from": resumed_from, "seconds": seconds + time.perf_counter() - t0}


def train_prior(scale: str = "cpu", data=None, *, root=None, seed: int = 0, device=None, progress: bool = True,
                cache: bool = True, stop_after: int | None = None, **overrides) -> tuple[Prior, dict]:
    """Train (resuming a partial run) or load the DCGAN prior of ``scale`` on the public faces (or ``data``).

    ``overrides`` replace recipe entries (:data:`PRIOR_RECIPES`); ``stop_after`` ends the run after that many
    steps with a partial checkpoint (raising :class:`PriorTrainingStopped`), to test resumption. Returns the
    :class:`Prior` and an info dict (key, path, cached, seconds, history, steps, resumed_from, holdout set).
    """
    from .utils import resolve_device
    device = resolve_device(device)
    train_set, holdout = prior_data(scale, data, root=root, seed=seed)
    config = prior_config(scale, train_set, seed=seed, **overrides)
    every = int(overrides.get("checkpoint_every", PRIOR_RECIPES[scale]["checkpoint_every"]))
    payload, info = cached("priors", config, lambda partial: _train(
        config, train_set, partial, device=device, progress=progress, stop_after=stop_after,
        checkpoint_every=every), name=f"dcgan-{scale}", enabled=cache)
    prior = _prior_from_payload(payload, scale, info)
    return prior, {"key": info.key, "path": info.path, "cached": info.cached, "seconds": info.seconds,
                   "history": payload["history"], "steps": payload["steps"],
                   "resumed_from": payload.get("resumed_from", 0), "config": config, "holdout": holdout,
                   "train": train_set}


def _prior_from_payload(payload: dict, scale: str, info: CacheInfo) -> Prior:
    G = build_generator(scale)
    G.load_state_dict(payload["generator"])
    return Prior(G.eval(), LATENT_DIM, name=f"dcgan-{scale}", key=f"dcgan-{scale}-{info.key}")


def load_prior(path: str | Path) -> Prior:
    """A prior trained by :func:`train_prior`, from its cache file."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    scale = payload["config"]["scale"]
    return _prior_from_payload(payload, scale, CacheInfo(Path(path), Path(path).stem.rsplit("-", 1)[-1], True, 0.0))


# -------------------------------------------------------------------------------------------- looking
def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, pad: int = 2) -> Path:
    """Write float images ``[N, 3, H, W]`` in [0, 1] as one PNG grid (``nrow`` per row)."""
    from PIL import Image
    images = images.detach().cpu().clamp(0, 1)
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = torch.ones(3, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i, im in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = im
    arr = canvas.mul(255).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


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


def nearest_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-row L2 distance (not squared) from ``features`` ``[N, D]`` to the nearest row of ``reference`` ``[M, D]``."""
    if features.dim() != 2 or reference.dim() != 2 or features.shape[1] != reference.shape[1] or not len(reference):
        raise ValueError(f"features [N, D] and a non-empty reference [M, D] needed, got {tuple(features.shape)} and "
                         f"{tuple(reference.shape)}")
    return torch.cdist(features.float(), reference.float(), compute_mode="donot_use_mm_for_euclid_dist").min(1).values


def prior_quality(prior: Prior, train_set, holdout, *, scale: str = "cpu", embedder=None, seed: int = 0,
                  n_samples: int | None = None, n_reference: int | None = None) -> dict:
    """Face-detection rate and nearest-public-image distance (dlib 128-d) of prior samples vs held-out real faces.

    ``train_set`` is what the prior saw (the reference images are a seeded subset of it), ``holdout`` real public
    images it did not see; ``n_samples`` samples and as many held-out images are judged (sizes: :data:`QUALITY_SIZES`).
    """
    sizes = QUALITY_SIZES[check_scale(scale)]
    n = min(n_samples or sizes["samples"], len(holdout))
    m = min(n_reference or sizes["reference"], len(train_set))
    gen = torch.Generator().manual_seed(seed)
    samples = prior.decode(prior.sample(n, gen))
    real = holdout.float_images()[torch.randperm(len(holdout), generator=gen)[:n]]
    ref = train_set.float_images()[torch.sort(torch.randperm(len(train_set), generator=gen)[:m]).values]
    if embedder is None:
        from .models.embedding import DlibEmbedder
        embedder = DlibEmbedder()
    e_ref, e_samples, e_real = embedder.embed(ref), embedder.embed(samples), embedder.embed(real)
    d_samples, d_real = nearest_distance(e_samples, e_ref), nearest_distance(e_real, e_ref)
    return {"detect_samples": face_detection_rate(samples), "detect_real": face_detection_rate(real),
            "nn_dist_samples": float(d_samples.mean()), "nn_dist_real": float(d_real.mean()),
            "nn_dist_samples_std": float(d_samples.std()), "nn_dist_real_std": float(d_real.std()),
            "n_samples": n, "n_reference": m}
