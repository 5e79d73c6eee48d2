"""Figure 1 (Section 5.3): what SSD does to the outputs, seen by t-SNE and measured by the CMI.

Two sets of probability vectors of one target, each without and with SSD: the private test samples the undefended
target classifies correctly (panels a/b), and the attacker's samples of Mirror's initial phase (random prior samples
scored once through the oracle, the pool Mirror's setup draws, panels c/d). SSD is applied exactly as on the utility
page (one seeded draw over the whole test set, then the correct rows kept), so the CMI here equals its
``cmi_correct``. The attacker's samples are grouped by the undefended target's top-1 label (what the attacker's
sample "belongs to") or by the top-1 label of the released output (the groups SSD gathers them into); the figure
and the main CMI use the released top-1, the table gives both.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attacks import build_attack
from ..attacks.base import class_generator
from ..information import cmi
from ..training import predict_proba
from ..utils import resolve_device
from .attack_runs import SETUP
from .attacks import attack_prior, oracle_factory
from .settings import setting
from .targets import private_data, ssd_of_setting, train_target

__all__ = ["TSNE_DEFAULTS", "correct_test_outputs", "attacker_outputs", "shown_groups", "embed", "cmi_table",
           "with_paper", "claim_lines"]

#: The t-SNE settings of the figure (scikit-learn's defaults but for the initialisation, stated on the page).
TSNE_DEFAULTS = dict(perplexity=30.0, init="pca", learning_rate="auto", max_iter=1000)


def correct_test_outputs(name: str, scale: str, variants=("ssd",), *, seed: int = 0, root=None,
                         device=None) -> dict:
    """The undefended outputs of the private test samples the undefended target classifies correctly, their
    labels, and the same rows through each SSD ``variant`` (one draw over the whole test set seeded by ``seed``,
    as :func:`ssdlib.experiments.utility.setting_utility` does): ``{"labels", "correct", "none", variant...}``."""
    device = resolve_device(device)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    model, _ = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    base = predict_proba(model, data.test, device=device)
    labels = data.test.labels
    correct = base.argmax(-1) == labels
    out = {"labels": labels[correct], "correct": correct, "none": base[correct]}
    for variant in variants:
        build, _ = ssd_of_setting(name, variant, model, data.valid, seed=seed, device=device)
        out[variant] = build(seed)(base.to(device)).cpu()[correct]
    return out


def attacker_outputs(name: str, scale: str, rows=("none", "ssd"), *, samples: int | None = None, seed: int = 0,
                     root=None, device=None) -> dict:
    """Mirror's initial phase: ``samples`` random prior latents (default: Mirror's pool at ``scale``, drawn by its
    setup's generator) decoded and scored once through each row's soft-label oracle (the oracle of Mirror's setup,
    SSD seeded as in the attack runs): ``{"groups": undefended top-1 labels, row: outputs...}``."""
    device = resolve_device(device)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    mirror = build_attack("mirror", prior, scale=scale)
    n = int(samples or mirror.params["pool"])
    latents = prior.sample(n, class_generator(seed, -1, salt=1))
    images = torch.cat([prior.decode(latents[i:i + 500]) for i in range(0, n, 500)])
    out = {}
    for row in rows:
        factory, _, _ = oracle_factory(name, row, scale, mode="soft", device=device, seed=seed, root=root)
        out[row] = factory(seed, SETUP)(images).cpu()
    if "none" not in out:
        plain, _, _ = oracle_factory(name, "none", scale, mode="soft", device=device, seed=seed, root=root)
        out["none"] = plain(seed, SETUP)(images).cpu()
    out["groups"] = out["none"].argmax(-1)
    return out


def shown_groups(groups: torch.Tensor, k: int = 10) -> torch.Tensor:
    """The ``k`` most frequent groups (ties broken by the smaller label), as the paper shows 10 of |Y| groups."""
    counts = torch.bincount(groups.long())
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    return torch.tensor([c for c in order if counts[c] > 0][:k])


def embed(probs: torch.Tensor, *, seed: int = 0, **params) -> np.ndarray:
    """2-d t-SNE of probability vectors (scikit-learn, Euclidean, seeded; :data:`TSNE_DEFAULTS` unless given);
    the perplexity is capped below the number of points. One point or none (e.g. a target that classifies almost
    nothing correctly) has nothing to embed: it sits at the origin, where t-SNE would raise."""
    from sklearn.manifold import TSNE

    x = probs.double().cpu().numpy()
    if len(x) < 2:
        return np.zeros((len(x), 2))
    kw = {**TSNE_DEFAULTS, **params}
    kw["perplexity"] = min(kw["perplexity"], max(1.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, random_state=seed, **kw).fit_transform(x)


def cmi_table(test: dict, attacker: dict, variants, titles: dict) -> pd.DataFrame:
    """CMI (nats) of each set and row: test outputs given the true label; the attacker's samples given the
    undefended top-1 label (``groups``) and, for comparison, given the released top-1 label."""
    records = []
    groups = attacker["groups"]
    for row in ("none", *variants):
        c = test[row].shape[-1]
        records.append({"samples": "private test, correctly classified", "row": row, "title": titles[row],
                        "cmi": cmi(test[row], test["labels"], c), "given": "true label", "n": len(test[row])})
        if row in attacker:
            out = attacker[row]
            records.append({"samples": "attacker (Mirror's initial phase)", "row": row, "title": titles[row],
                            "cmi": cmi(out, groups, c), "given": "undefended top-1", "n": len(out)})
            records.append({"samples": "attacker (Mirror's initial phase)", "row": row, "title": titles[row],
                            "cmi": cmi(out, out.argmax(-1), c), "given": "released top-1", "n": len(out)})
    return pd.DataFrame(records)


#: Our sample sets under the paper's names (``ssdlib.paper.section53_cmi``'s ``samples`` column).
PAPER_SAMPLES = {"private test, correctly classified": "private test samples, correctly classified",
                 "attacker (Mirror's initial phase)": "attacker's samples from Mirror's initial phase"}


def with_paper(table: pd.DataFrame, paper_cmi: pd.DataFrame) -> pd.DataFrame:
    """``table`` (:func:`cmi_table`) with the paper's CMI of the same set and defense (``paper_cmi``:
    ``ssdlib.paper.section53_cmi()``) beside each row; both SSD rows meet the paper's single SSD value."""
    lookup = {(r.samples, r.defense): r.cmi for r in paper_cmi.itertuples()}
    out = table.copy()
    out["paper cmi"] = [lookup.get((PAPER_SAMPLES[s], "none" if r == "none" else "ssd"), float("nan"))
                        for s, r in zip(out.samples, out.row)]
    return out


def claim_lines(table: pd.DataFrame, variants, titles: dict) -> list[str]:
    """One sentence per claim of Section 5.3 (the CMI of each set falls with SSD), for each SSD row: our values
    (the attacker's given the released top-1) beside the paper's, and whether the claim holds here."""
    main = table[(table.given != "undefended top-1")]
    lines = []
    for samples, name in PAPER_SAMPLES.items():
        part = main[main.samples == samples].set_index("row")
        if "none" not in part.index:
            continue
        base, paper_none = part.loc["none", "cmi"], part.loc["none", "paper cmi"]
        for v in variants:
            if v not in part.index:
                continue
            new, paper_new = part.loc[v, "cmi"], part.loc[v, "paper cmi"]
            verdict = "holds here" if new < base else "does not hold here"
            lines.append(f"{name[0].upper() + name[1:]}: the paper's CMI falls from {paper_none:.2f} to "
                         f"{paper_new:.2f} "
                         f"({paper_new / paper_none - 1:+.0%}); ours with {titles[v]} goes from {base:.3f} to "
                         f"{new:.3f} ({new / base - 1:+.0%}): the claim {verdict}.")
    return lines
