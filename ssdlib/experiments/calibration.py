"""How often SSD's sampled label keeps the target's top-1 label, and a temperature calibrated to our class counts.

SSD draws y ~ softmax(f(x) / T): the temperature divides *probabilities*, so the chance that the draw keeps the
top-1 label depends on the number of classes |Y| as well as on T. With a top probability of 0.3 and T = 0.1 the
top label has weight e^3 against about |Y| - 1 weights near e^0: it survives about 2 % of draws at |Y| = 1,000 and
a quarter at 62 classes. The paper's T was chosen for 530 or 1,000 classes; at our 62-181 classes the same T
randomises far fewer labels. :func:`calibrated_temperature` finds the T that randomises the labels of generated
images at our |Y| as often as the paper's T does at the paper's |Y|, measured on synthetic outputs with the same
top-probability distribution (the rest of the mass spread evenly over the other classes).
"""
from __future__ import annotations

import math

import torch

from .. import paper
from ..cache import cached
from ..priors import train_prior
from ..scales import budget_value
from ..utils import resolve_device
from .settings import setting, ssd_params
from .targets import train_target

__all__ = ["label_survival", "synthetic_outputs", "paper_classes", "temperature_for_survival",
           "generated_outputs", "calibrated_temperature", "CALIBRATION_SAMPLES"]

#: The largest temperature considered: the draw is then uniform over the classes to within a fraction of a percent.
#: When the paper's T randomises the paper's labels more often than a uniform draw over OUR classes can (the
#: survival floor 1/|Y|), the calibrated T is this one, and the result says so (``clipped``).
MAX_T = 100.0
#: Prior samples scored by the undefended target to measure the top-probability distribution of generated images.
CALIBRATION_SAMPLES = {"smoke": 64, "cpu": 2000, "paper": 10_000}


def label_survival(probs: torch.Tensor, T: float) -> torch.Tensor:
    """Per row of ``probs`` [N, C], the probability that SSD's draw y ~ softmax(f / T) is the top-1 label (exact,
    no sampling; 1 at T = 0)."""
    if not T >= 0:
        raise ValueError(f"temperature T must be >= 0, got {T!r}")
    probs = probs.double()
    if T == 0:
        return torch.ones(len(probs), dtype=torch.float64)
    return torch.softmax(probs / T, dim=-1).gather(1, probs.argmax(-1, keepdim=True)).squeeze(1)


def synthetic_outputs(top: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Probability vectors over ``num_classes`` classes with top probability ``top`` (clamped to at least
    1/num_classes) in the first entry and the rest spread evenly over the other classes."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    top = top.double().clamp(1.0 / num_classes, 1.0)
    rest = ((1 - top) / (num_classes - 1))[:, None].expand(len(top), num_classes - 1)
    return torch.cat([top[:, None], rest], 1)


def paper_classes(name: str) -> int:
    """The paper's number of private classes for the setting ours stands in for (FaceScrub 530, CelebA 1,000)."""
    dataset = paper.PAPER_SETTING[setting(name).name].split("/")[1]
    return paper.PAPER["private_classes"][dataset]


def temperature_for_survival(probs: torch.Tensor, rate: float, *, low: float = 1e-4, high: float = 100.0,
                             steps: int = 80) -> float:
    """The T at which the mean :func:`label_survival` of ``probs`` equals ``rate`` (bisection on log T; the
    survival falls as T grows)."""
    floor, ceil = float(label_survival(probs, high).mean()), float(label_survival(probs, low).mean())
    if not floor <= rate <= ceil:
        raise ValueError(f"a survival rate of {rate:.4f} is out of reach: between T = {low} and {high} the mean "
                         f"survival runs from {ceil:.4f} to {floor:.4f}")
    lo, hi = math.log(low), math.log(high)
    for _ in range(steps):
        mid = (lo + hi) / 2
        if float(label_survival(probs, math.exp(mid)).mean()) > rate:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def generated_outputs(name: str, scale: str, *, samples: int | None = None, seed: int = 0, root=None,
                      device=None) -> torch.Tensor:
    """The undefended target's probabilities on ``samples`` prior samples (the images an attacker starts from),
    ``[samples, C]``, CPU float32."""
    device = resolve_device(device)
    samples = samples or budget_value(CALIBRATION_SAMPLES, scale, "samples")
    model, _ = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    prior, _ = train_prior(scale, root=root, seed=seed, device=device, progress=False)
    z = prior.sample(samples, torch.Generator().manual_seed(10_000 + seed))
    images = prior.decode(z)
    model.eval()
    with torch.no_grad():
        out = [torch.softmax(model(images[i:i + 256].to(device)).float(), -1).cpu() for i in range(0, samples, 256)]
    return torch.cat(out)


def calibrated_temperature(name: str, scale: str, *, variant: str = "ssd", seed: int = 0, root=None,
                           device=None) -> dict:
    """The temperature that randomises generated images' labels at our |Y| as often as the paper's T (of
    ``variant``) does at the paper's |Y| (cached): ``{"T", "clipped", "paper_T", "rate", "our_rate_at_paper_T",
    "classes", "paper_classes", "samples", "top_probability"}`` (rates = mean probability that the draw keeps the
    top-1 label; ``clipped``: the paper's rate lies below what our class count allows, T is :data:`MAX_T`)."""
    params = ssd_params(name, variant)
    model, info = train_target(name, "none", scale, device=resolve_device(device), seed=seed, root=root,
                               progress=False)
    prior, pinfo = train_prior(scale, root=root, seed=seed, device=resolve_device(device), progress=False)
    config = {"kind": "ssd-temperature", "rule": "uniform tail; clipped at MAX_T", "setting": name,
              "target": info["key"], "prior": prior.key,
              "variant": variant, "paper_T": params["T"], "paper_classes": paper_classes(name),
              "samples": budget_value(CALIBRATION_SAMPLES, scale, "samples"), "seed": seed}

    def compute(_):
        probs = generated_outputs(name, scale, seed=seed, root=root, device=device)
        synthetic = synthetic_outputs(probs.max(-1).values, config["paper_classes"])
        rate = float(label_survival(synthetic, params["T"]).mean())
        floor = float(label_survival(probs, MAX_T).mean())
        T = temperature_for_survival(probs, rate, high=MAX_T) if rate >= floor else MAX_T
        return {"T": T, "clipped": rate < floor, "paper_T": params["T"], "rate": rate,
                "our_rate_at_paper_T": float(label_survival(probs, params["T"]).mean()),
                "classes": int(probs.shape[1]), "paper_classes": config["paper_classes"],
                "samples": int(probs.shape[0]), "top_probability": float(probs.max(-1).values.mean())}

    payload, _ = cached("calibration", config, compute, name=f"ssd-T-{name}-{variant}")
    return payload
