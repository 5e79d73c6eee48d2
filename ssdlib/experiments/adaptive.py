"""The adaptive attacker of Appendix H against SSD and its hash-seeded variants, measured (the paper only proposes
the defenses).

Variants (:func:`variants`): plain SSD (a fresh draw per query), SSD seeded by an exact keyed hash of the input
(``randomness="hash"``), and SSD seeded by the robust hash of eq. (26) over the target's penultimate features
(``randomness="robust"``) over a range of k, literally and with secret per-feature offsets (beyond the paper). Each
variant answers the averaging attacker (:mod:`ssdlib.attacks.adaptive`) with and without a few grey levels of noise
on its copies (:func:`recovery_curves`); :func:`copy_agreement` measures how often two perturbed copies of one image
get the same draw, and :func:`hash_cost` what seeding costs in distortion and accuracy against plain SSD.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..attacks import adaptive as AA
from ..blackbox import BlackBox
from ..cache import config_hash
from ..defenses import SSD, RobustHash
from ..utils import resolve_device
from .attacks import attack_prior
from .settings import setting
from .targets import private_data, ssd_of_setting, train_target

__all__ = ["Variant", "variants", "AdaptiveContext", "adaptive_context", "recovery_curves", "copy_agreement",
           "hash_cost", "verdicts", "findings", "claims", "UNDEFENDED", "mirror_with_front", "mirror_front_lines"]

#: The two sets of images: confident private test images, and uncertain generated ones (the attacker's regime).
IMAGE_SETS = ("private test", "generated")


@dataclass(frozen=True)
class Variant:
    """One defense against the adaptive attacker: ``randomness`` of :class:`ssdlib.SSD`, and for the robust hash its
    sensitivity ``k`` and whether its grid has secret offsets."""

    randomness: str
    k: float | None = None
    offsets: bool = True

    @property
    def label(self) -> str:
        if self.randomness == "generator":
            return "plain SSD"
        if self.randomness == "hash":
            return "exact hash"
        return f"robust hash{'' if self.offsets else ' (eq. 26)'}, k={self.k:g}"


def variants(ks, literal_ks=()) -> list[Variant]:
    """Plain SSD, the exact hash, the robust hash with offsets at each of ``ks`` and literally at ``literal_ks``."""
    return ([Variant("generator"), Variant("hash")] + [Variant("robust", float(k), False) for k in literal_ks]
            + [Variant("robust", float(k)) for k in ks])


@dataclass
class AdaptiveContext:
    """What the measurements share: the undefended target, its SSD (q table and parameters), the image sets and the
    undefended predictions on them."""

    name: str
    model: torch.nn.Module
    base: SSD
    params: dict
    images: dict
    truth: dict
    labels: torch.Tensor
    seed: int
    target_key: str = ""

    def defense(self, variant: Variant, run: int | str = 0) -> SSD:
        """The SSD of ``variant``, its draw (or hash key) seeded by (experiment seed, variant, run)."""
        s = int(config_hash({"experiment": self.seed, "variant": variant.label, "run": run}), 16) % 2**63
        robust = RobustHash(self.model, variant.k, offsets=variant.offsets) if variant.randomness == "robust" else None
        return SSD(self.base.q_table, T=self.base.T, eps=self.base.eps, entropy=self.base.entropy,
                   randomness=variant.randomness, seed=s, hash_key=s.to_bytes(8, "little"), robust_hash=robust)

    def oracle(self, variant: Variant, run: int | str = 0) -> BlackBox:
        return BlackBox(self.model, self.defense(variant, run), mode="soft", name=f"{self.name}/{variant.label}")


def adaptive_context(name: str, scale: str, *, variant: str = "ssd", images: int = 64, seed: int = 0, root=None,
                     device=None) -> AdaptiveContext:
    """The cached undefended target of setting ``name``, its SSD ``variant`` (q^y on the valid split), the first
    ``images`` private test images and as many generated ones (random prior samples)."""
    device = resolve_device(device)
    model, info = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    build, params = ssd_of_setting(name, variant, model, data.valid, seed=seed, device=device)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    test = data.test.float_images()[:images].to(device)
    generated = prior.decode(prior.sample(images, torch.Generator().manual_seed(30_000 + seed))).to(device)
    sets = {"private test": test, "generated": generated}
    plain = BlackBox(model, mode="soft")
    return AdaptiveContext(name, model, build(seed), params, sets, {k: plain(v) for k, v in sets.items()},
                           data.test.labels[:images], seed, info["key"])


def recovery_curves(ctx: AdaptiveContext, specs, repeats, grey_levels) -> pd.DataFrame:
    """Per variant, noise level, image set and number of repeats n (each a prefix of the largest), the attacker's
    recovery of f(x) with each estimator: top-1 agreement (%) and mean L1 error, the queries it spent, and what ONE
    query gives (``single top1``, ``single l1``: averaged over all the answers, so a precise baseline)."""
    repeats = sorted(int(r) for r in repeats)
    rows = []
    jobs = [(v, g, s) for v in specs for g in grey_levels for s in IMAGE_SETS]
    for v, g, s in tqdm(jobs, desc=f"adaptive attacker ({ctx.name})", leave=False):
        oracle = ctx.oracle(v, f"curve-{g}-{s}")
        answers = AA.repeat_queries(oracle, ctx.images[s], repeats[-1], grey_levels=int(g), seed=ctx.seed)
        truth = ctx.truth[s].double().cpu()[:, None]
        single = {"single top1": 100 * float((answers.argmax(-1).cpu() == truth.argmax(-1)).double().mean()),
                  "single l1": float((answers.double().cpu() - truth).abs().sum(-1).mean())}
        for n in repeats:
            for est in AA.ESTIMATORS:
                rec = AA.recovery(AA.estimate_prediction(answers[:, :n], ctx.base.T, est), ctx.truth[s])
                rows.append({"variant": v.label, "randomness": v.randomness, "k": v.k, "offsets": v.offsets,
                             "grey levels": int(g), "images": s, "repeats": n, "estimator": est, **rec,
                             "queries": n * len(answers), **single})
        assert oracle.queries == repeats[-1] * len(answers)
    return pd.DataFrame(rows)


def copy_agreement(ctx: AdaptiveContext, specs, grey_levels, *, pairs: int = 4) -> pd.DataFrame:
    """Per variant and noise level, over ``pairs`` pairs of perturbed copies of each image: how often both copies get
    the same draw y (%) and the same top-1 answer (%); for the robust hash also how often they get the same h (%)
    and how often two DISTINCT images share h (%, over all pairs of the image set)."""
    rows = []
    for v in specs:
        defense = ctx.defense(v, "copies")
        key = bytes(defense.hash_key.tolist())
        oracle = BlackBox(ctx.model, defense, mode="soft")
        plain = BlackBox(ctx.model, mode="soft")
        for g in grey_levels:
            for s in IMAGE_SETS:
                x = AA.perturbed_copies(ctx.images[s], 2 * pairs, int(g), torch.Generator().manual_seed(ctx.seed + 1))
                probs = plain(x)
                draws = defense.sample_labels(probs, x).reshape(-1, pairs, 2)
                tops = oracle(x).argmax(-1).reshape(-1, pairs, 2)
                row = {"variant": v.label, "randomness": v.randomness, "k": v.k, "offsets": v.offsets,
                       "grey levels": int(g), "images": s,
                       "same draw (%)": 100 * float((draws[..., 0] == draws[..., 1]).double().mean()),
                       "same top-1 (%)": 100 * float((tops[..., 0] == tops[..., 1]).double().mean()),
                       "same h (%)": float("nan"), "distinct images sharing h (%)": float("nan")}
                if v.randomness == "robust":
                    h = defense.robust_hash(x, key).reshape(-1, pairs, 2)
                    row["same h (%)"] = 100 * float((h[..., 0] == h[..., 1]).double().mean())
                    clean = defense.robust_hash(ctx.images[s], key)
                    same = (clean[:, None] == clean[None, :]).double()
                    n = len(clean)
                    row["distinct images sharing h (%)"] = 100 * float((same.sum() - n) / (n * (n - 1)))
                rows.append(row)
    return pd.DataFrame(rows)


def hash_cost(ctx: AdaptiveContext, specs) -> pd.DataFrame:
    """Per variant, on the private test images (one query each): test accuracy (%) through the defended answers,
    Avg L1 and Max L1 between defended and undefended outputs, and on generated images the share whose top-1 answer
    keeps the undefended top-1 (%)."""
    rows = []
    for v in specs:
        oracle = ctx.oracle(v, "cost")
        test, gen = oracle(ctx.images["private test"]), oracle(ctx.images["generated"])
        l1 = (test.double() - ctx.truth["private test"].double()).abs().sum(-1)
        rows.append({"variant": v.label, "randomness": v.randomness, "k": v.k, "offsets": v.offsets,
                     "test acc. (%)": 100 * float((test.argmax(-1).cpu() == ctx.labels).double().mean()),
                     "Avg L1": float(l1.mean()), "Max L1": float(l1.max()),
                     "generated top-1 kept (%)": 100 * float(
                         (gen.argmax(-1) == ctx.truth["generated"].argmax(-1)).double().mean())})
    undefended = 100 * float((ctx.truth["private test"].argmax(-1).cpu() == ctx.labels).double().mean())
    return pd.DataFrame(rows).assign(**{"undefended acc. (%)": undefended})


def _at(curves: pd.DataFrame, **where) -> pd.DataFrame:
    mask = pd.Series(True, index=curves.index)
    for col, val in where.items():
        mask &= curves[col] == val
    return curves[mask]


def verdicts(curves: pd.DataFrame, *, images: str = "generated", estimator: str = "inverted",
             margin: float = 3.0) -> pd.DataFrame:
    """Per variant and noise level, on ``images``: top-1 agreement of one query and of the estimate from the most
    repeats, the gain, and whether the attacker is stopped (a gain of at most ``margin`` points)."""
    n_max, rows = int(curves.repeats.max()), []
    for (label, g), c in curves[(curves.images == images) & (curves.estimator == estimator)].groupby(
            ["variant", "grey levels"], sort=False):
        last = c[c.repeats == n_max].iloc[0]
        gain = last.top1 - last["single top1"]
        rows.append({"variant": label, "randomness": last.randomness, "k": last.k, "offsets": last.offsets,
                     "grey levels": int(g), "one query (%)": last["single top1"], f"{n_max} repeats (%)": last.top1,
                     "gain": gain, "stopped": bool(gain <= margin)})
    return pd.DataFrame(rows)


def findings(curves: pd.DataFrame, copies: pd.DataFrame, cost: pd.DataFrame, *, images: str = "generated",
             estimator: str = "inverted", margin: float = 3.0) -> list[str]:
    """Sentences generated from the numbers: what the averaging attacker recovers from each variant (:func:`verdicts`
    on ``images``), how stable and how distinct the robust hash is, and what seeding costs against plain SSD."""
    table, lines = verdicts(curves, images=images, estimator=estimator, margin=margin), []
    n_max = int(curves.repeats.max())
    for label, part in table.groupby("variant", sort=False):
        parts = [f"{r['grey levels']} grey levels {r['one query (%)']:.0f}% -> {r[f'{n_max} repeats (%)']:.0f}% "
                 f"({'stopped' if r.stopped else 'recovered'})" for r in part.to_dict("records")]
        lines.append(f"**{label}**: top-1 agreement with f(x) from one query -> from {n_max} repeats, "
                     + "; ".join(parts) + ".")
    plain = cost[cost.randomness == "generator"].iloc[0]
    seeded = cost[cost.randomness != "generator"]
    lines.append(f"Cost: plain SSD keeps {plain['test acc. (%)']:.1f}% test accuracy at Avg L1 {plain['Avg L1']:.3f}; "
                 f"the seeded variants {seeded['test acc. (%)'].min():.1f}-{seeded['test acc. (%)'].max():.1f}% at "
                 f"Avg L1 {seeded['Avg L1'].min():.3f}-{seeded['Avg L1'].max():.3f} (the seed changes which label is "
                 "drawn, not how the output is projected).")
    robust = copies[(copies.randomness == "robust") & (copies["grey levels"] > 0) & (copies.images == images)]
    for label, part in robust.groupby("variant", sort=False):
        kept = ", ".join(f"{r['same h (%)']:.0f}% at {r['grey levels']} grey levels" for r in part.to_dict("records"))
        lines.append(f"**{label}** keeps h for {kept} of perturbed copy pairs; "
                     f"{part['distinct images sharing h (%)'].iloc[0]:.0f}% of pairs of distinct images share h.")
    return lines


def claims(table: pd.DataFrame, copies: pd.DataFrame, cost: pd.DataFrame, *, images: str = "generated",
           accuracy_tol: float = 2.0, l1_tol: float = 0.01) -> list[str]:
    """Appendix H's claims, each said to hold or not from :func:`verdicts` (``table``), :func:`copy_agreement` and
    :func:`hash_cost`; seeding "costs nothing" when test accuracy and Avg L1 stay within ``accuracy_tol`` points and
    ``l1_tol`` of plain SSD's."""
    def stopped(randomness, noisy, offsets=None):
        t = table[(table.randomness == randomness) & ((table["grey levels"] > 0) == noisy)]
        return t if offsets is None else t[t.offsets == offsets]

    def say(ok: bool) -> str:
        return "**holds**" if ok else "**does not hold**"

    lines, most = [], next(c for c in table.columns if c.endswith("repeats (%)"))
    plain = stopped("generator", False)
    lines.append(f"The averaging attacker recovers the undefended top-1 label from plain SSD: "
                 f"{say(not plain.stopped.any())} ({plain['one query (%)'].mean():.0f}% top-1 agreement from one "
                 f"query, {plain[most].mean():.0f}% from {most.split()[0]}).")
    exact = stopped("hash", False)
    lines.append(f"Seeding the draw by an exact hash of the input stops it when the copies are identical: "
                 f"{say(bool(exact.stopped.all()))}.")
    noisy = stopped("hash", True)
    if len(noisy):
        lines.append(f"A few grey levels of noise defeat the exact hash: {say(not noisy.stopped.any())} "
                     f"(recovered at {', '.join(str(g) for g in noisy[~noisy.stopped]['grey levels']) or 'no'} grey "
                     "levels).")
    for offsets, name in ((False, "The robust hash of eq. (26) as written"),
                          (True, "The robust hash with secret offsets")):
        part = stopped("robust", True, offsets)
        if not len(part):
            continue
        robust_ks = sorted(k for k, g in part.groupby("k") if g.stopped.all())
        share = copies[(copies.randomness == "robust") & (copies.offsets == offsets) & (copies.images == images)
                       & (copies.k.isin(robust_ks))]
        text = (f"{name} stops the attacker at every noise level for some k: {say(bool(robust_ks))}"
                + (f" (k = {', '.join(f'{k:g}' for k in robust_ks)}, where "
                   f"{share['distinct images sharing h (%)'].max():.0f}% of pairs of distinct images share h)"
                   if robust_ks else f" (tried k = {', '.join(f'{k:g}' for k in sorted(part.k.unique()))})") + ".")
        lines.append(text)
    base = cost[cost.randomness == "generator"].iloc[0]
    seeded = cost[cost.randomness != "generator"]
    same = bool((seeded["test acc. (%)"] - base["test acc. (%)"]).abs().max() <= accuracy_tol
                and (seeded["Avg L1"] - base["Avg L1"]).abs().max() <= l1_tol)
    lines.append(f"Seeding costs nothing in test accuracy or Avg L1 on the private test images (within "
                 f"{accuracy_tol:g} points and {l1_tol:g}): {say(same)} (plain SSD {base['test acc. (%)']:.1f}% and "
                 f"{base['Avg L1']:.3f}; seeded "
                 f"{seeded['test acc. (%)'].min():.1f}-{seeded['test acc. (%)'].max():.1f}% and "
                 f"{seeded['Avg L1'].min():.3f}-{seeded['Avg L1'].max():.3f}). The robust hash does cost a second "
                 "pass through the target's feature layers per query in this implementation.")
    return lines


#: The row of :func:`mirror_with_front` without a defense (Mirror on the undefended target, on the same classes).
UNDEFENDED = "no defense"


def mirror_with_front(ctx: AdaptiveContext, specs, scale: str, *, classes: int, repeats: int, grey_levels: int,
                      estimator: str = "majority", root=None, device=None, progress: bool = True,
                      cache: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mirror (the scale's effort, the same for every row, seeded) on the first ``classes`` classes: against the
    undefended target, and against each variant once directly and once through the averaging attacker (``repeats``
    copies per query with ``grey_levels`` of noise). Returns ``(summary, per_class)``: per row Acc@1 with its
    class-bootstrap 95 % interval, Acc@5 and the real queries; per (row, class) the hits. Each row is cached by its
    configuration; its defense is seeded per (variant, row)."""
    from ..attacks import build_attack
    from ..cache import cached
    from ..metrics.attack import attack_metrics
    from .evaluators import train_or_load_evaluator
    from .verdicts import interval, per_class_accuracy

    device = resolve_device(device)
    data = private_data(setting(ctx.name).dataset, scale, seed=ctx.seed, root=root)
    evaluator = train_or_load_evaluator(data, seed=ctx.seed)
    prior, _ = attack_prior(scale, seed=ctx.seed, root=root, device=device, progress=False)
    targets = list(range(min(int(classes), data.num_classes)))
    front_params = {"repeats": int(repeats), "grey_levels": int(grey_levels), "estimator": estimator}
    rows = [(None, False)] + [(v, front) for v in specs for front in (False, True)]
    summary, per_class = [], []
    for v, front in tqdm(rows, desc="Mirror behind the averaging attacker", disable=not progress):
        attack = build_attack("mirror", prior, scale=scale)
        label = UNDEFENDED if v is None else v.label
        attacker = f"averaged ({repeats}×, ±{grey_levels})" if front else "Mirror alone"
        config = {"kind": "adaptive-mirror", "setting": ctx.name, "scale": scale, "target": ctx.target_key,
                  "prior": prior.key, "ssd": None if v is None else ctx.params,
                  "variant": None if v is None else {"randomness": v.randomness, "k": v.k, "offsets": v.offsets},
                  "front": front_params if front else None, "params": dict(attack.params), "classes": targets,
                  "seed": int(ctx.seed)}

        def compute(_, v=v, front=front, attack=attack):
            inner = BlackBox(ctx.model, mode="soft", name=ctx.name) if v is None else ctx.oracle(v, f"mirror-{front}")
            oracle = inner if not front else BlackBox(
                AA.AveragingFront(inner, repeats, T=ctx.base.T, estimator=estimator, grey_levels=grey_levels,
                                  seed=ctx.seed), mode="soft", name=f"averaged {inner.name}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                results = attack.run(oracle, targets, seed=ctx.seed)
            images = torch.cat([r.images for r in results])
            labels = torch.cat([torch.full((len(r.images),), r.target, dtype=torch.long) for r in results])
            m = attack_metrics(images, labels, evaluator, data.train, per_image=True)
            hits = [{"class": c, "n": int((labels == c).sum()), "hits@1": int(m["hit1_all"][labels == c].sum()),
                     "hits@5": int(m["hit5_all"][labels == c].sum())} for c in targets]
            return {"hits": hits, "queries": int(inner.queries)}

        payload, _ = cached("adaptive-mirror", config, compute, name=f"mirror-front-{ctx.name}-{scale}", enabled=cache)
        hits = pd.DataFrame(payload["hits"]).assign(variant=label, attacker=attacker, front=front)
        acc1, low, high = interval(hits, "hits@1", seed=ctx.seed)
        summary.append({"variant": label, "randomness": None if v is None else v.randomness,
                        "k": None if v is None else v.k, "offsets": None if v is None else v.offsets,
                        "attacker": attacker, "front": front, "Acc@1 (%)": acc1, "low": low, "high": high,
                        "Acc@5 (%)": float(per_class_accuracy(hits, "hits@5").mean()), "queries": payload["queries"],
                        "classes": len(targets), "images": int(hits["n"].sum())})
        per_class.append(hits)
    return pd.DataFrame(summary), pd.concat(per_class, ignore_index=True)


def mirror_front_lines(summary: pd.DataFrame, per_class: pd.DataFrame, *, min_images: int = 300) -> list[str]:
    """One generated sentence per variant: Mirror through the averaging attacker against Mirror alone, by the paired
    rule over classes (:func:`.verdicts.compare`), read against Mirror on the undefended target; below
    ``min_images`` reconstructions per row (the book's rule for a verdict) the numbers are given without one."""
    from .verdicts import compare

    def hits(variant, front):
        return per_class[(per_class.variant == variant) & (per_class.front == front)]

    acc = summary.set_index(["variant", "front"])["Acc@1 (%)"]
    acc_none = acc[(UNDEFENDED, False)]
    images = int(summary["images"].min())
    lines = []
    for label in summary.variant[summary.variant != UNDEFENDED].unique():
        alone, averaged = hits(label, False), hits(label, True)
        a, b = acc[(label, False)], acc[(label, True)]
        text = (f"**{label}**: Mirror {a:.1f}% alone, {b:.1f}% through the averaging attacker "
                f"(undefended target {acc_none:.1f}%)")
        if images < min_images:
            text += f"; {images} reconstructions per row, fewer than the {min_images} a verdict needs here"
        else:
            c = compare(alone, averaged)
            word = {"higher": "raises", "lower": "lowers", "inconclusive": "does not change at this scale"}[c.verdict]
            text += f": the averaging attacker {word} Mirror's accuracy ({c.describe()})"
        lines.append(text + ".")
    return lines
