"""DP-SGD targets (beyond the paper, with Opacus, the optional extra ``ssdlib[dp]``): each setting's target trained
with differential privacy at two privacy budgets, cached, and their test accuracy beside epsilon and delta.

The architecture changes Opacus needs: every BatchNorm becomes a GroupNorm (``ModuleValidator.fix``: batch
statistics mix the examples of a batch, which per-example clipping cannot bound) and no activation works in place
(Opacus's backward hooks forbid modifying their outputs). The model starts from the family's public backbone like
every other target (its convolution and linear weights; the new GroupNorms start at identity), then trains with
Poisson-sampled batches, per-example gradients clipped to :data:`MAX_GRAD_NORM` and Gaussian noise calibrated by
Opacus's RDP accountant to reach ``epsilon`` at ``delta`` after the recipe's epochs. Training has its own loop
here, not :func:`ssdlib.training.fit`: Opacus replaces the optimizer and the data loader.
"""
from __future__ import annotations

import itertools
import time
import warnings

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..cache import cached, state_fingerprint
from ..models.classifiers import build_model
from ..scales import budget, cap, check_scale
from ..metrics import utility_metrics
from ..training import body_state, predict_proba
from ..utils import resolve_device
from .attack_runs import OracleFactory
from .settings import setting
from .targets import private_data, public_backbone, train_target

__all__ = ["EPSILONS", "DELTA", "MAX_GRAD_NORM", "DP_RECIPES", "DP_ROWS", "dp_row_title", "dp_model",
           "train_dp_target", "dp_oracle", "dp_utility"]

#: The two privacy budgets (epsilon) every setting is trained at: a strong and a loose one.
EPSILONS = (1.0, 8.0)
#: delta of every budget: below 1 / |D_train| for every setting (LFW: 1,731 training images at `cpu`).
DELTA = 1e-5
#: Per-example gradient clipping norm.
MAX_GRAD_NORM = 1.0
#: DP-SGD recipes per scale (SGD without momentum or weight decay, Poisson batches of this expected size).
DP_RECIPES = {"smoke": dict(epochs=1, batch_size=32, lr=0.5), "cpu": dict(epochs=15, batch_size=128, lr=0.5),
              "paper": dict(epochs=50, batch_size=256, lr=0.5)}
#: The DP-SGD rows of the attack tables (second block, ours), by their budget epsilon: ``dp_eps1``, ``dp_eps8``.
DP_ROWS = {f"dp_eps{e:g}": e for e in EPSILONS}


def dp_row_title(row: str) -> str:
    """The display name of a DP-SGD row: ``dp_eps1`` -> "DP-SGD (ε = 1)"."""
    if row not in DP_ROWS:
        raise ValueError(f"unknown DP-SGD row {row!r}; valid: {', '.join(DP_ROWS)}")
    return f"DP-SGD (ε = {DP_ROWS[row]:g})"


def dp_model(family: str, num_classes: int, scale: str, init_state: dict | None = None) -> nn.Module:
    """The ``family`` member of ``scale`` made trainable by Opacus: weights from ``init_state`` (a backbone's, without
    its classifier), every BatchNorm replaced by a GroupNorm, no in-place activation."""
    from opacus.validators import ModuleValidator

    model = build_model(family, num_classes, scale)
    if init_state is not None:
        missing = set(model.load_state_dict(init_state, strict=False).missing_keys)
        if any(not k.startswith("classifier.") for k in missing):
            raise ValueError(f"init_state lacks weights of the model: {sorted(missing)[:5]}")
    model = ModuleValidator.fix(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ValueError(f"the model is not trainable by Opacus: {problems[:3]}")
    return model


def train_dp_target(name: str, scale: str, epsilon: float, *, delta: float = DELTA, seed: int = 0, device=None,
                    root=None, progress: bool = True, cache: bool = True) -> tuple[nn.Module, dict]:
    """Train (or load from the cache) the target of setting ``name`` with DP-SGD at (``epsilon``, ``delta``):
    ``(model in eval mode, info)``, info holding the epsilon actually spent, the noise multiplier and the seconds."""
    from opacus import PrivacyEngine

    check_scale(scale)
    if not (epsilon > 0 and 0 < delta < 1):
        raise ValueError(f"epsilon must be > 0 and delta in (0, 1), got {epsilon}, {delta}")
    device = resolve_device(device)
    s = setting(name)
    data = private_data(s.dataset, scale, seed=seed, root=root)
    init = body_state(public_backbone(s.family, scale, seed=seed, root=root, device=device, progress=progress))
    recipe = budget(DP_RECIPES, scale)
    config = {"kind": "dp-target", "setting": name, "scale": scale, "epsilon": float(epsilon), "delta": float(delta),
              "max_grad_norm": MAX_GRAD_NORM, "recipe": recipe, "seed": int(seed), "init": state_fingerprint(init),
              "train": [len(data.train), data.num_classes]}

    def compute(_):
        torch.manual_seed(seed)
        model = dp_model(s.family, data.num_classes, scale, init).to(device)
        images = data.train.images.float() / 255.0 if data.train.images.dtype == torch.uint8 else data.train.images
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, torch.as_tensor(data.train.labels).long()),
            batch_size=recipe["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(seed))
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"])
        with warnings.catch_warnings():  # Opacus warns about its secure RNG being off (reproducibility wants it off)
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            private, optimizer, loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader, target_epsilon=float(epsilon),
                target_delta=float(delta), epochs=recipe["epochs"], max_grad_norm=MAX_GRAD_NORM)
            start = time.perf_counter()
            private.train()
            for _ in tqdm(range(recipe["epochs"]), desc=f"DP-SGD {name} eps={epsilon:g}", disable=not progress):
                for x, y in itertools.islice(loader, cap("batches", None)):  # one batch in the dry run
                    if not len(x):  # Poisson sampling can draw an empty batch
                        continue
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(private(x.to(device)), y.to(device)).backward()
                    optimizer.step()
            spent = float(engine.get_epsilon(float(delta)))
        return {"state": {k: v.detach().cpu() for k, v in private._module.state_dict().items()},
                "epsilon_spent": spent, "noise_multiplier": float(optimizer.noise_multiplier),
                "seconds": time.perf_counter() - start}

    payload, info = cached("dp-targets", config, compute, name=f"{name}-{scale}-eps{epsilon:g}", enabled=cache)
    model = dp_model(s.family, data.num_classes, scale)
    model.load_state_dict(payload["state"])
    return model.to(device).eval(), {"key": info.key, "cached": info.cached, "epsilon": float(epsilon),
                                     "delta": float(delta), "epsilon_spent": payload["epsilon_spent"],
                                     "noise_multiplier": payload["noise_multiplier"],
                                     "train_seconds": payload["seconds"]}


def dp_oracle(name: str, row: str, scale: str, *, mode: str = "soft", device=None, seed: int = 0, root=None,
              progress: bool = False) -> tuple[OracleFactory, str, dict]:
    """``(factory, target_key, params)`` of setting ``name``'s DP-SGD target of ``row`` (a key of :data:`DP_ROWS`),
    released without any output defense, as the attack tables take a row."""
    if row not in DP_ROWS:
        raise ValueError(f"unknown DP-SGD row {row!r}; valid: {', '.join(DP_ROWS)}")
    model, info = train_dp_target(name, scale, DP_ROWS[row], seed=seed, device=device, root=root, progress=progress)
    params = {"dp_epsilon": info["epsilon"], "delta": info["delta"], "epsilon_spent": info["epsilon_spent"],
              "noise_multiplier": info["noise_multiplier"], "max_grad_norm": MAX_GRAD_NORM}
    return OracleFactory(model, mode=mode, name=f"{name}/{row}", seed=seed), info["key"], params


def dp_utility(name: str, scale: str, epsilons=EPSILONS, *, delta: float = DELTA, seed: int = 0, device=None,
               root=None, progress: bool = False) -> pd.DataFrame:
    """Table 3's columns for setting ``name``'s DP-SGD targets, one row per budget: test accuracy, and Avg / Max L1
    and CMI of their test outputs against the undefended target's (as for the training-time defenses), with epsilon
    (asked and spent), delta, the noise multiplier and the training minutes."""
    device = resolve_device(device)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    undefended, _ = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=progress)
    base = predict_proba(undefended, data.test, device=device)
    rows = []
    for eps in epsilons:
        model, info = train_dp_target(name, scale, eps, delta=delta, seed=seed, device=device, root=root,
                                      progress=progress)
        metrics = utility_metrics(base, predict_proba(model, data.test, device=device), data.test.labels)
        rows.append({"setting": name, "row": f"dp_eps{eps:g}", "epsilon": eps, "epsilon spent": info["epsilon_spent"],
                     "delta": delta, "noise multiplier": info["noise_multiplier"], **metrics,
                     "train_minutes": info["train_seconds"] / 60, "cached": info["cached"]})
    return pd.DataFrame(rows)
