"""The privacy-utility frontier (beyond the paper): per setting, the strongest soft-label and the strongest label-only
attack's accuracy against each defense's test accuracy and Avg L1 change, one point per defense, and whether SSD
dominates each training-time defense.

SSD *dominates* a defense when it keeps at least its utility (test accuracy not below, Avg L1 not above, compared
as displayed) and the attack recovers less from it by the paired rule over classes (:mod:`.verdicts`); it is
*dominated* when the defense has at least SSD's utility and the attack recovers less from the defense; otherwise
the two trade utility for privacy (or the attack cannot tell them apart at this scale). The attack rows and the
utility rows come from the attack pages' and the utility chapter's cached runs.
"""
from __future__ import annotations

import pandas as pd

from .verdicts import compare

__all__ = ["UTILITY_ROWS", "strongest_attack", "frontier_points", "dominance", "dominance_lines", "sweep_curve"]

#: How a row of the attack tables maps to a row of the utility table: (defense, SSD variant).
UTILITY_ROWS = {"none": ("none", ""), "mid": ("mid", ""), "bido": ("bido", ""), "ls": ("ls", ""), "tl": ("tl", ""),
                "ssd": ("ssd", "ssd"), "ssd_code": ("ssd", "ssd_code")}


def strongest_attack(summary: pd.DataFrame, setting: str, attacks) -> str | None:
    """Of ``attacks`` run on ``setting``, the one with the highest undefended Acc@1 (None when none was run)."""
    part = summary[(summary.setting == setting) & (summary.row == "none") & summary.attack.isin(list(attacks))]
    if not len(part):
        return None
    return str(part.sort_values("acc@1", ascending=False).attack.iloc[0])


def frontier_points(summary: pd.DataFrame, utility: pd.DataFrame, setting: str, attack: str) -> pd.DataFrame:
    """One row per defense row of ``attack`` on ``setting`` that the utility table also holds: its Acc@1 and 95 %
    interval, and its test accuracy and Avg L1 (q^y from the validation split for SSD rows)."""
    records = []
    util = utility[utility.setting == setting]
    for r in summary[(summary.setting == setting) & (summary.attack == attack)].to_dict("records"):
        if r["row"] not in UTILITY_ROWS:
            continue
        defense, variant = UTILITY_ROWS[r["row"]]
        u = util[(util.defense == defense) & (util.variant.fillna("") == variant)]
        if variant and "q_from" in u:
            u = u[u.q_from == "valid"]
        if not len(u):
            continue
        records.append({"setting": setting, "attack": attack, "row": r["row"], "title": r["title"],
                        **{k: float(r[k]) for k in ("acc@1", "acc@1 low", "acc@1 high")},
                        "test_acc": float(u.test_acc.iloc[0]), "avg_l1": float(u.avg_l1.iloc[0])})
    return pd.DataFrame(records)


def dominance(points: pd.DataFrame, per_class: pd.DataFrame, *, reference: str = "ssd", rows=None) -> pd.DataFrame:
    """``reference`` against every other row of ``points`` (one setting and attack): utility as displayed (test
    accuracy to 0.1 point, Avg L1 to 0.001), privacy by the paired rule on the attack's per-class hits."""
    ref = points[points.row == reference]
    if not len(ref):
        raise ValueError(f"no row {reference!r} in the frontier points")
    ref = ref.iloc[0]
    setting, attack = ref.setting, ref.attack
    hits = per_class[(per_class.setting == setting) & (per_class.attack == attack)]
    records = []
    for p in points.itertuples():
        if p.row == reference or (rows is not None and p.row not in rows):
            continue
        ssd_utility = (round(ref.test_acc, 1) >= round(p.test_acc, 1)) and (round(ref.avg_l1, 3) <= round(p.avg_l1, 3))
        other_utility = (round(p.test_acc, 1) >= round(ref.test_acc, 1)) and (round(p.avg_l1, 3) <= round(ref.avg_l1, 3))
        c = compare(hits[hits.row == p.row], hits[hits.row == reference])  # reference minus row
        if ssd_utility and c.verdict == "lower":
            verdict = "dominates"
        elif other_utility and c.verdict == "higher":
            verdict = "is dominated by"
        else:
            verdict = "trades off with"
        records.append({"setting": setting, "attack": attack, "row": p.row, "title": p.title, "verdict": verdict,
                        "utility at least": ssd_utility, "attack difference": c.difference, "low": c.low,
                        "high": c.high, "attack verdict": c.verdict})
    return pd.DataFrame(records)


def dominance_lines(table: pd.DataFrame, *, setting_titles=None, attack_titles=None, reference_title="SSD") -> list[str]:
    """One sentence per (setting, attack): which rows SSD dominates, which dominate it, which trade off."""
    lines = []
    for (s, a), part in table.groupby(["setting", "attack"], sort=False):
        groups = {v: ", ".join(part[part.verdict == v].title) for v in ("dominates", "is dominated by",
                                                                        "trades off with")}
        said = [f"dominates {groups['dominates']}" if groups["dominates"] else "dominates none of the defenses compared",
                f"is dominated by {groups['is dominated by']}" if groups["is dominated by"] else "",
                f"neither dominates nor is dominated by {groups['trades off with']} (utility traded for privacy, "
                "or an attack difference the paired rule cannot resolve at this scale)"
                if groups["trades off with"] else ""]
        lines.append(f"{(setting_titles or {}).get(s, s)}, {(attack_titles or {}).get(a, a)}: {reference_title} "
                     + "; ".join(x for x in said if x) + ".")
    return lines


def sweep_curve(attack: pd.DataFrame, per_class: pd.DataFrame, utility: pd.DataFrame) -> pd.DataFrame:
    """An SSD parameter sweep as a frontier curve: per point (in the sweep's order), Acc@1 and its 95 % interval
    over classes (attack seeds pooled), and the mean test accuracy and Avg L1 over SSD seeds. ``attack`` and
    ``per_class`` as :func:`.ablations.attack_points` returns them, ``utility`` as :func:`.ablations.utility_of_points`."""
    from .verdicts import interval

    util = utility.groupby("point", sort=False)[["test_acc", "avg_l1"]].mean()
    records = []
    for point in dict.fromkeys(attack.point):
        if point not in util.index:
            continue
        acc, low, high = interval(per_class[per_class.point == point], "hits@1")
        records.append({"row": point, "title": point, "acc@1": acc, "acc@1 low": low, "acc@1 high": high,
                        "test_acc": float(util.loc[point, "test_acc"]), "avg_l1": float(util.loc[point, "avg_l1"])})
    return pd.DataFrame(records)
