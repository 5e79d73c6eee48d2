"""The adaptive attacker of Appendix H: query the same image n times and undo SSD's random draw.

SSD draws y ~ softmax(f(x) / T) afresh on every query. An attacker who knows the defense and T queries x repeatedly
(optionally each copy perturbed by a few grey levels, which defeats an exact input hash), counts the top-1 labels of
the answers to estimate P(y|x), and inverts the temperature: f_y = T log P(y|x) + c, projected onto the simplex
(``"inverted"``, the paper's three steps). Two simpler estimates use the same answers: their mean (``"mean"``) and
the mean of the answers carrying the most frequent top-1 label (``"majority"``). Every query goes through
:class:`ssdlib.blackbox.BlackBox`, which counts it; :func:`recovery` measures an estimate against the undefended
prediction, which the experiment (not the attacker) knows.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import check_oracle

__all__ = ["ESTIMATORS", "perturbed_copies", "repeat_queries", "label_frequencies", "project_simplex",
           "invert_temperature", "estimate_prediction", "recovery", "AveragingFront"]

#: The attacker's estimates of f(x) from n answers.
ESTIMATORS = ("inverted", "majority", "mean")


def perturbed_copies(images: torch.Tensor, copies: int, grey_levels: int = 0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``copies`` copies of each image ``[N, 3, H, W]`` -> ``[N * copies, 3, H, W]`` (image-major), each pixel moved
    by an integer number of grey levels drawn uniformly from [-grey_levels, grey_levels] (then clipped to [0, 1])."""
    if copies < 1 or grey_levels < 0:
        raise ValueError(f"copies must be >= 1 and grey_levels >= 0, got {copies}, {grey_levels}")
    x = images.repeat_interleave(copies, 0)
    if grey_levels == 0:
        return x
    noise = torch.randint(-grey_levels, grey_levels + 1, x.shape, generator=generator).to(x) / 255.0
    return (x + noise).clamp(0, 1)


def repeat_queries(oracle, images: torch.Tensor, repeats: int, *, grey_levels: int = 0, seed: int = 0,
                   chunk: int = 1024) -> torch.Tensor:
    """Ask ``oracle`` (a soft :class:`BlackBox`) ``repeats`` times about each image, each copy perturbed by up to
    ``grey_levels`` grey levels: answers ``[N, repeats, C]``. Costs exactly ``N * repeats`` queries."""
    oracle = check_oracle(oracle, "soft", "the averaging attacker")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    gen = torch.Generator().manual_seed(int(seed))
    per = max(1, chunk // repeats)
    out = [oracle(perturbed_copies(images[i:i + per], repeats, grey_levels, gen)).reshape(-1, repeats,
                                                                                             oracle.num_classes)
           for i in range(0, len(images), per)]
    return torch.cat(out) if out else torch.empty(0, repeats, oracle.num_classes)


def label_frequencies(answers: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Share of each top-1 label among the answers ``[N, n, C]`` (or labels ``[N, n]``): ``[N, C]`` float64."""
    labels = answers.argmax(-1) if answers.is_floating_point() else answers.long()
    C = answers.shape[-1] if answers.is_floating_point() else int(num_classes)
    counts = torch.zeros(labels.shape[0], C, dtype=torch.float64)
    counts.scatter_add_(1, labels.cpu(), torch.ones(labels.shape, dtype=torch.float64))
    return counts / labels.shape[1]


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    ind = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = ((u - css / ind) > 0).sum(-1, keepdim=True).clamp_min(1)
    tau = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - tau).clamp_min(0)


def invert_temperature(freqs: torch.Tensor, T: float, *, repeats: int, smoothing: float = 0.5) -> torch.Tensor:
    """f from estimated draw probabilities: P(y|x) = softmax(f / T) gives f_y = T log P(y|x) + c; the counts are
    smoothed (``smoothing`` added to each of the ``repeats`` counts) and the result projected onto the simplex."""
    if not T > 0:
        raise ValueError(f"the temperature must be positive to be inverted, got {T!r}")
    counts = freqs.double() * repeats + smoothing
    return project_simplex(T * torch.log(counts / counts.sum(-1, keepdim=True)))


def estimate_prediction(answers: torch.Tensor, T: float, estimator: str = "inverted") -> torch.Tensor:
    """The attacker's estimate of f(x) ``[N, C]`` from its answers ``[N, n, C]`` (see :data:`ESTIMATORS`)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    answers = answers.double().cpu()
    if estimator == "mean":
        return answers.mean(1)
    freqs = label_frequencies(answers)
    if estimator == "inverted":
        return invert_temperature(freqs, T, repeats=answers.shape[1])
    keep = (answers.argmax(-1) == freqs.argmax(-1, keepdim=True)).double()[..., None]
    return (answers * keep).sum(1) / keep.sum(1)


def recovery(estimate: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """How well ``estimate`` recovers the undefended prediction ``truth`` (both ``[N, C]``): top-1 agreement (%)
    and the mean L1 error."""
    estimate, truth = estimate.double().cpu(), truth.double().cpu()
    return {"top1": 100 * float((estimate.argmax(-1) == truth.argmax(-1)).double().mean()),
            "l1": float((estimate - truth).abs().sum(-1).mean())}


class AveragingFront(nn.Module):
    """The averaging attacker in front of another attack: a model whose answer for each image is the estimate of f(x)
    from ``repeats`` answers of ``oracle`` (perturbed copies), returned as log-probabilities. Wrap it in an outer
    :class:`BlackBox` (``BlackBox(AveragingFront(oracle, 8, T=...))``) and hand that to Mirror: the outer oracle
    counts the attack's queries, ``oracle`` the real ones (``repeats`` times as many)."""

    def __init__(self, oracle, repeats: int, *, T: float, estimator: str = "majority", grey_levels: int = 0,
                 seed: int = 0):
        super().__init__()
        if estimator not in ESTIMATORS or repeats < 1:
            raise ValueError(f"need an estimator of {ESTIMATORS} and repeats >= 1, got {estimator!r}, {repeats}")
        self.oracle = check_oracle(oracle, "soft", "the averaging attacker")
        self.num_classes = oracle.num_classes
        self.repeats, self.T, self.estimator, self.grey_levels = int(repeats), float(T), estimator, int(grey_levels)
        self.seed, self._calls = int(seed), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        answers = repeat_queries(self.oracle, x, self.repeats, grey_levels=self.grey_levels,
                                 seed=self.seed * 1_000_003 + self._calls)
        self._calls += 1
        estimate = estimate_prediction(answers, self.T, self.estimator)
        return torch.log(estimate.clamp_min(1e-12)).to(device=x.device, dtype=torch.float32)
