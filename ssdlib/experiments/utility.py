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
            radius = ssd.radius(base)
            p_pred, p_true = sampling_rates(base, labels, params["T"])
            checks.append({"setting": name, "variant": variant, "q_from": source, **params,
                           "max(L1 - eps*H)": (l1 - radius).max().item(),
                           "rows at the bound (%)": 100 * (l1 >= radius - 1e-6).double().mean().item(),
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


def _value(ours: pd.DataFrame, name: str, defense: str, column: str, variant: str = "", q_from: str = "") -> float:
    """One number of the utility rows: setting ``name``, ``defense`` (an SSD ``variant`` and ``q_from`` source)."""
    row = ours[(ours.setting == name) & (ours.defense == defense) & (ours.variant == variant)
               & (ours.q_from == (q_from if defense != "ssd" else (q_from or "valid")))]
    if len(row) != 1:
        raise ValueError(f"no single utility row for {name}/{defense}/{variant or '-'}/{q_from or '-'}")
    return float(row[column].iloc[0])


def utility_findings(ours: pd.DataFrame, checks: pd.DataFrame, settings, defenses, spread_sd: dict) -> dict:
    """The sentences' numbers of the utility chapter (Tables 3 and 8), as display strings keyed by glue name.

    Differences are taken between the *displayed* (rounded) values, so the prose agrees with the tables; a
    defense's accuracy counts as "not below" SSD's when the gap is within one run-to-run standard deviation of
    the targets (``spread_sd[setting]``, NaN when not measured). The q^y-source gap is given for both SSD rows."""
    first = settings[0]
    acc = lambda *a, **k: round(_value(ours, *a, **k), 1)  # noqa: E731 (as displayed: one decimal)
    none_acc, ssd_acc = acc(first, "none", "test_acc"), acc(first, "ssd", "test_acc", "ssd")
    out = {"t3_none_test_acc": f"{none_acc:.1f}", "t3_ssd_test_acc": f"{ssd_acc:.1f}",
           "t3_ssd_acc_change": f"{'loses' if ssd_acc < none_acc else 'gains'} {abs(none_acc - ssd_acc):.1f} points"}
    for key in ("ssd", "ssd_code"):
        for column in ("avg_l1", "max_l1", "cmi"):
            out[f"t3_{key}_{column}"] = f"{_value(ours, first, 'ssd', column, key):.3f}"
    cmi_none, cmi_ssd = _value(ours, first, "none", "cmi"), _value(ours, first, "ssd", "cmi", "ssd")
    out.update(t3_none_cmi=f"{cmi_none:.3f}", t3_cmi_direction="falls" if cmi_ssd < cmi_none else "rises")
    training = [d for d in defenses if d != "none"]
    best_l1 = sum(_value(ours, n, "ssd", "avg_l1", "ssd") < min(_value(ours, n, d, "avg_l1") for d in training)
                  for n in settings)
    best_acc = sum(acc(n, "ssd", "test_acc", "ssd") >= max(acc(n, d, "test_acc") for d in training) for n in settings)
    measured = {n: sd for n, sd in spread_sd.items() if sd == sd}
    within = sum(acc(n, "ssd", "test_acc", "ssd") >= max(acc(n, d, "test_acc") for d in training) - measured[n]
                 for n in settings if n in measured)
    drops = [acc(n, "none", "test_acc") - acc(n, "ssd", "test_acc", "ssd") for n in settings]
    main = checks[(checks.variant == "ssd") & (checks.q_from == "valid")]
    out.update(t3_n_settings=str(len(settings)), t3_best_l1=str(best_l1), t3_best_acc=str(best_acc),
               t3_within_spread=f"{within} of {len(measured)}" if measured else "n/a (no spread measured)",
               t3_sd_range=(f"{min(measured.values()):.1f} to {max(measured.values()):.1f}" if measured else "n/a"),
               t3_ssd_drop_min=f"{min(drops):.1f}", t3_ssd_drop_max=f"{max(drops):.1f}",
               t3_p_pred_min=f"{main['P(y = prediction) (%)'].min():.0f}",
               t3_p_pred_max=f"{main['P(y = prediction) (%)'].max():.0f}",
               t3_max_bound_excess=f"{checks['max(L1 - eps*H)'].max():.1e}")
    for key, title in (("ssd", "the paper-settings row"), ("ssd_code", "the authors'-code row")):
        gaps = [abs(acc(n, "ssd", "test_acc", key, "valid") - acc(n, "ssd", "test_acc", key, "train"))
                for n in settings]
        out[f"t8_max_gap_{key}"] = f"{max(gaps):.1f}"
    out["t8_max_gap"] = (f"{out['t8_max_gap_ssd']} points for the paper-settings row and "
                         f"{out['t8_max_gap_ssd_code']} for the authors'-code row")
    n = len(settings)
    out["t3_claim"] = ("holds" if best_l1 == n and best_acc == n else
                       "does not hold at this scale" if best_l1 == 0 and best_acc == 0 else "holds in part")
    # q^y's source: a gap counts as noise when within the 95 % range of the difference of two training runs
    # (1.96 * sqrt(2) * the targets' seed spread), the yardstick the chapter states.
    if measured:
        tolerance = 1.96 * 2 ** 0.5 * max(measured.values())
        out["t8_tolerance"] = f"{tolerance:.1f}"
        t8 = {key: "holds" if float(out[f"t8_max_gap_{key}"]) <= tolerance else "does not hold at this scale"
              for key in ("ssd", "ssd_code")}
        out["t8_claim"] = (t8["ssd"] if t8["ssd"] == t8["ssd_code"] else
                           f"paper settings: {t8['ssd']}; authors' code: {t8['ssd_code']}")
    else:
        out["t8_tolerance"] = "n/a"
        out["t8_claim"] = "not judged (no seed spread measured)"
    return out


def _change(new: float, old: float) -> float:
    """The relative change new / old - 1; NaN when ``old`` is 0 (e.g. no correctly classified output carries
    information: the ratio is undefined, not a crash)."""
    return new / old - 1 if old else float("nan")


def _percent(change: float) -> str:
    return "n/a" if change != change else f"{abs(change):.0%}"


def section53(ours: pd.DataFrame, paper_none: float, paper_ssd: float, name: str, title: str):
    """Section 5.3's CMI of correctly classified test outputs, the paper's values beside both of our SSD rows:
    ``(table, findings)``; the findings name each row's direction, so neither is reported without the other."""
    ours_none = _value(ours, name, "none", "cmi_correct")
    ours_ssd = _value(ours, name, "ssd", "cmi_correct", "ssd")
    ours_code = _value(ours, name, "ssd", "cmi_correct", "ssd_code")
    table = pd.DataFrame([
        {"outputs of": "paper (VGG-16/FaceScrub)", "no defense": paper_none, "SSD": paper_ssd,
         "change": _change(paper_ssd, paper_none)},
        {"outputs of": f"ours, {title}, SSD (paper)", "no defense": ours_none, "SSD": ours_ssd,
         "change": _change(ours_ssd, ours_none)},
        {"outputs of": f"ours, {title}, SSD (authors' code)", "no defense": ours_none, "SSD": ours_code,
         "change": _change(ours_code, ours_none)}])
    word = lambda new: "falls" if new < ours_none else "rises" if new > ours_none else "stays"  # noqa: E731
    findings = {"s53_paper_none": f"{paper_none:.2f}", "s53_paper_ssd": f"{paper_ssd:.2f}",
                "s53_paper_change": _percent(_change(paper_ssd, paper_none)),
                "s53_ours_change": _percent(_change(ours_ssd, ours_none)), "s53_ours_direction": word(ours_ssd),
                "s53_code_change": _percent(_change(ours_code, ours_none)), "s53_code_direction": word(ours_code),
                "s53_verdict": ("holds for both SSD rows" if max(ours_ssd, ours_code) < ours_none else
                                "does not hold for either SSD row" if min(ours_ssd, ours_code) >= ours_none else
                                "holds for the authors'-code row only" if ours_code < ours_none else
                                "holds for the paper-settings row only")}
    return table, findings
