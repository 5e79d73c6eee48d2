"""Why a label-only attacker is misled by SSD, measured: how often a defended top-1 label equals the undefended one.

A label-only attacker (BREP, LOKT) learns only from top-1 labels of the images it generates. Those images are
uncertain, so SSD's sampled label is often not the target's top-1, while confident private test images keep it.
:func:`label_agreement` measures both rates for every row of a setting, through the same hard-label oracles the
attacks see; :func:`temperature_sweep` does so for SSD over a grid of T; :func:`survival_by_classes` shows how the
rate depends on the class count |Y| (on synthetic outputs with our generated images' top probabilities), which is
what separates our 62-181 classes from the paper's 530-1,000.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..scales import budget_value
from ..utils import resolve_device
from .attacks import CALIBRATED_BASE, attack_prior, oracle_factory, row_title
from .calibration import CALIBRATION_SAMPLES, label_survival, synthetic_outputs
from .settings import setting
from .targets import private_data, ssd_of_setting, train_target

__all__ = ["IMAGE_SETS", "label_agreement", "temperature_sweep", "survival_by_classes"]

#: The two sets of images the agreement is measured on.
IMAGE_SETS = ("private test", "generated")


def _images(name: str, scale: str, *, seed: int, root, device) -> dict[str, torch.Tensor]:
    """The private test images of setting ``name`` and as many generated images (decoded prior samples)."""
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    n = budget_value(CALIBRATION_SAMPLES, scale, "samples")
    z = prior.sample(n, torch.Generator().manual_seed(20_000 + seed))
    return {"private test": data.test.float_images(), "generated": prior.decode(z)}


def label_agreement(name: str, scale: str, rows, *, seed: int = 0, root=None, device=None) -> pd.DataFrame:
    """Per row and image set: the share of images whose top-1 label through the row's hard-label oracle equals the
    undefended target's (``agreement``), and the share labelled with their true class (test images only)."""
    device = resolve_device(device)
    images = _images(name, scale, seed=seed, root=root, device=device)
    truth = private_data(setting(name).dataset, scale, seed=seed, root=root).test.labels
    plain, _, _ = oracle_factory(name, "none", scale, mode="hard", device=device, seed=seed, root=root)
    reference = {k: plain(seed, f"mechanism-{k}")(v) for k, v in images.items()}
    records = []
    for row in rows:
        factory, _, _ = oracle_factory(name, row, scale, mode="hard", device=device, seed=seed, root=root)
        for kind, x in images.items():
            labels = factory(seed, f"mechanism-{kind}")(x)
            records.append({"setting": name, "row": row, "title": row_title(row), "images": kind,
                            "agreement": 100 * float((labels == reference[kind]).float().mean()),
                            "accuracy": 100 * float((labels == truth).float().mean()) if kind == "private test"
                            else float("nan"), "n": len(x)})
    return pd.DataFrame(records)


def temperature_sweep(name: str, scale: str, temperatures, *, variant: str = CALIBRATED_BASE, seed: int = 0,
                      root=None, device=None) -> pd.DataFrame:
    """SSD of ``variant`` with each temperature of ``temperatures`` (the rest of its parameters kept): agreement
    with the undefended top-1 on private test and generated images, test accuracy through the labels, and the
    exact probability that the draw keeps the top-1 label (``survival``, before the projection)."""
    from ..blackbox import BlackBox
    device = resolve_device(device)
    model, _ = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    images = _images(name, scale, seed=seed, root=root, device=device)
    plain = BlackBox(model, mode="soft")
    probs = {k: plain(v) for k, v in images.items()}
    records = []
    for T in temperatures:
        build, _ = ssd_of_setting(name, variant, model, data.valid, seed=seed, device=device, T=float(T))
        for kind, x in images.items():
            labels = BlackBox(model, build(seed), mode="hard")(x)
            top = probs[kind].argmax(-1)
            records.append({"setting": name, "T": float(T), "images": kind,
                            "agreement": 100 * float((labels == top).float().mean()),
                            "survival": 100 * float(label_survival(probs[kind], float(T)).mean()),
                            "accuracy": 100 * float((labels == data.test.labels).float().mean())
                            if kind == "private test" else float("nan")})
    return pd.DataFrame(records)


def survival_by_classes(top: torch.Tensor, classes, temperatures) -> pd.DataFrame:
    """Mean probability (%) that SSD's draw keeps the top-1 label, on synthetic outputs with top probabilities
    ``top`` and the rest spread over ``|Y| - 1`` classes, for each class count and temperature."""
    return pd.DataFrame([{"classes": int(c), "T": float(T),
                          "survival": 100 * float(label_survival(synthetic_outputs(top, int(c)), float(T)).mean())}
                         for T in temperatures for c in classes])


def calibration_lines(calib: pd.DataFrame) -> list[str]:
    """One Markdown bullet per (setting, SSD variant) of the calibration table of the mechanism page."""
    def pct(v: float) -> str:
        return f"{v:.1f}%" if v < 10 else f"{v:.0f}%"

    lines = []
    for d in calib.to_dict("records"):
        ours, paper_y = int(d["our |Y|"]), int(d["paper |Y|"])
        head = (f"**{d['setting']}**, {d['SSD']}: at T = {d['paper T']:g} the draw keeps "
                f"{pct(d['kept at paper |Y| (%)'])} of generated images' top-1 labels at the paper's {paper_y:,} "
                f"classes and {pct(d['kept here at paper T (%)'])} at our {ours}; ")
        if d["clipped"]:
            lines.append(head + f"no temperature reaches the paper's rate here: even a uniform draw keeps 1/{ours} "
                         f"({100 / ours:.1f}%), so the calibrated T is a uniform draw.")
        else:
            lines.append(head + f"the same rate here needs T = {d['calibrated T']:.3g}.")
    return lines


def agreement_lines(agreement: pd.DataFrame, *, titles=None) -> list[str]:
    """One Markdown bullet per setting: how often each SSD row keeps the undefended label on generated and on test
    images, and the range over the training-time defenses."""
    from .attacks import SSD_ROWS
    titles = titles or {}
    lines = []
    for s, part in agreement.groupby("setting", sort=False):
        rate = {(r.row, r.images): r.agreement for r in part.itertuples()}
        ssd = [f"{row_title(r)} {rate[(r, 'generated')]:.0f}% of generated labels and "
               f"{rate[(r, 'private test')]:.0f}% of test labels" for r in part.row.unique()
               if r in SSD_ROWS and (r, "generated") in rate]
        trained = [rate[(r, "generated")] for r in part.row.unique()
                   if r not in SSD_ROWS and r != "none" and (r, "generated") in rate]
        text = f"**{titles.get(s, s)}**: " + ("; ".join(ssd) if ssd else "no SSD row")
        if trained:
            text += (f". The training-time defenses, other models than the undefended one, agree with it on "
                     f"{min(trained):.0f}-{max(trained):.0f}% of generated labels")
        lines.append(text + ".")
    return lines
