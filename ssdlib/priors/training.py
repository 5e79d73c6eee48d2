"""Training the DCGAN-style prior of :mod:`ssdlib.models.generators` on the identity-disjoint public faces.

:func:`train_prior` trains on :func:`ssdlib.data.public_set` minus a seeded held-out slice (used only to judge the
prior, :mod:`ssdlib.metrics.prior_quality`), cached by configuration through :func:`ssdlib.cache.cached` and
checkpointed every few hundred steps; all randomness comes from one torch Generator whose state is checkpointed,
so a resumed run ends with the same weights as an uninterrupted one. Recipes (:data:`PRIOR_RECIPES`): ``paper`` is
GMI's WGAN-GP recipe (Adam 2e-4, betas (0.5, 0.999), 5 critic steps per generator step, gradient penalty 10,
batch 64, as in the Model-Inversion-Attack-ToolBox's ``gan_training/gmi.py``); ``cpu`` and ``smoke`` use the
non-saturating DCGAN loss with one critic step, because five critic steps with a double-backward penalty cost
about ten times more per generator update, while a few thousand non-saturating steps already give recognisable
faces. The prior chapter reports the measured training time and quality.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..cache import CacheInfo, atomic_save, cached, fingerprint
from ..models.generators import ARCHITECTURES, LATENT_DIM, build_discriminator, build_generator
from ..scales import budget
from .prior import Prior

__all__ = ["PRIOR_RECIPES", "LOSSES", "PriorTrainingStopped", "prior_data", "prior_config", "train_prior"]

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
LOSSES = ("ns", "wgan-gp")


# ------------------------------------------------------------------------------------------------ data
def prior_data(scale: str, data=None, *, root=None, seed: int = 0):
    """(train, held-out) public FaceSets of the prior at ``scale``: ``data`` (or the public set) minus a seeded
    held-out slice of ``PRIOR_RECIPES[scale]["holdout"]`` images."""
    recipe = budget(PRIOR_RECIPES, scale)
    if data is None:
        from ..data import public_set
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
    recipe = {**budget(PRIOR_RECIPES, scale), **overrides}
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
    from ..utils import resolve_device
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
