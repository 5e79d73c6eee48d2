"""The utility experiment (the paper's Tables 3 and 8): accuracy and output change of every defense, per setting.

Training-time defenses release their own model; SSD post-processes the undefended model's test outputs, with q^y
estimated on the valid split (Table 3) or the train split (Table 8, Appendix E). Every defended row is checked
against its bound ||p - f(x)||_1 <= eps * H(f(x)), and the sampling diagnostics say how often SSD's label
y ~ softmax(f/T) is the model's prediction or the true label: at T = 0.3 with hundreds of classes the sampled label
is nearly uniform (T divides probabilities), which is what moves SSD's accuracy.
"""
from __future__ import annotations

import pandas as pd
import torch

from .. import paper
from ..defenses import REGISTRY, TRAINING_DEFENSES
from ..information import cmi
from ..metrics import utility_metrics
from ..training import predict_proba
from ..utils import resolve_device
from .settings import SSD_VARIANT_TITLES, SSD_VARIANTS, setting
from .targets import private_data, ssd_of_setting, train_target

Q_SOURCES = ("valid", "train")


def sampling_rates(probs: torch.Tensor, labels: torch.Tensor, T: float) -> tuple[float, float]:
    """Mean probability (%) that y ~ softmax(probs / T) equals the prediction, and that it equals ``labels``."""
    if T == 0:
        pred = (probs.argmax(-1) == labels).double().mean().item()
        return 100.0, 100 * pred
    weights = torch.softmax(probs.double() / T, -1)
    return (100 * weights.gather(1, probs.argmax(-1, keepdim=True)).mean().item(),
            100 * weights.gather(1, labels[:, None]).mean().item())


def setting_utility(name: str, scale: str, *, defenses=TRAINING_DEFENSES, variants=tuple(SSD_VARIANTS),
                    q_sources=Q_SOURCES, device=None, seed: int = 0, root=None,
                    progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Utility rows of one setting (one per training-time defense, then per SSD variant and q^y source) and the
    SSD checks (bound excess, sampling rates). Needs ``"none"`` in ``defenses``: SSD and L1 are measured on it.
    ``cmi_correct`` is the CMI over the test inputs the undefended model classifies correctly (Section 5.3)."""
    if "none" not in defenses:
        raise ValueError("defenses must include 'none': SSD and the L1 columns are measured against it")
    unknown = [v for v in variants if v not in SSD_VARIANTS]
    if unknown or any(q not in Q_SOURCES for q in q_sources):
        raise ValueError(f"unknown SSD variants {unknown} or q sources {list(q_sources)}; valid: "
                         f"{list(SSD_VARIANTS)}, {list(Q_SOURCES)}")
    s = setting(name)
    device = resolve_device(device)
    data = private_data(s.dataset, scale, seed=seed, root=root)
    labels = data.test.labels
    rows, checks = [], []
    base = correct = None

    def metrics(probs):  # Table 3's columns, the CMI, and Section 5.3's CMI on correctly classified test inputs
        return {**utility_metrics(base, probs, labels),
                "cmi_correct": cmi(probs[correct], labels[correct], probs.shape[-1])}

    for d in ("none", *[d for d in defenses if d != "none"]):
        model = train_target(name, d, scale, device=device, seed=seed, root=root, progress=progress)[0]
        probs = predict_proba(model, data.test, device=device)
        if d == "none":
            base, undefended = probs, model
            correct = probs.argmax(-1) == labels
        rows.append({"setting": name, "defense": d, "variant": "", "q_from": "", "title": REGISTRY[d].title,
                     **metrics(probs)})
    for variant in variants:
        for source in q_sources:
            ref = data.valid if source == "valid" else data.train
            build, params = ssd_of_setting(name, variant, undefended, ref, seed=seed, device=device)
            ssd = build(seed)
            defended = ssd(base.to(device)).cpu()
            l1 = (defended.double() - base.double()).abs().sum(-1)
            budget = ssd.radius(base)
            p_pred, p_true = sampling_rates(base, labels, params["T"])
            checks.append({"setting": name, "variant": variant, "q_from": source, **params,
                           "max(L1 - eps*H)": (l1 - budget).max().item(),
                           "rows at the bound (%)": 100 * (l1 >= budget - 1e-6).double().mean().item(),
                           "P(y = prediction) (%)": p_pred, "P(y = true label) (%)": p_true})
            rows.append({"setting": name, "defense": "ssd", "variant": variant, "q_from": source,
                         "title": SSD_VARIANT_TITLES[variant] + ("" if source == "valid" else ", q from train"),
                         **metrics(defended)})
    return pd.DataFrame(rows), pd.DataFrame(checks)


def with_paper(ours: pd.DataFrame) -> pd.DataFrame:
    """Our utility rows beside the paper's (Table 3 of both versions; Table 8 of the submitted version for q^y from
    D_train), in percent and L1 units. The SSD (paper) row compares with the submitted version, the authors'-code
    row with the final version, whose SSD row uses the released code's settings."""
    out = ours.copy()
    for version, label in (("submitted", "submitted"), ("iclr2025", "ICLR 2025")):
        table = paper.utility(version)
        table = table.assign(setting=table.setting.map(paper.SETTING_FROM_PAPER))
        cols = {"acc": "paper_acc", "avg_l1": "paper_avg_l1", "max_l1": "paper_max_l1"}
        merged = out[["setting", "defense", "variant", "q_from"]].merge(
            table[["setting", "defense", *cols]].rename(columns=cols), on=["setting", "defense"], how="left")
        own = ((merged.variant == "") | (merged.variant == {"submitted": "ssd", "iclr2025": "ssd_code"}[version]))
        own &= merged.q_from.isin(["", "valid"])
        for col in cols.values():
            out[f"{col} ({label})"] = merged[col].where(own).to_numpy()
    q8 = paper.q_estimator_utility("submitted")
    q8 = q8.assign(setting=q8.setting.map(paper.SETTING_FROM_PAPER))
    for _, r in q8.iterrows():  # Table 8: SSD (paper) with q^y from D_valid / D_train, IR-152/CelebA only
        hit = (out.setting == r.setting) & (out.variant == "ssd") & (out.q_from == r.q_from)
        out.loc[hit, "paper_acc (submitted)"] = r.acc
        out.loc[hit, "paper_avg_l1 (submitted)"] = r.avg_l1
        out.loc[hit, "paper_max_l1 (submitted)"] = r.max_l1
    return out
