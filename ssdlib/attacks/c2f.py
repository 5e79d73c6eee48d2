"""C2FMI (Ye et al., IEEE TDSC 2023): coarse-to-fine black-box inversion, an inversion network then evolution.

Stage I (coarse). From images passed through the soft-label oracle, learn an inversion network from the target's
top-k log-probabilities to a face representation; then, for the attacked class c, optimise latents with Adam so
that the representation of G(z) matches the inversion of a prediction vector concentrated on c. Stage II (fine):
differential evolution on the oracle's probability of c. The target is only ever queried; gradients flow only
through the attacker's own networks (inversion network, representation, generator).

The representation. The official code regresses the logits of a pretrained FaceNet (CASIA-WebFace) and descends
through it. Our one pretrained face network is dlib's, which is not differentiable and is also our evaluator and
the delta_face metric: distilling a student of it would make C2F optimise toward the very feature space it is
judged in (the paper's attacker and evaluator are different networks). So by default the representation of G(z) is
its latent z itself: the inversion network is trained on pairs (z, oracle(G(z))) of prior samples and maps
log-probabilities straight to the prior's latent space, and stage I is the official Adam schedule pulling each
starting latent toward the inverted latent. This needs no download and works for any pluggable prior. A user with a
differentiable face network (e.g. a FaceNet at paper scale) passes it as ``representation``; the inversion then
targets ``representation(G(z))`` and stage I descends through it, as the official code does.

Defaults, from the official repository (github.com/MiLabHITSZ/2022YeC2FMI) and the Model-Inversion-Attack-ToolBox:
* inversion network (``models/predict2feature.py``, ``utils/train_inv.py``): input = the top-``top_logits``
  probabilities, log (floored at -1000) + 50, shifted to be non-negative, scattered back into a zero vector and
  L2-normalised; MLP of two hidden layers (4096, LeakyReLU 0.2), dropout 0.25, linear output; MSE loss, Adam lr 1e-3,
  x0.8 every 2 of 20 epochs (here every 10% of the epochs), batch 128, 150,000 training images. Smaller scales
  see far fewer pairs, so they train for more epochs (the network is tiny next to the queries); ``top_logits`` 100
  as in the original toolbox config (``mask``) and the official anti-defense script (the plain script keeps all
  classes);
* stage I (``main_attack.py``): 16 latents, each the mean of 2 prior samples; Adam lr 0.02, 20 steps; the target
  vector is |N(0, 1)| noise with the class entry set to 1e18, L2-normalised; the 10 best by oracle probability go on;
* stage II (``utils/DE.py``, ``DE_c2b_5_bin2``): population 32, the missing members made as
  0.7 * (x1 + x2 + 2 x3) / 4 + 0.3 * (mean of 3 prior samples); child = x_i + 0.02 (x_best - x_i) + beta * sum of 4
  random differences, beta 0.1 (in the last 30 of 500 generations 0.1 * (G - g) / 50; here the last 6% of G
  generations, 0.1 * (G - g) / (G / 10), so the schedule scales with the budget), binomial crossover 0.5 with the
  parent, greedy replacement; parents are re-scored every generation, as officially (which matters for randomised
  defenses); 500 generations (the toolbox uses 300); result = the ``top_k`` best (the toolbox's ``final_num`` 5).
The official DE does not clip latents (``bound_std`` None); the inversion network's width is a per-scale budget.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .base import Attack, AttackResult, QueryBudgetExceeded, class_generator

__all__ = ["C2F", "InversionNet", "inversion_input"]


def inversion_input(probs: torch.Tensor, top_logits: int) -> torch.Tensor:
    """C2FMI's input encoding of probability vectors ``[N, C]``: top-k log-probs (+50, floored, shifted >= 0),
    zeros elsewhere, L2-normalised."""
    k = min(int(top_logits), probs.shape[-1])
    top, index = probs.float().topk(k, dim=-1)
    top = top.clamp_min(1e-38).log().clamp_min(-1000.0) + 50.0
    top = top + F.relu(-top.min(dim=1, keepdim=True).values)
    return F.normalize(torch.zeros_like(probs, dtype=torch.float32).scatter_(1, index, top), dim=1)


class InversionNet(nn.Module):
    """Prediction vector ``[N, C]`` -> representation ``[N, D]`` (C2FMI's ``predict2feature``)."""

    def __init__(self, num_classes: int, out_dim: int, hidden: int, top_logits: int, dropout: float = 0.25):
        super().__init__()
        self.top_logits = int(top_logits)
        self.net = nn.Sequential(nn.Linear(num_classes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Dropout(dropout), nn.Linear(hidden, out_dim))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(inversion_input(probs, self.top_logits))


class C2F(Attack):
    """C2FMI with a latent (default) or user-given differentiable representation; budgets in :attr:`EFFORT`."""

    name = "c2f"
    mode = "soft"
    #: inversion_* = stage-I inversion network (training pairs, epochs, hidden width); stage1_* = latents optimised,
    #: Adam steps, survivors; population / generations = stage-II DE; top_k images kept per class. cpu is sized so
    #: that every row of the three settings fits the notebook budget with the same effort per row; the attack page
    #: reports the measured cost per class.
    EFFORT = {
        "paper": dict(inversion_samples=150_000, inversion_epochs=20, inversion_hidden=4096, stage1_batch=16,
                      stage1_steps=20, stage1_keep=10, population=32, generations=500, top_k=5),
        "cpu": dict(inversion_samples=2_000, inversion_epochs=30, inversion_hidden=256, stage1_batch=16,
                    stage1_steps=20, stage1_keep=10, population=16, generations=12, top_k=5),
        "smoke": dict(inversion_samples=128, inversion_epochs=5, inversion_hidden=32, stage1_batch=8,
                      stage1_steps=5, stage1_keep=4, population=8, generations=3, top_k=2),
    }
    DEFAULTS = dict(top_logits=100, inversion_lr=1e-3, inversion_batch=128, inversion_dropout=0.25,
                    inversion_lr_step=0.1, inversion_lr_gamma=0.8, stage1_lr=0.02, de_differences=4, de_beta=0.1,
                    de_pull=0.02, de_crossover=0.5, de_final=0.06, bound_std=None, reevaluate=True, batch_size=500)
    SETUP_KEYS = ("inversion_samples", "inversion_epochs", "inversion_hidden", "top_logits", "inversion_lr",
                  "inversion_batch", "inversion_dropout", "inversion_lr_step", "inversion_lr_gamma")

    def __init__(self, prior, *, scale: str = "cpu", representation: nn.Module | None = None,
                 progress: bool = False, **overrides):
        super().__init__(prior, scale=scale, progress=progress, **overrides)
        if representation is not None and not isinstance(representation, nn.Module):
            raise TypeError(f"representation must be a differentiable torch.nn.Module, got "
                            f"{type(representation).__name__}")
        self.representation = representation

    def _check_params(self) -> None:
        super()._check_params()
        p = self.params
        if p["stage1_keep"] < 3 or p["stage1_keep"] > min(p["stage1_batch"], p["population"]):
            raise ValueError("c2f needs 3 <= stage1_keep <= min(stage1_batch, population) (DE mixes 3 survivors)")
        if p["top_k"] < 1 or p["top_k"] > p["population"]:
            raise ValueError(f"top_k must lie in 1..population, got {p['top_k']}")
        if p["inversion_samples"] < 2:
            raise ValueError("c2f needs at least 2 inversion_samples")

    def planned_queries(self, num_classes: int) -> dict:
        p = self.params
        per_gen = p["population"] * (2 if p["reevaluate"] else 1)
        extra = 0 if p["reevaluate"] else p["population"]
        return {"setup": p["inversion_samples"],
                "per_class": 2 * p["stage1_batch"] + extra + p["generations"] * per_gen}

    # ------------------------------------------------------------------------------------ representation
    def _represent(self, z: torch.Tensor, grad: bool = False) -> torch.Tensor:
        if self.representation is None:
            return z
        if grad:
            return self.representation(self.prior.decode(z, grad=True))
        with torch.no_grad():
            return self.representation(self.prior.decode(z).to(self.prior.device)).float().cpu()

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, oracle, *, seed: int = 0) -> dict:
        """Train the inversion network on ``inversion_samples`` prior samples passed through the oracle."""
        oracle = self.check(oracle)
        p = self.params
        start, q0 = time.perf_counter(), oracle.queries
        gen = class_generator(seed, -1, salt=2)
        z = self.prior.sample(p["inversion_samples"], gen)
        probs, reps = [], []
        for i in tqdm(range(0, len(z), p["batch_size"]), desc="c2f inversion data", disable=not self.progress):
            zi = z[i:i + p["batch_size"]]
            probs.append(oracle(self.prior.decode(zi)).float().cpu())
            reps.append(self._represent(zi))
        probs, reps = torch.cat(probs), torch.cat(reps)
        n_valid = max(1, len(z) // 10)
        x_train, y_train, x_valid, y_valid = probs[n_valid:], reps[n_valid:], probs[:n_valid], reps[:n_valid]
        losses = []
        with torch.random.fork_rng(devices=[]):  # initialisation and dropout seeded, global RNG left as it was
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            net = InversionNet(probs.shape[1], reps.shape[1], p["inversion_hidden"], p["top_logits"],
                               p["inversion_dropout"])
            opt = torch.optim.Adam(net.parameters(), lr=p["inversion_lr"])
            every = max(1, round(p["inversion_lr_step"] * p["inversion_epochs"]))  # official: 2 of 20 epochs
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=p["inversion_lr_gamma"])
            for _ in tqdm(range(p["inversion_epochs"]), desc="c2f inversion net", disable=not self.progress):
                net.train()
                order = torch.randperm(len(x_train), generator=gen)
                total = 0.0
                for j in range(0, len(order), p["inversion_batch"]):
                    b = order[j:j + p["inversion_batch"]]
                    loss = F.mse_loss(net(x_train[b]), y_train[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(b)
                sched.step()
                net.eval()
                with torch.no_grad():
                    valid = F.mse_loss(net(x_valid), y_valid).item()
                losses.append({"train_mse": total / len(x_train), "valid_mse": valid})
        # MSE of always answering the mean representation: the inversion must beat it to carry information.
        baseline = F.mse_loss(y_train.mean(0).expand_as(y_valid), y_valid).item()
        return {"inversion": {k: v.detach().clone() for k, v in net.state_dict().items()},
                "num_classes": probs.shape[1], "out_dim": reps.shape[1], "history": losses,
                "valid_mse_of_mean": baseline, "queries": oracle.queries - q0, "seconds": time.perf_counter() - start}

    def inversion_net(self, setup: dict) -> InversionNet:
        """The trained inversion network of a setup, in eval mode."""
        p = self.params
        net = InversionNet(setup["num_classes"], setup["out_dim"], p["inversion_hidden"], p["top_logits"],
                           p["inversion_dropout"])
        net.load_state_dict(setup["inversion"])
        return net.eval()

    # ---------------------------------------------------------------------------------------- one class
    def attack_class(self, oracle, target: int, setup: dict, *, seed: int = 0) -> AttackResult:
        oracle = self.check(oracle)
        p = self.params
        if not 0 <= target < setup["num_classes"]:
            raise ValueError(f"target class {target} out of range 0..{setup['num_classes'] - 1}")
        start, q0 = time.perf_counter(), oracle.queries
        gen = class_generator(seed, target)
        history, stopped = [], "generations"
        # Stage I: pull latents toward the inverted representation of class-concentrated prediction vectors.
        z0, z = self._stage1(self.inversion_net(setup), target, setup["num_classes"], gen)
        try:  # the starting and the optimised latents in one query: stage I's gain is measured, not assumed
            both = self.score(oracle, torch.cat([z0, z]), target)
        except QueryBudgetExceeded:
            both = None
        if both is None:  # no budget even for stage I's selection: return the unscored latents
            return self._result(target, z, torch.zeros(len(z)), queries=oracle.queries - q0, start=start,
                                initial=0.0, stopped="budget", history=history, setup=setup, generations=0)
        before, s = both[:len(z0)], both[len(z0):]
        diagnostics = {"stage1_before": float(before.mean()), "stage1_after": float(s.mean()),
                       "inversion_mse": float(setup["history"][-1]["valid_mse"]) if setup["history"] else float("nan"),
                       "inversion_mse_of_mean": float(setup["valid_mse_of_mean"])}
        keep = s.topk(p["stage1_keep"]).indices
        pop, fit = self._extend(z[keep], gen), None
        initial = float(s.max())
        fit = torch.cat([s[keep], torch.full((len(pop) - len(keep),), float("nan"))])
        # Stage II: differential evolution on the oracle's probability of the target.
        G, done = p["generations"], 0
        bar = tqdm(range(G), desc=f"c2f class {target}", disable=not self.progress, leave=False)
        for g in bar:
            try:
                if p["reevaluate"] or torch.isnan(fit).any():
                    fit = self.score(oracle, pop, target)
                history.append({"best": float(fit.max()), "mean": float(fit.mean())})
                children = self._children(pop, fit, self.step_size(g, G), gen)
                child_fit = self.score(oracle, children, target)
            except QueryBudgetExceeded:
                stopped = "budget"
                break
            better = child_fit > fit
            pop = torch.where(better[:, None], children, pop)
            fit = torch.where(better, child_fit, fit)
            done += 1
            bar.set_postfix(best=f"{float(fit.max()):.3f}")
        if torch.isnan(fit).any():  # only when the budget ran out before the extended population was scored
            fit = torch.nan_to_num(fit, nan=-1.0)
        history.append({"best": float(fit.max()), "mean": float(fit[fit >= 0].mean())})
        return self._result(target, pop, fit, queries=oracle.queries - q0, start=start, initial=initial,
                            stopped=stopped, history=history, setup=setup, generations=done,
                            diagnostics=diagnostics)

    def _stage1(self, net: InversionNet, target: int, num_classes: int, gen: torch.Generator):
        """``(start, optimised)`` latents of stage I. Gradients are taken with respect to the latents only
        (``torch.autograd.grad``), so the prior's generator and a user's representation keep no gradients."""
        p = self.params
        b = p["stage1_batch"]
        z0 = self.prior.sample(2 * b, gen).view(2, b, -1).mean(0)
        vec = torch.randn(b, num_classes, generator=gen).abs()
        vec[:, target] = 1e18
        with torch.no_grad():
            goal = net(F.normalize(vec, dim=1))
        z = z0.clone().to(self.prior.device).requires_grad_(True)
        goal = goal.to(self.prior.device)
        opt = torch.optim.Adam([z], lr=p["stage1_lr"])
        for _ in range(p["stage1_steps"]):
            loss = F.mse_loss(self._represent(z, grad=True), goal)
            (z.grad,) = torch.autograd.grad(loss, [z])
            opt.step()
        return z0, z.detach().cpu()

    def step_size(self, g: int, G: int) -> float:
        """DE's differential weight beta at generation ``g`` of ``G``: ``de_beta``, then over the last ``de_final``
        share of the generations ``de_beta * (G - g) / (G / 10)`` (official: 0.1 * (500 - g) / 50 over the last 30
        of 500)."""
        p = self.params
        return p["de_beta"] if g < G * (1 - p["de_final"]) else p["de_beta"] * (G - g) / (0.1 * G)

    def _extend(self, survivors: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Fill the population from the survivors: 0.7 * mix of 3 distinct survivors + 0.3 * mean of 3 samples."""
        need = self.params["population"] - len(survivors)
        if need <= 0:
            return survivors[:self.params["population"]]
        idx = torch.stack([torch.randperm(len(survivors), generator=gen)[:3] for _ in range(need)])
        x1, x2, x3 = survivors[idx[:, 0]], survivors[idx[:, 1]], survivors[idx[:, 2]]
        rand = self.prior.sample(3 * need, gen).view(3, need, -1).mean(0)
        return torch.cat([survivors, 0.7 * (0.5 * (0.5 * (x1 + x2) + x3)) + 0.3 * rand])

    def _children(self, pop: torch.Tensor, fit: torch.Tensor, beta: float, gen: torch.Generator) -> torch.Tensor:
        p = self.params
        n, d = pop.shape
        best = pop[int(torch.argmax(fit))]
        pairs = torch.randint(0, n, (n, p["de_differences"], 2), generator=gen)
        diff = (pop[pairs[..., 0]] - pop[pairs[..., 1]]).sum(1)
        mutant = pop + p["de_pull"] * (best - pop) + beta * diff
        from_mutant = torch.rand(n, d, generator=gen) > p["de_crossover"]
        return self.prior.clip(torch.where(from_mutant, mutant, pop), p["bound_std"])
