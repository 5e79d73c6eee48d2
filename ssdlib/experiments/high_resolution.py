"""The paper's Tables 10/11 (Appendix G): Mirror against every defense of a ResNet-152 target at 224x224.

The paper attacks a ResNet-152 trained on FaceScrub at 224x224 with Mirror and a StyleGAN2 prior (FFHQ, 1024 px,
centre-cropped to 800 px and resized to 224 px), the first 10 classes, 5 images each, scored by an Inception-v3
evaluator. Here: LFW at 224x224 stands in for FaceScrub (as in the 64-px settings), the target is this project's
ResNet-152 (:func:`ssdlib.models.resnet152`) fine-tuned from a backbone pretrained on the public faces, the
evaluation network is the project's dlib-embedding evaluator (a network other than the target, pretrained on
faces; Inception-v3 weights cannot be downloaded here), and the prior is the user's, loaded by path
(:func:`ssdlib.priors.external.load_prior`). Defense settings are the paper's Table 11. The rows are attacked as
the attack pages do (equal effort, no early stop, cached runs, the defense seeded per run and class).

This runs only at ``paper`` scale with a prior file: :func:`skip_reason` says why not otherwise, and
:func:`shape_check` runs the 224-px code path on random images at any scale.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .. import data as D
from .. import paper
from ..attacks import build_attack
from ..blackbox import BlackBox
from ..cache import state_fingerprint
from ..defenses import SSD, TransferLearning, build_defense, estimate_q_table
from ..information import entropy
from ..metrics.attack import attack_effort, attack_metrics
from ..metrics.utility import utility_metrics
from ..models.classifiers import build_model
from ..priors.external import load_prior
from ..scales import budget, check_scale
from ..training import TrainConfig, body_state, predict_proba, train_or_load
from ..utils import data_root, resolve_device
from .attack_runs import METRICS, OracleFactory, attack_runs
from .evaluators import train_or_load_evaluator
from .settings import PRETRAIN_LIMITS, PRIVATE_LIMITS, pretrain_recipe, recipe

#: The paper's label of the setting (its hyper-parameters and numbers in :mod:`ssdlib.paper`).
PAPER_SETTING = "ResNet-152/FaceScrub 224px (high-res)"
#: This project's name of the setting (in cache keys and tables).
NAME = "lfw_resnet152_224"
DATASET, FAMILY, IMAGE_SIZE = "lfw", "resnet152", 224
#: The rows of Tables 10/11, in the paper's order.
ROWS = ("none", "mid", "bido", "ls", "tl", "ssd")
ROW_TITLES = {"none": "No Defense", "mid": "MID", "bido": "BiDO", "ls": "LS", "tl": "TL", "ssd": "SSD"}
#: The paper's protocol: the first 10 classes, 5 reconstructions each.
PROTOCOL = dict(classes=10, per_class=5)
#: Where the prior's path may come from when not passed.
PRIOR_ENV = "SSD_HIGHRES_PRIOR"
#: What a user needs, said once (the skip message and the book).
NEEDS = ("scale 'paper' (a CUDA GPU: a ResNet-152 pretrained on the public faces and fine-tuned at 224x224 under "
         "each of five defenses) and a pretrained generative prior decoding latents to 224x224 faces, given by path "
         f"(prior_path= or ${PRIOR_ENV}; a StyleGAN2 cannot be downloaded here; the file contract is in "
         "ssdlib.priors.external)")


class HighResolutionSkipped(RuntimeError):
    """Tables 10/11 cannot run here (scale below ``paper`` or no prior file); the message says what is needed."""


def prior_path_from(prior_path=None) -> str | None:
    """The prior's path: the argument, else ``$SSD_HIGHRES_PRIOR``, else None."""
    return str(prior_path) if prior_path else (os.environ.get(PRIOR_ENV) or None)


def skip_reason(scale: str, prior_path=None) -> str | None:
    """Why Tables 10/11 cannot run at ``scale`` with ``prior_path`` (None: they can).

    >>> skip_reason("smoke").startswith("skipped at scale 'smoke'")
    True
    """
    check_scale(scale)
    path = prior_path_from(prior_path)
    if scale != "paper":
        return f"skipped at scale {scale!r}: Tables 10/11 need {NEEDS}."
    if path is None:
        return f"skipped: no prior given. Tables 10/11 need {NEEDS}."
    if not Path(path).expanduser().is_file():
        return f"skipped: the prior file {path} does not exist. Tables 10/11 need {NEEDS}."
    return None


def defense_params(defense: str) -> dict:
    """The paper's Table 11 settings of a training-time ``defense`` at 224x224."""
    hp = paper.hyperparameters(PAPER_SETTING, "submitted")
    table = {"none": {}, "mid": {"beta": hp["mid_beta"]},
             "bido": {"lambda_x": hp["bido_lambda_x"], "lambda_y": hp["bido_lambda_y"]},
             "ls": {"alpha": hp["ls_alpha"]}, "tl": {"freeze_fraction": hp["tl_frozen_fraction"]}}
    if defense not in table:
        raise ValueError(f"unknown training-time defense {defense!r}; valid: {', '.join(table)}")
    return table[defense]


def ssd_params() -> dict:
    """SSD's Table 11 settings (T = 1, eps = 20; the submitted version's entropy unit and q^y estimator)."""
    hp = paper.hyperparameters(PAPER_SETTING, "submitted")
    return {"T": hp["ssd_T"], "eps": hp["ssd_eps"], "entropy": hp["ssd_entropy"],
            "estimator": {"single": "single", "valid_mean": "mean"}[hp["ssd_q_estimator"]]}


@functools.lru_cache(maxsize=2)
def _private(scale: str, seed: int, root: str) -> D.PrivateData:
    return D.private_split(DATASET, root, seed=seed, size=IMAGE_SIZE, **budget(PRIVATE_LIMITS, scale))


def private_data(scale: str, *, seed: int = 0, root=None) -> D.PrivateData:
    """The private split of LFW at 224x224 (memoised; the decoded images are cached)."""
    return _private(check_scale(scale), seed, str(data_root(root)))


def train_target(defense: str, scale: str, *, device=None, seed: int = 0, root=None,
                 progress: bool = True) -> tuple[nn.Module, dict]:
    """The ResNet-152 target under a training-time ``defense`` at 224x224 (cached): fine-tuned from the backbone
    pretrained on the public faces at 224x224, with the scale's recipes (TL freezes the backbone's first layers)."""
    params = defense_params(defense)
    data = private_data(scale, seed=seed, root=root)
    public = D.public_set(str(data_root(root)), seed=seed, size=IMAGE_SIZE, **budget(PRETRAIN_LIMITS, scale))
    pre = TrainConfig(family=FAMILY, scale=scale, num_classes=public.num_classes, **pretrain_recipe(scale))
    backbone, _ = train_or_load(pre, public, None, device=device, progress=progress)
    init = body_state(backbone)
    strategy = TransferLearning(backbone, **params) if defense == "tl" else build_defense(defense, **params)
    config = TrainConfig(family=FAMILY, scale=scale, num_classes=data.num_classes, defense=defense,
                         defense_params=params if defense != "tl" else {}, init=state_fingerprint(init), seed=seed,
                         **recipe(scale))
    return train_or_load(config, data.train, data.valid, defense=strategy, init_state=init, device=device,
                         progress=progress)


def _ssd_builder(model: nn.Module, valid, *, seed: int, device):
    params = ssd_params()
    q = estimate_q_table(predict_proba(model, valid, device=device), valid.labels, model.num_classes,
                         estimator=params["estimator"], seed=seed)
    return (lambda s: SSD(q, T=params["T"], eps=params["eps"], entropy=params["entropy"], seed=s).to(device)), params


def high_resolution_tables(scale: str, prior_path=None, *, rows=ROWS, attack_seeds=(0,), device=None, seed: int = 0,
                           root=None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 10 and 11 measured: ``(attacks, utility)``, one row per defense (Acc@1/5 in %, delta_eval,
    delta_face, the target's own top-1 and the effort; test accuracy in %, Avg/Max L1 against the undefended
    outputs, CMI). Raises :class:`HighResolutionSkipped` with the reason when :func:`skip_reason` gives one."""
    reason = skip_reason(scale, prior_path)
    if reason:
        raise HighResolutionSkipped(reason)
    unknown = [r for r in rows if r not in ROWS]
    if unknown or "none" not in rows:
        raise ValueError(f"rows must include 'none' and come from {ROWS}, got {list(rows)}")
    device = resolve_device(device)
    prior = load_prior(prior_path_from(prior_path), image_size=IMAGE_SIZE, device=device)
    data = private_data(scale, seed=seed, root=root)
    classes = list(range(min(PROTOCOL["classes"], data.num_classes)))
    evaluator = train_or_load_evaluator(data, seed=seed)
    method = build_attack("mirror", prior, scale=scale, top_k=PROTOCOL["per_class"])
    base_model, base_info = train_target("none", scale, device=device, seed=seed, root=root, progress=progress)
    test = data.test.float_images()
    base = BlackBox(base_model)(test.to(device)).cpu()
    attacks, utility = [], []
    for row in rows:
        if row == "ssd":
            model, key = base_model, base_info["key"]
            build, params = _ssd_builder(base_model, data.valid, seed=seed, device=device)
            factory = OracleFactory(model, build, mode="soft", name=f"{NAME}/ssd", seed=seed)
        else:
            model, info = train_target(row, scale, device=device, seed=seed, root=root, progress=progress)
            key, params = info["key"], defense_params(row)
            factory = OracleFactory(model, mode="soft", name=f"{NAME}/{row}", seed=seed)
        probs = factory(seed, METRICS)(test.to(device)).cpu()
        utility.append({"row": row, "title": ROW_TITLES[row], **utility_metrics(base, probs, data.test.labels)})
        for s in attack_seeds:
            runs = attack_runs(method, factory, classes, seed=s, target_key=key, prior_key=prior.key, setting=NAME,
                               defense=row, defense_params=params, progress=progress)
            images = torch.cat([r.images for r in runs])
            labels = torch.cat([torch.full((len(r.images),), r.target, dtype=torch.long) for r in runs])
            metrics = attack_metrics(images, labels, evaluator, data.train, target=factory(s, METRICS))
            attacks.append({"row": row, "title": ROW_TITLES[row], "attack_seed": s, **metrics,
                            **attack_effort(runs)})
    attacks = pd.DataFrame(attacks)
    for col in ("acc@1", "acc@5", "target_acc@1"):
        attacks[col] *= 100
    return attacks, pd.DataFrame(utility)


def paper_tables(version: str = "submitted") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Tables 10 and 11 (submitted version; the final version's Table 8 with ``"iclr2025"``) as
    display tables: one row per defense, percentages in %, the source in ``attrs["source"]``."""
    attacks, utility = paper.high_resolution_attacks(version), paper.high_resolution_utility(version)
    titles = {**ROW_TITLES, "ssd": "SSD (ours)"}
    a = pd.DataFrame({"defense": attacks.defense.map(titles), "Acc@1 (%)": attacks.acc1, "Acc@5 (%)": attacks.acc5,
                      "δ_eval": attacks.delta_eval, "δ_face": attacks.delta_face})
    u = pd.DataFrame({"defense": utility.defense.map(titles), "Acc (%)": utility.acc, "Avg L1": utility.avg_l1,
                      "Max L1": utility.max_l1})
    a.attrs["source"] = attacks.attrs.get("source", "")
    u.attrs["source"] = utility.attrs.get("source", "")
    return a, u


def with_paper(measured: pd.DataFrame, paper_table: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """``measured`` (rows by ``row``) with the paper's values beside: ``columns`` maps ours -> the paper's."""
    lookup = paper_table.set_index("defense")
    titles = {**ROW_TITLES, "ssd": "SSD (ours)"}
    out = measured.copy()
    for ours, theirs in columns.items():
        out[f"paper {ours}"] = [lookup[theirs].get(titles[r], float("nan")) for r in out.row]
    return out


class _ToyGenerator(nn.Module):
    """A tiny generator of 32x32 images, for the shape check: the prior file's crop-and-resize path runs too."""

    def __init__(self, latent_dim: int = 16):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(latent_dim, 3 * 32 * 32), nn.Tanh(), nn.Unflatten(1, (3, 32, 32)))

    def forward(self, z):
        return self.net(z)


def save_toy_prior(path, *, latent_dim: int = 16, seed: int = 0) -> Path:
    """Write a tiny generator of 32x32 images in [-1, 1] as a state-dict prior file obeying the contract of
    :mod:`ssdlib.priors.external` (builder, state dict, value range, crop), for tests and the shape check."""
    torch.manual_seed(seed)
    path = Path(path)
    torch.save({"builder": f"{__name__}:_ToyGenerator", "kwargs": {"latent_dim": latent_dim},
                "state_dict": _ToyGenerator(latent_dim).state_dict(), "value_range": [-1.0, 1.0], "crop": 0.8}, path)
    return path


def shape_check(num_classes: int = 3, n: int = 2, *, seed: int = 0) -> pd.DataFrame:
    """The 224-px pipeline on random images, at the family's smallest member: ResNet-152 logits, SSD behind a
    BlackBox (probabilities, L1 within the bound), and Mirror with a toy prior loaded by path, one class."""
    torch.manual_seed(seed)
    model = build_model(FAMILY, num_classes, "smoke").eval()
    images = torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        logits = model(images)
        q_source = torch.softmax(model(torch.rand(4 * num_classes, 3, IMAGE_SIZE, IMAGE_SIZE)), -1)
    q = estimate_q_table(q_source, torch.arange(4 * num_classes) % num_classes, num_classes, estimator="mean")
    params = ssd_params()
    defense = SSD(q, T=params["T"], eps=params["eps"], entropy=params["entropy"], seed=seed)
    plain, defended = BlackBox(model)(images), BlackBox(model, defense)(images)
    with tempfile.TemporaryDirectory() as tmp:
        prior = load_prior(save_toy_prior(Path(tmp) / "toy-prior.pt"), image_size=IMAGE_SIZE)
    mirror = build_attack("mirror", prior, scale="smoke")
    oracle = BlackBox(model, defense)
    [result] = mirror.run(oracle, [0], seed=seed)
    rows = [("ResNet-152 (smoke member) logits", tuple(logits.shape)),
            ("SSD answers through BlackBox", tuple(defended.shape)),
            ("SSD answers sum to 1", bool(torch.allclose(defended.sum(-1), torch.ones(n), atol=1e-5))),
            ("L1 change within eps * H(f(x))", bool(((defended - plain).abs().sum(-1)
                                                      <= params["eps"] * entropy(plain, normalized=True) + 1e-5).all())),
            ("prior images (toy prior loaded by path)", tuple(prior.decode(prior.sample(2)).shape)),
            ("Mirror reconstructions of class 0", tuple(result.images.shape)),
            ("Mirror queries through BlackBox", int(oracle.queries))]
    return pd.DataFrame(rows, columns=["check", "value"]).astype({"value": str})
