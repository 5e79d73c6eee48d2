"""The white-box ceiling of an attack table: the same prior optimised with the undefended target's own gradients.

Not a black-box attack, and never a row that a defense is judged by: it is the most that an attack with this prior
and this evaluator can be expected to recover, the scale against which every black-box row is read (an attack
that recovers little because the ceiling itself is low says nothing about a defense). Per class, ``starts``
latents drawn from the prior are optimised with Adam on the max-margin loss ``-logit_y + max_{j != y} logit_j``
of the undefended model (as white-box attacks such as PLG-MI use it), clipped to the prior's mean +- ``bound_std``
standard deviations after every step; every start is kept (no selection by the target). The latents are cached
by a hash of the target, the prior, the classes and the recipe.
"""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ..cache import cached
from ..scales import budget

__all__ = ["CEILING_RECIPES", "max_margin_loss", "white_box_latents"]

#: Adam steps per scale; the learning rate, starts per class and latent box are the same at every scale.
CEILING_RECIPES = {
    "smoke": dict(steps=5, lr=0.05, starts=2, bound_std=2.0, batch=64),
    "cpu": dict(steps=80, lr=0.05, starts=5, bound_std=2.0, batch=160),
    "paper": dict(steps=1000, lr=0.05, starts=5, bound_std=2.0, batch=256),
}


def max_margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row ``-logit_y + max_{j != y} logit_j`` (negative once the row is classified as y with a margin)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return others - own


def _optimise(model: nn.Module, prior, z: torch.Tensor, labels: torch.Tensor, recipe: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    z = z.clone().to(prior.device).requires_grad_(True)
    labels = labels.to(device)
    opt = torch.optim.Adam([z], lr=recipe["lr"])
    for _ in range(recipe["steps"]):
        images = prior.decode(z, grad=True)
        loss = max_margin_loss(model(images.to(device)).float(), labels).sum()
        (z.grad,) = torch.autograd.grad(loss, [z])
        opt.step()
        with torch.no_grad():
            z.copy_(prior.clip(z.detach().cpu(), recipe["bound_std"]).to(z.device))
    return z.detach().cpu()


def white_box_latents(model: nn.Module, prior, classes, scale: str, *, target_key: str, seed: int = 0,
                      progress: bool = False, cache: bool = True, **overrides) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents [len(classes) * starts, d], labels)`` of the white-box ceiling against ``model`` (cached)."""
    recipe = {**budget(CEILING_RECIPES, scale), **overrides}
    classes = [int(c) for c in classes]
    config = {"kind": "white-box-ceiling", "target": str(target_key), "prior": prior.key, "classes": classes,
              "recipe": recipe, "seed": int(seed)}

    def compute(_):
        gen = torch.Generator().manual_seed(int(seed))
        labels = torch.tensor([c for c in classes for _ in range(recipe["starts"])], dtype=torch.long)
        start = prior.clip(prior.sample(len(labels), gen), recipe["bound_std"])
        was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            chunks = range(0, len(labels), recipe["batch"])
            out = [_optimise(model, prior, start[i:i + recipe["batch"]], labels[i:i + recipe["batch"]], recipe)
                   for i in tqdm(chunks, desc="white-box ceiling", disable=not progress)]
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)
            model.train(was_training)
        return {"latents": torch.cat(out), "labels": labels}

    payload, _ = cached("ceilings", config, compute, name="ceiling", enabled=cache)
    return payload["latents"], payload["labels"]
