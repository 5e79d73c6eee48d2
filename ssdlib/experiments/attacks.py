"""The attack experiments (the paper's Table 1 and Figure 2): every defense of a setting under one black-box attack,
beside the prior-only floor and the white-box ceiling, each run of (setting, defense, attack, class, seed) cached
(``attack_runs``).

The protocol, the same for every row (what makes rows comparable):

* equal effort: every row is attacked with the same attack parameters, classes, images per class and attack seeds,
  and no attack stops early on the target's answers (Mirror's official early stop is off), so every row gets the
  same generations and queries per class; the effort of each row is reported beside its metrics;
* the defense's randomness is part of the experiment: an SSD row's oracle is seeded per (run seed, class)
  (:class:`ssdlib.experiments.attack_runs.OracleFactory`), so the spread over attack seeds covers the attacker's and
  the defender's draws;
* verdicts come from :mod:`ssdlib.experiments.verdicts` (class-bootstrap 95 % intervals, a paired bootstrap over
  classes), and every row is read against the prior-only floor and the white-box ceiling (:mod:`.ceiling`).

A row is a training-time defense (its own target model) or an SSD variant (the undefended model behind
:class:`ssdlib.SSD` with the settings of :func:`ssdlib.experiments.settings.ssd_params`, q^y estimated on the
valid split).
"""
from __future__ import annotations

import pandas as pd
import torch

from .. import paper
from ..attacks import ATTACKS, build_attack
from ..defenses import OUTPUT_PERTURBATIONS, REGISTRY, TRAINING_DEFENSES
from ..metrics.attack import attack_effort, attack_metrics, prior_samples
from ..priors import train_prior
from ..scales import budget, check_scale
from ..utils import resolve_device
from .attack_runs import METRICS, OracleFactory, attack_runs
from .calibration import calibrated_temperature
from .ceiling import white_box_latents
from .dpsgd import DP_ROWS, dp_oracle, dp_row_title
from .evaluators import train_or_load_evaluator
from .perturbations import perturbation_oracle
from .settings import SSD_VARIANT_TITLES, SSD_VARIANTS, defense_params, setting
from .targets import private_data, ssd_of_setting, train_target
from .verdicts import compare, interval

#: A row beyond the paper: the authors'-code SSD (T = 0.1 in every setting, as the final version's Table 2) with its
#: temperature calibrated so that it randomises the labels of generated images at our class count as often as
#: T = 0.1 does at the paper's (:func:`ssdlib.experiments.calibration.calibrated_temperature`).
CALIBRATED = "ssd_cal"
#: The SSD variant the calibrated row starts from.
CALIBRATED_BASE = "ssd_code"
#: The paper's Table 7 row: SSD with the paper's settings, q^y estimated on the training split instead of the
#: validation split (Appendix E).
TRAIN_Q = "ssd_train"
#: The SSD rows: both variants of the paper, the calibrated one and the one with q^y from the training split.
SSD_ROWS = (*SSD_VARIANTS, CALIBRATED, TRAIN_Q)
#: The rows of the attack tables: the undefended target, the four training-time defenses, both SSD variants, and
#: the calibrated SSD row (beyond the paper; attack pages choose their rows).
ROWS = (*TRAINING_DEFENSES, *SSD_ROWS)
#: Rows beyond the paper, in the second block of Tables 1 and 2: the undefended target behind a cheap output
#: perturbation, its parameter matched to SSD's Avg L1 (:mod:`.perturbations`). Not in :data:`ROWS`: pages ask
#: for them.
BASELINE_ROWS = OUTPUT_PERTURBATIONS
#: Rows beyond the paper, in the same second block: the target trained with DP-SGD at each budget
#: (:mod:`.dpsgd`), released without an output defense. Not in :data:`ROWS`: pages ask for them.
DP_SGD_ROWS = tuple(DP_ROWS)
#: The reference rows every table carries: random prior samples (the floor) and the white-box ceiling.
REFERENCE_ROWS = {"prior": "prior only", "ceiling": "white-box ceiling"}
#: Short row labels for figures.
ROW_LABELS = {"none": "none", "mid": "MID", "bido": "BiDO", "ls": "LS", "tl": "TL", "ssd": "SSD",
              "ssd_code": "SSD (code)", CALIBRATED: "SSD (T cal.)", TRAIN_Q: "SSD (q train)", "prior": "prior",
              "ceiling": "ceiling", **{r: REGISTRY[r].title for r in BASELINE_ROWS},
              **{r: f"DP ε={DP_ROWS[r]:g}" for r in DP_SGD_ROWS}}
#: The title of the calibrated row.
CALIBRATED_TITLE = "SSD (T cal., ours)"
#: Classes attacked per row and images kept per class at each scale (the paper: the first 100 classes, 5 images
#: each). ``cpu`` attacks every class of the LFW settings (62) and as many of CelebA's, so that a row with one
#: attack seed holds 310 reconstructions.
PROTOCOL = {"smoke": dict(classes=2, per_class=2), "cpu": dict(classes=62, per_class=5),
            "paper": dict(classes=100, per_class=5)}


#: The table of the paper (submitted version) that reports each attack.
TABLE_NUMBERS = {"mirror": 1, "c2f": 1, "brep": 2, "lokt": 2, "rlb": 9}


def attack_title(attack: str) -> str:
    """The display name of an attack ("Mirror", "C2F")."""
    return ATTACKS[attack].__name__ if attack in ATTACKS else attack


def row_title(row: str) -> str:
    """The title of a table row (a defense name, an SSD variant, or a reference row)."""
    if row in REFERENCE_ROWS:
        return REFERENCE_ROWS[row]
    if row == CALIBRATED:
        return CALIBRATED_TITLE
    if row == TRAIN_Q:
        return SSD_VARIANT_TITLES["ssd"] + ", q from train"
    if row in DP_SGD_ROWS:
        return dp_row_title(row)
    return SSD_VARIANT_TITLES[row] if row in SSD_VARIANTS else REGISTRY[row].title


def oracle_factory(name: str, row: str, scale: str, *, mode: str = "soft", device=None, seed: int = 0, root=None,
                   progress: bool = False) -> tuple[OracleFactory, str, dict]:
    """``(factory, target_key, params)``: the :class:`OracleFactory` of setting ``name`` defended as ``row`` (an SSD
    row's defense seeded per run and class from ``seed``), the cache key of the model behind it, and the
    defense's parameters."""
    if row not in ROWS and row not in BASELINE_ROWS and row not in DP_SGD_ROWS:
        raise ValueError(f"unknown row {row!r}; valid: {', '.join((*ROWS, *BASELINE_ROWS, *DP_SGD_ROWS))}")
    if row in BASELINE_ROWS:
        return perturbation_oracle(name, row, scale, mode=mode, device=device, seed=seed, root=root,
                                   progress=progress)
    if row in DP_SGD_ROWS:
        return dp_oracle(name, row, scale, mode=mode, device=device, seed=seed, root=root, progress=progress)
    device = resolve_device(device)
    label = f"{name}/{row}"
    if row in TRAINING_DEFENSES:
        model, info = train_target(name, row, scale, device=device, seed=seed, root=root, progress=progress)
        return OracleFactory(model, mode=mode, name=label, seed=seed), info["key"], defense_params(name, row)
    model, info = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=progress)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    valid = data.valid
    if row == TRAIN_Q:
        build, params = ssd_of_setting(name, "ssd", model, data.train, seed=seed, device=device)
        params = {**params, "q_from": "train"}
    elif row == CALIBRATED:
        T = calibrated_temperature(name, scale, variant=CALIBRATED_BASE, seed=seed, root=root, device=device)["T"]
        build, params = ssd_of_setting(name, CALIBRATED_BASE, model, valid, seed=seed, device=device, T=T)
    else:
        build, params = ssd_of_setting(name, row, model, valid, seed=seed, device=device)
    return OracleFactory(model, build, mode=mode, name=label, seed=seed), info["key"], params


def attack_prior(scale: str, *, seed: int = 0, root=None, device=None, progress: bool = True):
    """The attacker's generative prior at ``scale``, trained on the public faces (cached): ``(Prior, info)``."""
    return train_prior(check_scale(scale), root=root, seed=seed, device=resolve_device(device), progress=progress)


def attack_inputs(attack: str, scale: str, *, seed: int = 0, root=None, device=None) -> dict:
    """What an attack needs besides its prior: LOKT trains on the attacker's public images (the prior's training
    set, identity-disjoint from the private data) and starts its discriminator from the prior's critic."""
    if attack != "lokt":
        return {}
    prior, info = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    payload = torch.load(info["path"], map_location="cpu", weights_only=False)
    return {"public": info["train"].images, "discriminator": payload["discriminator"]}


def chance_level(name: str, scale: str, *, seed: int = 0, root=None) -> float:
    """The evaluator's Acc@1 (%) by guessing: 100 / the number of private classes of setting ``name``."""
    return 100.0 / private_data(setting(name).dataset, scale, seed=seed, root=root).num_classes


def _attack_context(name: str, scale: str, classes: int | None, *, seed: int, root, device, progress: bool):
    """What every attack experiment of setting ``name`` starts from: the scale's protocol, the private data, the
    attacked classes (the first ``classes``, default the protocol's), the evaluation classifier and the prior."""
    check_scale(scale)
    protocol = budget(PROTOCOL, scale)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    targets = list(range(min(classes or protocol["classes"], data.num_classes)))
    evaluator = train_or_load_evaluator(data, seed=seed)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=progress)
    return protocol, data, targets, evaluator, prior


def _score(images, labels, evaluator, data, *, target=None, effort: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Metrics of labelled reconstructions and their per-class hits (one record per class)."""
    metrics = attack_metrics(images, labels, evaluator, data.train, target=target, per_image=True)
    frame = pd.DataFrame({"class": labels.numpy(), "hits@1": metrics.pop("hit1_all").numpy().astype(int),
                          "hits@5": metrics.pop("hit5_all").numpy().astype(int)})
    for key in ("delta_eval_all", "delta_face_all", "eval_pred"):
        metrics.pop(key)
    hits = frame.groupby("class", as_index=False).agg(**{"hits@1": ("hits@1", "sum"), "hits@5": ("hits@5", "sum"),
                                                         "n": ("hits@1", "size")})
    return {**metrics, **(effort or {})}, hits


def _run_images(runs) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([r.images for r in runs])
    labels = torch.cat([torch.full((len(r.images),), r.target, dtype=torch.long) for r in runs])
    return images, labels


def attack_table(name: str, scale: str, attack: str, *, rows=ROWS, seeds=(0,), extra_seeds=(1,),
                 extra_seed_rows=("none", "ssd"), classes: int | None = None, device=None, seed: int = 0, root=None,
                 progress: bool = True, **attack_params) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """One setting under ``attack``: a metrics row per (defense row, attack seed), plus the prior-only floor and
    the white-box ceiling (reference rows).

    ``seeds`` are the attack seeds of every row; ``extra_seeds`` are added for ``extra_seed_rows``.
    ``attack_params`` override the attack's parameters for every row alike. Returns the table (metrics and
    effort), the results ``{(row, attack_seed): [AttackResult]}``, and the per-class hits (one record per
    (row, attack seed, class): ``hits@1``, ``hits@5``, ``n``) that intervals and verdicts are computed from.
    """
    protocol, data, targets, evaluator, prior = _attack_context(name, scale, classes, seed=seed, root=root,
                                                                device=device, progress=progress)
    method = build_attack(attack, prior, scale=scale, top_k=protocol["per_class"],
                          **attack_inputs(attack, scale, seed=seed, root=root, device=device), **attack_params)
    records, results, per_class = [], {}, []

    def add(row: str, attack_seed: int, metrics: dict, hits: pd.DataFrame) -> None:
        ident = {"setting": name, "attack": attack, "row": row, "title": row_title(row), "attack_seed": attack_seed}
        records.append({**ident, **metrics})
        per_class.append(hits.assign(**ident))

    undefended = None
    for row in rows:
        factory, key, params = oracle_factory(name, row, scale, mode=method.mode, device=device, seed=seed,
                                              root=root)
        if row == "none":
            undefended = factory
        for s in (*seeds, *(extra_seeds if row in extra_seed_rows else ())):
            runs = attack_runs(method, factory, targets, seed=s, target_key=key, prior_key=prior.key,
                               setting=name, defense=row, defense_params=params, progress=progress)
            results[(row, s)] = runs
            effort = attack_effort(runs)
            add(row, s, *_score(*_run_images(runs), evaluator, data, target=factory(s, METRICS), effort=effort))
    if undefended is not None:
        images, labels = prior_samples(prior, targets, protocol["per_class"], seed=seed)
        add("prior", seed, *_score(images, labels, evaluator, data, target=undefended(seed, METRICS)))
        images, labels = white_box_ceiling(name, scale, targets, protocol["per_class"], seed=seed, root=root,
                                           device=device, progress=progress)
        add("ceiling", seed, *_score(images, labels, evaluator, data, target=undefended(seed, METRICS)))
    table = pd.DataFrame(records)
    for col in ("acc@1", "acc@5", "target_acc@1"):
        table[col] *= 100
    return table, results, pd.concat(per_class, ignore_index=True)


def white_box_ceiling(name: str, scale: str, classes, per_class: int, *, seed: int = 0, root=None, device=None,
                      progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The white-box ceiling's images and labels for setting ``name`` (cached; see :mod:`.ceiling`)."""
    device = resolve_device(device)
    model, info = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    latents, labels = white_box_latents(model, prior, classes, scale, target_key=info["key"], seed=seed,
                                        progress=progress, starts=per_class)
    return prior.decode(latents), labels


#: The effort columns of every attack table (equal across rows by construction; reported so a reader can check).
EFFORT_COLUMNS = ("generations_per_class", "queries_per_class", "queries_min", "queries_max", "seconds_per_class",
                  "stopped", "classes")


def with_intervals(table: pd.DataFrame, per_class: pd.DataFrame) -> pd.DataFrame:
    """``summarize(table)`` plus each row's Acc@1 / Acc@5 95 % interval over classes (attack seeds pooled), and
    its reconstructions (``images``)."""
    out = summarize(table)
    for col in ("acc@1", "acc@5"):
        lows, highs = [], []
        for r in out.itertuples():
            hits = per_class[(per_class.setting == r.setting) & (per_class.attack == r.attack)
                             & (per_class.row == r.row)]
            _, low, high = interval(hits, f"hits@{col[-1]}")
            lows.append(low)
            highs.append(high)
        out[f"{col} low"], out[f"{col} high"] = lows, highs
    images = per_class.groupby(["setting", "attack", "row"])["n"].sum()
    out["images"] = [int(images.get((r.setting, r.attack, r.row), 0)) for r in out.itertuples()]
    return out


def verdicts(per_class: pd.DataFrame, reference: str = "none", rows=None) -> pd.DataFrame:
    """Every row against ``reference`` (same setting and attack), paired over classes with attack seeds pooled:
    the mean difference in Acc@1 (points), its 95 % interval and the verdict (:func:`.verdicts.compare`)."""
    records = []
    for (s, a), part in per_class.groupby(["setting", "attack"], sort=False):
        ref = part[part.row == reference]
        if not len(ref):
            continue
        for row in part.row.unique():
            if row == reference or (rows is not None and row not in rows):
                continue
            c = compare(ref, part[part.row == row])
            title = row_title(row) if row in (*ROWS, *BASELINE_ROWS, *REFERENCE_ROWS) else row
            records.append({"setting": s, "attack": a, "row": row, "title": title, "against": reference,
                            "difference": c.difference, "low": c.low, "high": c.high, "verdict": c.verdict,
                            "classes": c.classes, "images": c.images_b, "images against": c.images_a})
    return pd.DataFrame(records)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over attack seeds per (setting, attack, row), with each distance's ratio to the undefended
    row of its setting and attack."""
    keys = ["setting", "attack", "row", "title"]
    cols = ["acc@1", "acc@5", "delta_eval", "delta_face", "target_acc@1", "generations_per_class",
            "queries_per_class", "seconds_per_class"]
    cols = [c for c in cols if c in table.columns]
    grouped = table.groupby(keys, sort=False)
    out = grouped[cols].mean().reset_index()
    out["seeds"] = grouped.size().to_numpy()
    out["acc@1 spread"] = grouped["acc@1"].agg(lambda x: float(x.max() - x.min()) if len(x) > 1 else float("nan")
                                               ).to_numpy()
    for d in ("delta_eval", "delta_face"):
        ref = out[out.row == "none"].set_index(["setting", "attack"])[d]
        out[f"{d} ratio"] = [v / ref.get((s, a), float("nan")) for s, a, v in zip(out.setting, out.attack, out[d])]
    return out


def with_paper(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary beside the paper's Table 1 (soft-label attacks), 2 (label-only attacks) or 9 (RLB), both versions,
    for the setting each of ours stands in for; the SSD (paper) row meets the submitted version's SSD row, the
    authors'-code row the final version's. Rows the paper does not have (the calibrated SSD) get no value."""
    out = summary.copy()
    for version, label in (("submitted", "submitted"), ("iclr2025", "ICLR 2025")):
        table = pd.concat([paper.soft_label_attacks(version), paper.hard_label_attacks(version),
                           paper.rlb_attack(version)], ignore_index=True)
        table = table.assign(setting=table.setting.map(paper.SETTING_FROM_PAPER),
                             attack=table.attack.str.lower())
        own = {"submitted": "ssd", "iclr2025": "ssd_code"}[version]
        lookup = {(r.setting, r.attack, r.defense): r for r in table.itertuples()}
        for col, src in (("acc@1", "acc1"), ("acc@5", "acc5")):
            values = []
            for r in out.itertuples():
                defense = "ssd" if r.row == own else (r.row if r.row in TRAINING_DEFENSES else None)
                hit = lookup.get((r.setting, r.attack, defense)) if defense else None
                values.append(getattr(hit, src) if hit is not None else float("nan"))
            out[f"paper {col} ({label})"] = values
    return out


def reconstructions(results: dict, row: str, seed: int, classes) -> dict[int, torch.Tensor]:
    """The best reconstruction of each class of ``classes`` for ``row`` and attack ``seed`` (for Figure 2)."""
    runs = {r.target: r for r in results[(row, seed)]}
    return {c: runs[c].images[0] for c in classes if c in runs}


#: Variants of each attack measured against the undefended targets only, as an attacker would tune (label ->
#: parameter overrides of the scale's effort): a larger effort (is the attack effort-limited?) and the choices that
#: decide its strength (Mirror's latent box, tuned for StyleGAN's w-space, against our DCGAN's Gaussian latent;
#: C2F without its stage I).
VARIANTS = {
    "mirror": {"twice the generations": lambda p: {"generations": 2 * p["generations"]},
               "latent box ±2 std": lambda p: {"bound_std": 2.0},
               "no latent box": lambda p: {"bound_std": None}},
    "c2f": {"twice the generations": lambda p: {"generations": 2 * p["generations"]},
            "without stage I": lambda p: {"stage1_steps": 0}},
    "rlb": {"twice the episodes": lambda p: {"episodes": 2 * p["episodes"]}},
    "lokt": {"twice the T-ACGAN steps": lambda p: {"tacgan_steps": 2 * p["tacgan_steps"]}},
    "brep": {"twice the iterations": lambda p: {"iterations": 2 * p["iterations"]},
             "attraction too (MIBench)": lambda p: {"repulsion_only": False}},
}


def attack_variants(name: str, scale: str, attack: str, *, seed: int = 0, classes: int | None = None, device=None,
                    root=None, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The undefended target of setting ``name`` attacked with the scale's parameters and with each of
    :data:`VARIANTS` (the first ``classes`` classes, attack seed ``seed``; cached runs): one metrics row per
    variant, and each variant against the default by the paired rule (:func:`verdicts`)."""
    if attack not in VARIANTS:
        raise ValueError(f"no variants defined for attack {attack!r}; known: {', '.join(VARIANTS)}")
    protocol, data, targets, evaluator, prior = _attack_context(name, scale, classes, seed=seed, root=root,
                                                                device=device, progress=progress)
    factory, key, params = oracle_factory(name, "none", scale, mode=ATTACKS[attack].mode, device=device, seed=seed,
                                          root=root)
    inputs = attack_inputs(attack, scale, seed=seed, root=root, device=device)
    default = build_attack(attack, prior, scale=scale, top_k=protocol["per_class"], **inputs)
    records, per_class = [], []
    for label, grow in (("default", lambda p: {}), *VARIANTS[attack].items()):
        overrides = grow(default.params)
        method = build_attack(attack, prior, scale=scale, top_k=protocol["per_class"], **inputs, **overrides)
        runs = attack_runs(method, factory, targets, seed=seed, target_key=key, prior_key=prior.key, setting=name,
                           defense="none", defense_params=params, progress=progress)
        effort = attack_effort(runs)
        change = ", ".join(f"{k} {v}" for k, v in overrides.items()) or "the scale's parameters"
        metrics, hits = _score(*_run_images(runs), evaluator, data, target=factory(seed, METRICS), effort=effort)
        records.append({"setting": name, "attack": attack, "variant": label, "change": change, **metrics})
        per_class.append(hits.assign(setting=name, attack=attack, row=label))
    table = pd.DataFrame(records)
    for col in ("acc@1", "acc@5", "target_acc@1"):
        table[col] *= 100
    per_class = pd.concat(per_class, ignore_index=True)
    against = verdicts(per_class, reference="default")
    return table, against.drop(columns=["title"])


#: How a verdict of :func:`.verdicts.compare` reads in the book (row against the undefended target).
VERDICT_WORDS = {"lower": "lowers Acc@1", "higher": "raises Acc@1", "inconclusive": "inconclusive at this scale"}


def _acc_text(summary_row) -> str:
    return (f"{summary_row['acc@1']:.1f}% (95% CI {summary_row['acc@1 low']:.1f} to "
            f"{summary_row['acc@1 high']:.1f})")


def verdict_lines(summary: pd.DataFrame, per_class: pd.DataFrame, *, titles=None) -> list[str]:
    """One Markdown bullet per (setting, attack): the undefended row, the white-box ceiling and the prior-only
    floor with their intervals, then each row against the undefended target by the paired rule. When the attack
    does not beat random prior samples, no defense is judged (a lower number would not be protection).

    ``summary`` is :func:`with_intervals`' output; ``titles`` maps a setting name to its display title."""
    titles = titles or {}
    lines = []
    for (s, a), part in summary.groupby(["setting", "attack"], sort=False):
        rows = part.set_index("row")
        hits = per_class[(per_class.setting == s) & (per_class.attack == a)]
        if "none" not in rows.index:
            continue
        head = (f"**{titles.get(s, s)}**, {attack_title(a)}: the undefended target gives "
                f"{_acc_text(rows.loc['none'])}")
        parts = []
        if "ceiling" in rows.index:
            ceil = rows.loc["ceiling", "acc@1"]
            share = (f" (the undefended row reaches {100 * rows.loc['none', 'acc@1'] / ceil:.0f}% of it)"
                     if ceil > 0 else "")
            parts.append(f"the white-box ceiling {_acc_text(rows.loc['ceiling'])}{share}")
        if "prior" in rows.index:
            parts.append(f"random prior samples {_acc_text(rows.loc['prior'])}")
        text = head + ("; " + "; ".join(parts) if parts else "") + "."
        by_row = {r: g for r, g in hits.groupby("row")}
        if "prior" in by_row:
            beat = compare(by_row["prior"], by_row["none"])
            if beat.verdict != "higher":
                lines.append(text + f" The attack does not beat random prior samples here ({beat.describe()}), "
                             "so no defense can be judged on this setting: a lower Acc@1 would not be protection.")
                continue
        judged, lower, unclear = [], [], []
        for row in (r for r in ROWS if r != "none" and r in by_row):
            c = compare(by_row["none"], by_row[row])
            if row in SSD_ROWS:
                judged.append(f"{row_title(row)} {VERDICT_WORDS[c.verdict]} ({c.describe()})")
            else:
                (lower if c.verdict == "lower" else unclear).append(row_title(row))
        if judged:
            text += " " + "; ".join(judged) + "."
        if lower or unclear:
            text += (f" Training-time defenses that lower it by the same rule: {', '.join(lower) or 'none'}"
                     + (f" (not: {', '.join(unclear)})" if unclear else "") + ".")
        lines.append(text)
    return lines


def verdict_counts(per_class: pd.DataFrame, row: str = "ssd", reference: str = "none") -> dict:
    """How many (setting, attack) cases the paired rule finds ``row`` lower / higher / inconclusive than
    ``reference``, counting only the cases where the attack beats the prior-only floor (``"attack beats prior"``;
    the others are ``"not judged"``: there a lower Acc@1 would not be protection), out of ``"cases"``."""
    counts = {v: 0 for v in ("lower", "higher", "inconclusive")}
    counts["attack beats prior"] = counts["not judged"] = counts["cases"] = 0
    for _, part in per_class.groupby(["setting", "attack"], sort=False):
        by_row = {r: g for r, g in part.groupby("row")}
        if reference not in by_row or row not in by_row:
            continue
        counts["cases"] += 1
        if "prior" in by_row and compare(by_row["prior"], by_row[reference]).verdict != "higher":
            counts["not judged"] += 1
            continue
        counts["attack beats prior"] += "prior" in by_row
        counts[compare(by_row[reference], by_row[row]).verdict] += 1
    return counts


def variant_lines(against: pd.DataFrame, *, titles=None) -> list[str]:
    """One Markdown bullet per setting and attack: which variants of :data:`VARIANTS` the paired rule finds
    stronger (``higher``) or weaker than the default against the undefended target, from :func:`attack_variants`."""
    titles = titles or {}
    lines = []
    for (s, a), part in against.groupby(["setting", "attack"], sort=False):
        words = []
        for r in part.itertuples():
            verdict = {"higher": "clearly stronger", "lower": "clearly weaker",
                       "inconclusive": "not clearly different"}[r.verdict]
            words.append(f"{r.row}: {verdict} ({r.difference:+.1f} points, 95% CI {r.low:+.1f} to {r.high:+.1f})")
        lines.append(f"**{titles.get(s, s)}**, {attack_title(a)}, against the default: " + "; ".join(words) + ".")
    return lines


def _full_runs(stopped) -> str:
    """``"62/62"`` when every run ran all its generations, else with the other stop reasons named."""
    counts: dict[str, int] = {}
    for text in stopped:
        for part in str(text).split(", "):
            reason, n = part.rsplit(": ", 1)
            counts[reason] = counts.get(reason, 0) + int(n)
    other = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "generations")
    return f"{counts.get('generations', 0)}/{sum(counts.values())}" + (f" ({other})" if other else "")


def effort_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, row) of an attack table: attack seeds, generations per class, queries per class (one number
    when every class and seed cost the same, else the range), runs that ran every generation out of all, the
    shared setup's queries and seconds per class (setup excluded). Reference rows are left out."""
    attacked = table[~table.row.isin(list(REFERENCE_ROWS))]
    out = attacked.groupby(["setting", "row", "title"], sort=False).agg(
        seeds=("attack_seed", "size"), generations=("generations_per_class", "mean"),
        qmin=("queries_min", "min"), qmax=("queries_max", "max"), full_runs=("stopped", _full_runs),
        setup_queries=("setup_queries", "max"), seconds=("seconds_per_class", "mean")).reset_index()
    out["queries"] = [f"{a:,.0f}" if a == b else f"{a:,.0f}–{b:,.0f}" for a, b in zip(out.qmin, out.qmax)]
    return out.drop(columns=["qmin", "qmax"])


#: The diagnostics each attack page shows (diagnostic -> short column label); every diagnostic is in the runs' CSV.
#: C2F: mean target probability of stage I's latents before / after stage I, and the inversion network's
#: validation error over that of predicting the mean latent (below 1: the answers still tell it something);
#: RLB: mean reward of the first and last 5 % of episodes; BREP: start points found (of the images per class),
#: radius growths and rejected steps per chain, share of chains that never grew (they return their start point);
#: LOKT: the surrogate ensemble's agreement with the target on held-out generated images, the share of the most
#: common label there (what always answering it would agree), and the largest label's share of the labelled set.
SHOWN_DIAGNOSTICS = {
    "c2f": {"diag_stage1_before": "p before I", "diag_stage1_after": "p after I", "inversion_ratio": "inv. error"},
    "rlb": {"diag_reward_first": "reward first", "diag_reward_last": "reward last"},
    "brep": {"diag_starts_found": "starts", "diag_growths": "growths", "diag_rejected": "rejected",
             "diag_never_grew": "never grew"},
    "lokt": {"diag_agreement_ensemble": "agreement", "diag_agreement_majority": "top label",
             "diag_labelled_largest_share": "largest class"},
}


def diagnostics_table(runs: pd.DataFrame, attack: str) -> pd.DataFrame | None:
    """Per (setting, row) of an attack's runs (``attack_table``'s first output, reference rows left out), the mean
    of each diagnostic of :data:`SHOWN_DIAGNOSTICS`, under its short label; None when the attack shows none."""
    shown = SHOWN_DIAGNOSTICS.get(attack)
    if not shown:
        return None
    runs = runs.copy()
    if {"diag_inversion_mse", "diag_inversion_mse_of_mean"} <= set(runs.columns):
        runs["inversion_ratio"] = runs.diag_inversion_mse / runs.diag_inversion_mse_of_mean
    cols = [c for c in shown if c in runs.columns]
    if not cols:
        return None
    out = runs.groupby(["setting", "row"], sort=False)[cols].mean().reset_index()
    return out.rename(columns=shown)
