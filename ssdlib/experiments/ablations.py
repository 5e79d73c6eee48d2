"""Figure 3 (Section 5.4): SSD's temperature T and distortion bound eps, one at a time, on one target.

* Temperature: SSD with the paper's settings and T over a grid that holds the paper's values, plus "NO" (no
  temperature mechanism: y drawn from f(x) itself, the paper's eq. 11, :class:`UntemperedSSD`), measured by BREP's
  attack accuracy (label-only) and by the test accuracy through the defense.
* Distortion bound: eps over a grid with the adaptive budget eps * H(f(x)) and with a constant budget eps
  (:class:`ConstantBudgetSSD`), measured by Mirror's attack accuracy and the Avg / Max L1 change of the test outputs.

Every point is attacked under the fair protocol of the attack pages (:mod:`.attack_runs`: the same attack
parameters, classes and seeds for every point, each run cached, SSD seeded per run and class), so the point with
the paper's own settings reuses the attack pages' runs. Utility is measured over several SSD seeds.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..defenses import SSD
from ..attacks import build_attack
from ..metrics import utility_metrics
from ..metrics.attack import attack_effort, attack_metrics, prior_samples
from ..scales import budget, check_scale
from ..training import predict_proba
from ..utils import resolve_device
from .attack_runs import METRICS, OracleFactory, attack_runs
from .attacks import PROTOCOL, attack_inputs, attack_prior, oracle_factory
from .evaluators import train_or_load_evaluator
from .settings import setting, ssd_params
from .targets import private_data, ssd_of_setting, train_target
from .verdicts import compare

__all__ = ["NO", "BUDGETS", "GRIDS", "UntemperedSSD", "ConstantBudgetSSD", "temperature_grid", "distortion_grid",
           "point_label", "point_factory", "utility_of_points", "attack_points", "temperature_claims",
           "distortion_claims"]

#: The "no temperature mechanism" point of the T axis.
NO = "NO"
#: The two radii of the distortion ablation: eps * H(f(x)) (the paper's) and eps for every input.
BUDGETS = ("adaptive", "constant")
#: Per scale: the grid of T (``NO`` and the paper's values of every setting are added by :func:`temperature_grid`),
#: of eps (the paper's 1 added), the classes attacked (the first ones), the attack seeds and the SSD seeds of the
#: utility columns. ``cpu`` keeps 10 of 62 classes and two attack seeds so that the whole book builds in its budget.
GRIDS = {
    "smoke": dict(T=[0.3], eps=[0.5, 1.0], classes=2, seeds=[0], ssd_seeds=[0, 1]),
    "cpu": dict(T=[0.03, 0.05, 0.1, 0.3, 1.0], eps=[0.25, 0.5, 1.0, 2.0], classes=10, seeds=[0, 1],
                ssd_seeds=[0, 1, 2, 3, 4]),
    "paper": dict(T=[0.01, 0.03, 0.05, 0.1, 0.3, 1.0, 3.0], eps=[0.1, 0.25, 0.5, 1.0, 1.5, 2.0], classes=100,
                  seeds=[0, 1, 2], ssd_seeds=list(range(10))),
}


class UntemperedSSD(SSD):
    """SSD without the temperature mechanism: y is drawn from f(x) itself (the paper's eq. 11); ``T`` is unused."""

    def sample_labels(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        flat = probs.reshape(-1, probs.shape[-1]).double()
        cdf = flat.cumsum(-1)
        u = self._uniforms(flat.shape[0], inputs, probs).to(cdf.device) * cdf[:, -1]
        labels = torch.searchsorted(cdf, u[:, None]).squeeze(-1).clamp_max(flat.shape[-1] - 1)
        return labels.reshape(probs.shape[:-1])


class ConstantBudgetSSD(SSD):
    """SSD without the adaptive mechanism: the L1 radius is ``eps`` for every input instead of eps * H(f(x))."""

    def radius(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.full(probs.shape[:-1], self.eps, dtype=torch.float64, device=probs.device)


def _paper_values(key: str) -> list:
    """The values of SSD parameter ``key`` in the paper's settings of every setting (both versions' rows)."""
    from .settings import SETTINGS, SSD_VARIANTS

    return sorted({ssd_params(n, v)[key] for n in SETTINGS for v in SSD_VARIANTS})


def temperature_grid(name: str, scale: str, temperatures=None) -> list[dict]:
    """The T points of setting ``name``: ``NO`` first, then the union of ``temperatures`` (default the scale's
    grid) and the paper's values of T, ascending; eps, entropy and q^y as the paper's settings of ``name``."""
    base = ssd_params(name, "ssd")
    values = sorted({*(budget(GRIDS, scale)["T"] if temperatures is None else temperatures),
                     *_paper_values("T")})
    return [{**base, "T": NO}] + [{**base, "T": float(t)} for t in values]


def distortion_grid(name: str, scale: str, epsilons=None, budgets=BUDGETS) -> list[dict]:
    """The eps points of setting ``name``: each budget of ``budgets`` at each eps of ``epsilons`` (default the
    scale's grid) and the paper's eps = 1, ascending; T and the rest as the paper's settings of ``name``."""
    base = ssd_params(name, "ssd")
    unknown = [b for b in budgets if b not in BUDGETS]
    if unknown:
        raise ValueError(f"unknown budgets {unknown}; valid: {', '.join(BUDGETS)}")
    values = sorted({*(budget(GRIDS, scale)["eps"] if epsilons is None else epsilons), base["eps"]})
    return [{**base, "eps": float(e), **({"budget": "constant"} if b == "constant" else {})}
            for b in budgets for e in values]


def point_label(point: dict) -> str:
    """A short label of a point: ``T=0.05``, ``T=NO``, ``eps=0.5 (constant)``."""
    return (f"T={point['T']:g}" if point["T"] != NO else "T=NO") + f", eps={point['eps']:g}" + (
        " (constant)" if point.get("budget") == "constant" else "")


def point_factory(name: str, scale: str, point: dict, *, mode: str, seed: int = 0, root=None, device=None):
    """``(factory, key, params, model, make)``: the :class:`OracleFactory` of SSD at ``point`` behind the
    undefended target, the target's key, the defense's parameters, the target and the seeded defense's builder."""
    model, info = train_target(name, "none", scale, device=device, seed=seed, root=root, progress=False)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    numeric_T = point["T"] if point["T"] != NO else 1.0
    build, params = ssd_of_setting(name, "ssd", model, data.valid, seed=seed, device=device, T=numeric_T,
                                   eps=point["eps"], entropy=point["entropy"], estimator=point["estimator"])
    cls = UntemperedSSD if point["T"] == NO else ConstantBudgetSSD if point.get("budget") == "constant" else None
    if cls is None:
        make = build
    else:
        table = build(0).q_table

        def make(defense_seed):
            return cls(table, T=numeric_T, eps=point["eps"], entropy=point["entropy"],
                       seed=defense_seed).to(device or "cpu")
    return (OracleFactory(model, make, mode=mode, name=f"{name}/ssd {point_label(point)}", seed=seed),
            info["key"], {**params, **point}, model, make)


def utility_of_points(name: str, scale: str, points, *, ssd_seeds=None, seed: int = 0, root=None,
                      device=None) -> pd.DataFrame:
    """Test accuracy (%), Avg L1 and Max L1 of the test outputs through SSD at each point, one row per (point,
    SSD seed)."""
    device = resolve_device(device)
    ssd_seeds = budget(GRIDS, scale)["ssd_seeds"] if ssd_seeds is None else ssd_seeds
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    records, base = [], None
    for point in points:
        _, _, _, model, make = point_factory(name, scale, point, mode="soft", seed=seed, root=root, device=device)
        if base is None:
            base = predict_proba(model, data.test, device=device)
        for s in ssd_seeds:
            defended = make(int(s))(base.to(device)).cpu()
            m = utility_metrics(base, defended, data.test.labels)
            records.append({"setting": name, "point": point_label(point), "T": str(point["T"]), "eps": point["eps"],
                            "budget": point.get("budget", "adaptive"), "ssd_seed": int(s),
                            **{k: m[k] for k in ("test_acc", "avg_l1", "max_l1")}})
    return pd.DataFrame(records)


def _hits(images, labels, evaluator, data, target) -> tuple[dict, pd.DataFrame]:
    """Metrics of labelled reconstructions and their per-class hits (``hits@1``, ``hits@5``, ``n``), as the attack
    pages count them."""
    m = attack_metrics(images, labels, evaluator, data.train, target=target, per_image=True)
    frame = pd.DataFrame({"class": labels.numpy(), "hits@1": m.pop("hit1_all").numpy().astype(int),
                          "hits@5": m.pop("hit5_all").numpy().astype(int)})
    hits = frame.groupby("class", as_index=False).agg(**{"hits@1": ("hits@1", "sum"), "hits@5": ("hits@5", "sum"),
                                                         "n": ("hits@1", "size")})
    keep = {"acc@1": 100 * m["acc@1"], "acc@5": 100 * m["acc@5"], "delta_face": m["delta_face"]}
    if "target_acc@1" in m:
        keep["target_acc@1"] = 100 * m["target_acc@1"]
    return keep, hits


def attack_points(name: str, scale: str, attack: str, points, *, classes: int | None = None, seeds=None,
                  seed: int = 0, root=None, device=None, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``attack`` against SSD at each point, and against the undefended target and the prior-only floor (rows
    ``none`` and ``prior``), under the attack pages' protocol (cached runs): one metrics row per (point, attack
    seed), and the per-class hits (``point``, ``attack_seed``, ``class``, ``hits@1``, ``hits@5``, ``n``)."""
    check_scale(scale)
    device = resolve_device(device)
    grid = budget(GRIDS, scale)
    seeds = grid["seeds"] if seeds is None else seeds
    protocol = budget(PROTOCOL, scale)
    data = private_data(setting(name).dataset, scale, seed=seed, root=root)
    targets = list(range(min(classes or grid["classes"], data.num_classes)))
    evaluator = train_or_load_evaluator(data, seed=seed)
    prior, _ = attack_prior(scale, seed=seed, root=root, device=device, progress=False)
    method = build_attack(attack, prior, scale=scale, top_k=protocol["per_class"],
                          **attack_inputs(attack, scale, seed=seed, root=root, device=device))
    records, per_class = [], []
    none, none_key, none_params = oracle_factory(name, "none", scale, mode=method.mode, device=device, seed=seed,
                                                 root=root)
    rows = [("none", None, none, none_key, "none", none_params)]
    for point in points:
        factory, key, params, _, _ = point_factory(name, scale, point, mode=method.mode, seed=seed, root=root,
                                              device=device)
        rows.append((point_label(point), point, factory, key, "ssd", params))
    for label, point, factory, key, defense, params in rows:
        for s in seeds:
            runs = attack_runs(method, factory, targets, seed=s, target_key=key, prior_key=prior.key, setting=name,
                               defense=defense, defense_params=params, progress=progress)
            images = torch.cat([r.images for r in runs])
            labels = torch.cat([torch.full((len(r.images),), r.target, dtype=torch.long) for r in runs])
            metrics, hits = _hits(images, labels, evaluator, data, factory(s, METRICS))
            ident = {"setting": name, "attack": attack, "point": label,
                     "T": "" if point is None else str(point["T"]), "eps": float("nan") if point is None
                     else point["eps"], "budget": "" if point is None else point.get("budget", "adaptive"),
                     "attack_seed": s}
            effort = attack_effort(runs)
            records.append({**ident, **metrics, "queries_per_class": effort["queries_per_class"],
                            "seconds_per_class": effort["seconds_per_class"]})
            per_class.append(hits.assign(**ident))
    images, labels = prior_samples(prior, targets, protocol["per_class"], seed=seed)
    metrics, hits = _hits(images, labels, evaluator, data, none(seed, METRICS))
    ident = {"setting": name, "attack": attack, "point": "prior", "T": "", "eps": float("nan"), "budget": "",
             "attack_seed": seed}
    records.append({**ident, **metrics})
    per_class.append(hits.assign(**ident))
    return pd.DataFrame(records), pd.concat(per_class, ignore_index=True)


def seed_summary(table: pd.DataFrame, columns, by=("point", "T", "eps", "budget")) -> pd.DataFrame:
    """Mean, least and largest value over seeds of each of ``columns`` per point (the figure's error bars), in
    the order the points first appear."""
    by = [b for b in by if b in table.columns]
    grouped = table.groupby(by, sort=False, dropna=False)
    out = grouped[list(columns)].mean().reset_index()
    for c in columns:
        out[f"{c} min"] = grouped[c].min().to_numpy()
        out[f"{c} max"] = grouped[c].max().to_numpy()
    out["seeds"] = grouped.size().to_numpy()
    return out


def _floor_line(per_class: pd.DataFrame, attack: str) -> tuple[str | None, bool]:
    """Whether the attack beats the prior-only floor against the undefended target (the attack pages' rule)."""
    by = {p: g for p, g in per_class.groupby("point")}
    c = compare(by["prior"], by["none"])
    if c.verdict == "higher":
        return None, True
    return (f"{attack} does not beat random prior samples against the undefended target on these classes "
            f"({c.describe()}), so no attack-accuracy claim can be judged here: a lower accuracy would not be "
            "protection."), False


def _verdict(holds: bool | None) -> str:
    return "not judged" if holds is None else "holds here" if holds else "does not hold here"


def temperature_claims(attack: pd.DataFrame, per_class: pd.DataFrame, utility: pd.DataFrame) -> list[str]:
    """Section 5.4's claims on T, one sentence each, checked on our numbers: robustness grows with T (the lowest
    against the highest T by the paired rule over classes, seeds pooled); a high T costs test accuracy; with no
    temperature mechanism neither the attack accuracy nor the test accuracy is the best of the grid."""
    acc = seed_summary(attack[~attack.point.isin(["none", "prior"])], ["acc@1"]).set_index("T")["acc@1"]
    util = seed_summary(utility, ["test_acc"]).set_index("T")
    numeric = sorted((t for t in acc.index if t != NO), key=float)
    lo, hi = numeric[0], numeric[-1]
    by = {p: g for p, g in per_class.groupby("T")}
    floor, judged = _floor_line(per_class, "BREP")
    lines = [floor] if floor else []
    c = compare(by[lo], by[hi])
    holds = (c.verdict == "lower") if judged else None
    lines.append(f"Robustness grows with T (the paper): BREP's Acc@1 is {acc[lo]:.1f}% at T = {lo} and {acc[hi]:.1f}% "
                 f"at T = {hi} (paired over classes: {c.describe()}, {c.verdict}); the claim {_verdict(holds)}.")
    drop = util.test_acc[lo] - util.test_acc[hi]
    spread = float(utility.groupby("T").test_acc.std(ddof=0).max())
    lines.append(f"A high T costs utility (the paper): test accuracy through SSD is {util.test_acc[lo]:.1f}% at T = "
                 f"{lo} and {util.test_acc[hi]:.1f}% at T = {hi}, a change of {-drop:+.1f} points against an SSD-seed "
                 f"spread of at most {spread:.1f} (standard deviation); the claim "
                 f"{_verdict(drop > max(2 * spread, 0.0))}.")
    best_acc, best_util = min(acc[t] for t in numeric), max(util.test_acc[t] for t in numeric)
    no_acc, no_util = acc[NO], util.test_acc[NO]
    attack_ok = (no_acc > best_acc) if judged else None
    lines.append(f"Without the temperature mechanism (\"NO\", y drawn from f(x)) neither robustness nor utility is "
                 f"the best (the paper): BREP's Acc@1 is {no_acc:.1f}% against the grid's lowest {best_acc:.1f}%, the "
                 f"test accuracy {no_util:.1f}% against the grid's highest {best_util:.1f}%; the attack half "
                 f"{_verdict(attack_ok)}, the utility half {_verdict(no_util < best_util)}.")
    return lines


def distortion_claims(attack: pd.DataFrame, per_class: pd.DataFrame, utility: pd.DataFrame,
                      training_l1: dict[str, float], paper_eps: float) -> list[str]:
    """Section 5.4's claims on eps, one sentence each: robustness grows with eps (adaptive budget, smallest
    against largest eps, paired rule); eps moves Max L1 far more than Avg L1 (Avg L1's growth factor minus one
    under half of Max L1's); without the adaptive budget, Avg L1 reaches the training-time defenses'
    (``training_l1``: their Avg L1 on the same test set) at the paper's eps."""
    ad = attack[attack.budget == "adaptive"]
    acc = seed_summary(ad, ["acc@1"]).set_index("eps")["acc@1"]
    eps = sorted(acc.index)
    lo, hi = eps[0], eps[-1]
    pc = per_class[per_class.budget == "adaptive"]
    by = {e: g for e, g in pc.groupby("eps")}
    floor, judged = _floor_line(per_class, "Mirror")
    lines = [floor] if floor else []
    c = compare(by[lo], by[hi])
    lines.append(f"Robustness grows with eps (the paper): Mirror's Acc@1 is {acc[lo]:.1f}% at eps = {lo:g} and "
                 f"{acc[hi]:.1f}% at eps = {hi:g} (adaptive budget; paired over classes: {c.describe()}, "
                 f"{c.verdict}); the claim {_verdict((c.verdict == 'lower') if judged else None)}.")
    u = seed_summary(utility, ["avg_l1", "max_l1"])
    ua = u[u.budget == "adaptive"].set_index("eps")
    d_avg, d_max = ua.avg_l1[hi] - ua.avg_l1[lo], ua.max_l1[hi] - ua.max_l1[lo]
    r_avg, r_max = ua.avg_l1[hi] / ua.avg_l1[lo], ua.max_l1[hi] / ua.max_l1[lo]
    lines.append(f"Relaxing eps moves Max L1 and leaves Avg L1 almost unchanged (the paper): from eps = {lo:g} to "
                 f"{hi:g}, Max L1 goes from {ua.max_l1[lo]:.3f} to {ua.max_l1[hi]:.3f} (x{r_max:.1f}) and Avg L1 from "
                 f"{ua.avg_l1[lo]:.3f} to {ua.avg_l1[hi]:.3f} (x{r_avg:.1f}): Avg L1 moves by {abs(d_avg):.3f}, "
                 f"{abs(d_avg) / abs(d_max):.0%} of Max L1's change; the claim (Avg L1 growing by less than half of "
                 f"Max L1's factor) {_verdict(r_avg - 1 < 0.5 * (r_max - 1))}.")
    uc = u[u.budget == "constant"].set_index("eps")
    if paper_eps in uc.index and training_l1:
        low, high = min(training_l1.values()), max(training_l1.values())
        const, adapt = uc.avg_l1[paper_eps], ua.avg_l1[paper_eps]
        lines.append(f"Without the adaptive budget Avg L1 rises to the other defenses' level (the paper): at eps = "
                     f"{paper_eps:g}, Avg L1 is {adapt:.3f} with the adaptive budget and {const:.3f} with a constant "
                     f"one, against {low:.3f} to {high:.3f} for the training-time defenses; the claim "
                     f"{_verdict(const >= low > adapt)}.")
    return lines
