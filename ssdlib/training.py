"""One training loop for every target model and defense: deterministic, resumable, cached by configuration.

``fit`` trains with a ``TrainingDefense`` (``ssdlib.defenses``) and writes an atomic checkpoint after every
epoch, so a crash resumes from the last finished epoch (of the same configuration and data: both are checked).
Every epoch reseeds all generators from ``(seed, epoch)``, which makes a resumed run identical to an uninterrupted
one. ``train_or_load`` keys the final weights by the configuration, the data's fingerprints and the defense
(``ssdlib.cache``). ``predict_proba`` and ``evaluate`` read a model's outputs and accuracy.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .cache import atomic_save, cached, fingerprint, state_fingerprint
from .defenses import TrainingDefense, build_defense
from .models.classifiers import ARCHITECTURES, FAMILIES, build_model
from .scales import SCALES, cap
from .utils import resolve_device, seed_everything

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "multistep", "constant")


@dataclass
class TrainConfig:
    """Everything that determines a trained model (apart from the data): architecture, optimisation, defense."""

    family: str
    scale: str
    num_classes: int
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    augment: bool = True
    seed: int = 0
    defense: str = "none"
    defense_params: dict = field(default_factory=dict)
    init: str = ""  # fingerprint of the weights training starts from ("" = random initialisation)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; valid: {', '.join(SCALES)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size and lr must be positive, got {self.epochs}, "
                             f"{self.batch_size}, {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.milestones = tuple(int(m) for m in self.milestones)
        try:
            json.dumps(self.defense_params)
        except TypeError as err:
            raise ValueError("defense_params must be JSON-serialisable (they key the cache); pass objects such as "
                             f"TL's pretrained model through fit(..., defense=...) instead: {err}") from None

    def to_dict(self) -> dict:
        """Plain-JSON form (used for hashing and stored with checkpoints)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def body_state(model: nn.Module) -> dict:
    """A model's weights without its classifier: what a pretrained backbone hands to a model of other classes."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}


def init_model(config: TrainConfig, init_state: dict | None = None) -> nn.Module:
    """The model of ``config`` before training: initialised from ``config.seed`` (so training is reproducible), then,
    when ``config.init`` names starting weights, loaded from ``init_state`` (every weight but the classifier)."""
    seed_everything(config.seed)
    model = build_model(config.family, config.num_classes, config.scale)
    if bool(config.init) != (init_state is not None):
        raise ValueError("config.init and init_state go together: set config.init = state_fingerprint(init_state)"
                         f" (config.init is {config.init!r}, init_state {'given' if init_state else 'missing'})")
    if init_state is not None:
        if state_fingerprint(init_state) != config.init:
            raise ValueError(f"init_state does not match config.init={config.init!r}: another backbone")
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise ValueError(f"initial weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return model


# ---------------------------------------------------------------------------------------------- data
def _as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) from a FaceSet-like object (``images``/``labels``) or an ``(images, labels)`` pair."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise ValueError("data must be a FaceSet (with .images and .labels) or an (images, labels) pair, "
                         f"got {type(data).__name__}")
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if images.dim() != 4 or images.shape[1] != 3 or len(images) != len(labels):
        raise ValueError(f"images must be [N, 3, H, W] with one label each, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}")
    return images, labels


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] images as float [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Start/stop of each batch; a last batch of one image joins the one before (batch norm needs two)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _batches(data, batch_size: int, *, shuffle: bool, augment: bool, generator: torch.Generator | None):
    """Iterate ``(float images, labels)`` batches of a FaceSet or ``(images, labels)`` pair (sliced directly,
    augmented per image by ``ssdlib.data.augment`` with ``generator``), or of a torch Dataset as given."""
    if isinstance(data, Dataset) and not hasattr(data, "images"):
        yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
        return
    images, labels = _as_tensors(data)
    if augment:
        from .data import augment as augment_image  # the one place augmentation is defined
    n = len(labels)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i, j in batch_bounds(n, batch_size):
        idx = order[i:j]
        x = _to_float(images[idx])
        if augment:
            x = torch.stack([augment_image(img, generator=generator) for img in x])
        yield x, labels[idx]


def data_identity(data) -> dict | None:
    """Name, size and a content hash of a data set, so cached models are keyed by the data they saw."""
    if data is None:
        return None
    images, labels = _as_tensors(data)
    return {"name": getattr(data, "name", ""), "n": len(labels), "sha": fingerprint(images, labels)}


# ---------------------------------------------------------------------------------------------- loop
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**31


def _make_optimizer(params, config: TrainConfig):
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(optimizer, config: TrainConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                    gamma=config.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


def _check_defense(config: TrainConfig, defense: TrainingDefense | None) -> TrainingDefense:
    """The defense named by ``config`` (built from its params when not given); a mismatch is an error."""
    if defense is None:
        return build_defense(config.defense, **config.defense_params)
    if not isinstance(defense, TrainingDefense):
        raise ValueError(f"defense must be a TrainingDefense, got {type(defense).__name__}")
    if defense.name != config.defense:
        raise ValueError(f"config.defense is {config.defense!r} but the defense given is {defense.name!r}")
    return defense


def fit(model: nn.Module, train_set, valid_set=None, *, config: TrainConfig,
        defense: TrainingDefense | None = None, device=None, checkpoint: str | os.PathLike | None = None,
        progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train ``defense.wrap(model)`` on ``train_set`` for ``config.epochs``; return the trained network and
    a per-epoch history (loss, train/valid accuracy, lr, seconds, defense logs). With ``checkpoint``, the
    state is saved after each epoch and an existing checkpoint is resumed if it was written for the same config,
    defense and data (else a ValueError says which differs)."""
    if not isinstance(config, TrainConfig):
        raise ValueError("config must be a TrainConfig")
    data_ids = {"train": data_identity(train_set), "valid": data_identity(valid_set)}
    defense = _check_defense(config, defense)
    device = resolve_device(device)
    net = defense.wrap(model).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config)
    scheduler = _make_scheduler(optimizer, config)
    history: list[dict] = []
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        for what, mine in (("config", config.to_dict()), ("defense", defense.params()), ("data", data_ids)):
            if state.get(what) != mine:
                raise ValueError(f"checkpoint {ckpt_path} was written for another {what}; delete it or change the "
                                 "path")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = list(state["history"]), int(state["epoch"])

    bar = tqdm(range(start_epoch, config.epochs), desc=f"train {config.family}/{config.scale}/{defense.name}",
               disable=not progress, initial=start_epoch, total=config.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        gen = seed_everything(_epoch_seed(config.seed, epoch))
        net.train()
        defense.on_train(net)
        tot_loss, correct, seen, logs_sum = 0.0, 0, 0, {}
        batches = _batches(train_set, config.batch_size, shuffle=True, augment=config.augment, generator=gen)
        for x, y in itertools.islice(batches, cap("batches", None)):  # every batch, but one in the dry run
            x, y = x.to(device), y.to(device)
            loss, logs, logits = defense.loss(net, x, y, epoch, config.epochs)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(y)
            tot_loss += loss.item() * n
            correct += (logits.argmax(1) == y).sum().item()
            seen += n
            for k, v in logs.items():
                logs_sum[k] = logs_sum.get(k, 0.0) + float(v) * n
        record = {"epoch": epoch + 1, "train_loss": tot_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "lr": optimizer.param_groups[0]["lr"]}
        record.update({k: v / max(seen, 1) for k, v in logs_sum.items()})
        scheduler.step()
        if valid_set is not None:
            record["valid_acc"] = evaluate(net, valid_set, device=device)["accuracy"]
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                        val=f"{record.get('valid_acc', float('nan')):.3f}")
        if ckpt_path is not None:
            atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1,
                          "config": config.to_dict(), "defense": defense.params(), "data": data_ids}, ckpt_path)
    net.eval()
    return net, history


# -------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_proba(model: nn.Module, data, *, device=None, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities ``[N, K]`` (float32, CPU) of ``model`` in eval mode on a FaceSet, an
    ``(images, labels)`` pair or an image tensor (uint8 [0, 255] or float [0, 1]).

    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    >>> probs = predict_proba(net, torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8))
    >>> probs.shape, torch.allclose(probs.sum(1), torch.ones(5))
    (torch.Size([5, 4]), True)
    """
    device = resolve_device(device)
    images = data if isinstance(data, torch.Tensor) else _as_tensors(data)[0]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    out = [F.softmax(model(_to_float(images[i:i + batch_size]).to(device)).float(), dim=1).cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model, "num_classes", 0))


def evaluate(model: nn.Module, data, *, device=None, batch_size: int = 256, return_probs: bool = False) -> dict:
    """Top-1 accuracy and mean cross-entropy (and the probabilities if asked) on a labelled set.

    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    >>> images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    >>> result = evaluate(net, (images, torch.tensor([0, 1, 2, 3, 0])))
    >>> sorted(result), result["n"]
    (['accuracy', 'loss', 'n'], 5)
    """
    _, labels = _as_tensors(data)
    probs = predict_proba(model, data, device=device, batch_size=batch_size)
    acc = (probs.argmax(1) == labels).float().mean().item()
    nll = -torch.log(probs[torch.arange(len(labels)), labels].clamp_min(1e-12)).mean().item()
    result = {"accuracy": acc, "loss": nll, "n": len(labels)}
    if return_probs:
        result["probs"] = probs
    return result


# ------------------------------------------------------------------------------------------ caching
def model_config(config: TrainConfig, train_set, valid_set=None, defense: TrainingDefense | None = None) -> dict:
    """What a trained model depends on: config, architecture, data fingerprints and the defense's parameters."""
    defense = _check_defense(config, defense)
    return {"config": config.to_dict(), "arch": ARCHITECTURES[(config.family, config.scale)],
            "train": data_identity(train_set), "valid": data_identity(valid_set), "defense": defense.params()}


def train_or_load(config: TrainConfig, train_set, valid_set=None, *, defense: TrainingDefense | None = None,
                  init_state: dict | None = None, device=None, cache: bool = True,
                  progress: bool = True) -> tuple[nn.Module, dict]:
    """Train (resuming an interrupted run) and cache, or load the cached model. ``init_state``: the weights training
    starts from (see :func:`init_model`). Returns ``(model, info)`` with info = history, train_seconds, key, path,
    cached (True if loaded)."""
    defense = _check_defense(config, defense)
    device = resolve_device(device)
    trained = {}

    def train(partial):
        prior = 0.0
        if partial is not None and partial.is_file():  # seconds already spent by an interrupted run
            prior = sum(r["seconds"] for r in torch.load(partial, map_location="cpu", weights_only=False)["history"])
        t0 = time.perf_counter()
        net, history = fit(init_model(config, init_state), train_set, valid_set, config=config, defense=defense,
                           device=device, checkpoint=partial, progress=progress)
        trained["net"] = net
        return {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "history": history,
                "environment": training_environment(device),
                "seconds": prior + time.perf_counter() - t0}

    payload, info = cached("models", model_config(config, train_set, valid_set, defense), train,
                           name=f"{config.family}-{config.scale}-{defense.name}", enabled=cache)
    net = trained.get("net")
    if net is None:
        net = defense.wrap(init_model(config, init_state))
        net.load_state_dict(payload["state_dict"])
    net.to(device).eval()
    return net, {"history": payload["history"], "train_seconds": info.seconds, "key": info.key, "path": info.path,
                 "cached": info.cached, "environment": payload.get("environment", {})}


def training_environment(device) -> dict:
    """What makes floating-point results differ between machines: the torch build, the CPU kernels PyTorch picked
    (``ATEN_CPU_CAPABILITY``), the thread count, the device. Stored with every trained model: two runs with the
    same seed are bit-identical only when these agree (oneDNN's and MKL's kernel choice also follow the CPU)."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "device": str(device)}
