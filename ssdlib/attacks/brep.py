"""BREP-MI (Kahla et al., CVPR 2022): boundary repulsion from the target's top-1 labels only.

Following the official ``brep_mi.py``, ``brep_mi_utils.py`` and ``config2.yaml``
(github.com/m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion):

* start points (the shared setup): batches of ``start_batch`` (256) prior latents clamped to +-``clamp`` (1.5) are
  labelled by the target; a class's start is the first latent labelled as it (targeted attack). The official loop
  runs until every attacked class is found; here it runs exactly ``start_batches`` batches (the same queries on
  every row) and records the first ``top_k`` latents of every label, so classes never found are reported;
* each iteration at radius R (start ``radius`` 2): ``sphere_points`` (32) points on the sphere of radius R around z
  (not clamped), each labelled +1 (in class) or -1; repulsion only (in-class points contribute nothing): the
  direction is the mean of ``label01 * perturbation`` over the sphere, divided by the radius; step ``min(R/3, 3)``;
  the new point is clamped to +-1.5 and accepted only if the target still labels it as the class;
* the radius grows x``growth`` (1.3) when the sphere's labels sum to more than 0.75 x 32 (29 of 32 in class); the
  official code then divides the step's direction by the grown radius, and so does this one;
* the result is the point accepted at the last radius increase (the start point if the radius never grew).

Departures, each because the official rule makes the effort depend on the target's answers (the fair protocol
requires the same effort on every row, as Mirror's early stop is off): every chain runs exactly ``iterations``
sphere evaluations, rejected steps and radius increases included (officially neither counts as an iteration, and
the chain stops after ``patience`` = 1,000 accepted iterations without growth; ``patience`` is available and off
by default); each class runs ``top_k`` chains (official: one), from its first ``top_k`` start points (cycled when
fewer were found), so that every row holds as many reconstructions as the other attacks', batched into one oracle
call per step. A class with no start point returns the first prior latents of the search (the attacker has
nothing better), with ``stopped="no start"``.

MIBench (the toolbox the SSD paper ran) differs from the official code in ways that can move a number: in-class
sphere points also attract, there is no acceptance test, no clamp and no patience rule, the radius grows when at
least 25 of 32 points are in class, and it returns the final point. This module follows the official code.
"""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .base import Attack, AttackResult, QueryBudgetExceeded, class_generator

__all__ = ["BREP"]


class BREP(Attack):
    """BREP-MI's label-only boundary repulsion; budgets per scale in :attr:`EFFORT`, the rest in :attr:`DEFAULTS`.

    ``AttackResult.scores`` holds, per returned point, the share of its chain's last sphere that the target labelled
    as the class (a label-only stand-in for confidence); ``history`` the mean radius and in-class share per
    iteration; ``diagnostics`` the radius growths, rejected steps, chains whose radius never grew and starts found.
    """

    name = "brep"
    mode = "hard"
    #: start_batches x start_batch latents labelled once (shared by all classes); iterations per chain; top_k
    #: chains (and images) per class. paper: the official batch (256) and, since the official search runs until
    #: every class is found, enough batches for 1,000 classes; iterations are not stated in either paper version
    #: (the official chain stops after 1,000 accepted iterations without growth): 2,000 per chain here.
    EFFORT = {
        "paper": dict(start_batches=400, start_batch=256, iterations=2_000, top_k=5),
        "cpu": dict(start_batches=16, start_batch=256, iterations=5, top_k=5),
        "smoke": dict(start_batches=2, start_batch=64, iterations=3, top_k=2),
    }
    #: official config2.yaml: 32 sphere points, radius 2, growth 1.3, clamp 1.5, repulsion only; the growth rule
    #: ``sum(+-1) > 0.75 * 32``; ``patience`` None: no early stop (official 1,000, see the module docstring).
    DEFAULTS = dict(sphere_points=32, radius=2.0, growth=1.3, growth_share=0.75, max_step=3.0, clamp=1.5,
                    repulsion_only=True, patience=None)
    SETUP_KEYS = ("start_batches", "start_batch", "top_k", "clamp")

    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        for key in ("start_batches", "start_batch", "iterations", "top_k", "sphere_points"):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ValueError(f"brep parameter {key} must be a positive integer, got {p[key]!r}")
        for key in ("radius", "growth", "clamp", "max_step"):
            if not p[key] > 0:
                raise ValueError(f"brep parameter {key} must be positive, got {p[key]!r}")
        if not 0 <= p["growth_share"] < 1:
            raise ValueError(f"brep's growth_share must lie in [0, 1), got {p['growth_share']!r}")
        if p["patience"] is not None and (not isinstance(p["patience"], int) or p["patience"] < 1):
            raise ValueError(f"brep's patience must be None (no early stop) or a positive integer, "
                             f"got {p['patience']!r}")

    def planned_queries(self, num_classes: int) -> dict:
        p = self.params
        return {"setup": p["start_batches"] * p["start_batch"],
                "per_class": p["top_k"] * p["iterations"] * (p["sphere_points"] + 1)}

    def setup(self, oracle, *, seed: int = 0) -> dict:
        """Label ``start_batches`` batches of clamped prior latents; keep each label's first ``top_k`` latents."""
        oracle = self.check(oracle)
        start, q0 = time.perf_counter(), oracle.queries
        p = self.params
        gen = class_generator(seed, -1, salt=3)
        latents, labels = [], []
        for _ in tqdm(range(p["start_batches"]), desc="brep starts", disable=not self.progress):
            z = self.prior.sample(p["start_batch"], gen).clamp(-p["clamp"], p["clamp"])
            labels.append(oracle(self.prior.decode(z)).long().cpu())
            latents.append(z)
        latents, labels = torch.cat(latents), torch.cat(labels)
        num_classes = int(oracle.num_classes or int(labels.max()) + 1)
        first = torch.full((num_classes, p["top_k"]), -1, dtype=torch.long)
        for c in range(num_classes):
            hits = (labels == c).nonzero().flatten()[:p["top_k"]]
            first[c, :len(hits)] = hits
        return {"latents": latents, "labels": labels, "first": first, "queries": oracle.queries - q0,
                "seconds": time.perf_counter() - start}

    def attack_class(self, oracle, target: int, setup: dict, *, seed: int = 0) -> AttackResult:
        oracle = self.check(oracle)
        p = self.params
        if not 0 <= target < setup["first"].shape[0]:
            raise ValueError(f"target class {target} out of range 0..{setup['first'].shape[0] - 1}")
        start, q0 = time.perf_counter(), oracle.queries
        gen = class_generator(seed, target)
        found = setup["first"][target][setup["first"][target] >= 0]
        k = p["top_k"]
        if len(found) == 0:
            z = setup["latents"][:k].clone()
            return AttackResult(self.name, int(target), self.prior.decode(z), z, torch.zeros(k), 0,
                                time.perf_counter() - start, 0.0, 0.0, "no start", 0,
                                int(setup.get("queries", 0)), float(setup.get("seconds", 0.0)), [], dict(self.params),
                                {"starts_found": 0.0, "growths": 0.0, "rejected": 0.0, "never_grew": 1.0,
                                 "final_radius": 0.0})
        z = setup["latents"][found[torch.arange(k) % len(found)]].clone()  # [k, d], cycled when fewer were found
        radius = torch.full((k,), float(p["radius"]))
        back = z.clone()  # the point accepted at the last radius increase (the start until it grows)
        growths = torch.zeros(k, dtype=torch.long)
        rejected = torch.zeros(k, dtype=torch.long)
        share = torch.zeros(k)
        first_share = None
        since_growth = torch.zeros(k, dtype=torch.long)
        active = torch.ones(k, dtype=torch.bool)
        history, stopped, done = [], "generations", 0
        m = p["sphere_points"]
        for _ in tqdm(range(p["iterations"]), desc=f"brep class {target}", disable=not self.progress, leave=False):
            idx = active.nonzero().flatten()
            if not len(idx):
                stopped = "patience"
                break
            n = len(idx)
            direction = torch.randn(n, m, z.shape[1], generator=gen)
            r = radius[idx][:, None, None]
            step_size = torch.clamp(radius[idx] / 3, max=p["max_step"])[:, None]
            perturbation = r * direction / direction.norm(dim=2, keepdim=True)
            points = z[idx][:, None] + perturbation
            try:
                labels = oracle(self.prior.decode(points.reshape(n * m, -1))).long().cpu().view(n, m)
            except QueryBudgetExceeded:
                stopped = "budget"
                break
            sign = torch.where(labels == target, 1.0, -1.0)
            share[idx] = (sign > 0).float().mean(1)
            if first_share is None:
                first_share = share.clone()
            grow = sign.sum(1) > p["growth_share"] * m
            radius[idx] = torch.where(grow, radius[idx] * p["growth"], radius[idx])
            weight = (sign - 1) / 2 if p["repulsion_only"] else sign
            grad = (weight[:, :, None] * perturbation).mean(1) / radius[idx][:, None]
            candidate = (z[idx] + step_size * grad).clamp(-p["clamp"], p["clamp"])
            try:
                keep = oracle(self.prior.decode(candidate)).long().cpu() == target
            except QueryBudgetExceeded:
                stopped = "budget"
                break
            z[idx[keep]] = candidate[keep]
            rejected[idx[~keep]] += 1
            grew_and_kept = grow & keep
            back[idx[grew_and_kept]] = z[idx[grew_and_kept]]
            growths[idx] += grow.long()
            since_growth[idx] = torch.where(grow, 0, since_growth[idx] + keep.long())
            if p["patience"] is not None:
                active[idx] = since_growth[idx] < p["patience"]
            done += 1
            history.append({"radius": float(radius.mean()), "share": float(share.mean()),
                            "accepted": float(keep.float().mean())})
        images = self.prior.decode(back)
        first_share = share if first_share is None else first_share
        diagnostics = {"starts_found": float(len(found)), "growths": float(growths.float().mean()),
                       "rejected": float(rejected.float().mean()), "never_grew": float((growths == 0).float().mean()),
                       "final_radius": float(radius.mean())}
        return AttackResult(self.name, int(target), images, back, share.clone(), oracle.queries - q0,
                            time.perf_counter() - start, float(first_share.max()), float(share.max()), stopped, done,
                            int(setup.get("queries", 0)), float(setup.get("seconds", 0.0)), history,
                            dict(self.params), diagnostics)
