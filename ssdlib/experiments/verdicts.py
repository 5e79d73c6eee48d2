"""The statistical rule behind every verdict about an attack row: class-clustered 95 % intervals and a paired
bootstrap over classes.

An attack table's unit of evidence is the class: every row attacks the same classes with the same attack seeds and
keeps the same number of images per class, so two rows are compared class by class. Per class, a row's accuracy is
its hits over all its images (pooled over attack seeds); a row's accuracy is the mean over classes. Its interval
resamples classes with replacement (images of one class are not independent: they share the class's difficulty).
A comparison resamples the per-class *differences* of the classes both rows attacked (paired), and reads the 95 %
percentile interval of the mean difference: "lower" when it lies below zero, "higher" when above, "inconclusive"
otherwise. The tests check that the rule finds a planted difference and keeps its false-alarm rate near 5 % on
identical rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["LEVEL", "BOOTSTRAP", "per_class_accuracy", "interval", "Comparison", "compare", "VERDICTS",
           "CLAIM_VERDICTS", "claim_verdict", "claim_verdicts"]

#: Confidence level of every interval and verdict.
LEVEL = 0.95
#: Bootstrap resamples.
BOOTSTRAP = 4000
#: What :func:`compare` can conclude about row b against row a.
VERDICTS = ("lower", "higher", "inconclusive")


def per_class_accuracy(hits: pd.DataFrame, column: str = "hits@1") -> pd.Series:
    """Accuracy (%) per class of one row: ``hits[column]`` summed over attack seeds over ``hits["n"]`` summed.

    ``hits`` has one record per (class, attack seed) with columns ``class``, ``n`` (images) and ``column``."""
    missing = {"class", "n", column} - set(hits.columns)
    if missing:
        raise ValueError(f"per-class hits need columns class, n and {column}; missing {sorted(missing)}")
    if not len(hits):
        raise ValueError("no per-class hits given")
    grouped = hits.groupby("class")[[column, "n"]].sum()
    if (grouped["n"] <= 0).any():
        raise ValueError("every class needs at least one image")
    return 100.0 * grouped[column] / grouped["n"]


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[index].mean(axis=1)


def interval(hits: pd.DataFrame, column: str = "hits@1", *, n_boot: int = BOOTSTRAP, seed: int = 0,
             level: float = LEVEL) -> tuple[float, float, float]:
    """``(accuracy, low, high)`` in %: the mean over classes and its class-bootstrap percentile interval."""
    acc = per_class_accuracy(hits, column).to_numpy()
    if len(acc) < 2:
        return float(acc.mean()), float("nan"), float("nan")
    means = _bootstrap_means(acc, n_boot, seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(acc.mean()), float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Row b against row a on their common classes: the mean per-class difference b - a (points) and its
    interval, the verdict, and how many classes and images per row the comparison rests on."""

    difference: float
    low: float
    high: float
    verdict: str
    classes: int
    images_a: int
    images_b: int

    def describe(self, precision: int = 1) -> str:
        """E.g. "-3.2 points, 95% CI -5.0 to -1.4, 62 classes"."""
        f = f"{{:+.{precision}f}}"
        return (f"{f.format(self.difference)} points, 95% CI {f.format(self.low)} to {f.format(self.high)}, "
                f"{self.classes} classes")


def compare(a: pd.DataFrame, b: pd.DataFrame, column: str = "hits@1", *, n_boot: int = BOOTSTRAP, seed: int = 0,
            level: float = LEVEL) -> Comparison:
    """Paired bootstrap over the classes both rows attacked: is row ``b`` lower, higher, or neither than ``a``?"""
    acc_a, acc_b = per_class_accuracy(a, column), per_class_accuracy(b, column)
    common = acc_a.index.intersection(acc_b.index)
    if len(common) < 2:
        raise ValueError(f"a paired comparison needs at least 2 classes attacked in both rows, got {len(common)}")
    diff = (acc_b.loc[common] - acc_a.loc[common]).to_numpy(dtype=float)
    means = _bootstrap_means(diff, n_boot, seed)
    tail = 100 * (1 - level) / 2
    low, high = (float(v) for v in np.percentile(means, [tail, 100 - tail]))
    verdict = "lower" if high < 0 else "higher" if low > 0 else "inconclusive"
    n_a = int(a[a["class"].isin(common)]["n"].sum())
    n_b = int(b[b["class"].isin(common)]["n"].sum())
    return Comparison(float(diff.mean()), low, high, verdict, len(common), n_a, n_b)


#: What a claim of the paper can be at this book's scale (the intro's verdict column).
CLAIM_VERDICTS = ("holds", "holds in part", "does not hold at this scale", "inconclusive at this scale",
                  "not testable at this scale")


def claim_verdict(counts: dict) -> str:
    """The verdict on "the defense lowers the attack" from the paired rule's counts over cases (``lower``,
    ``higher``, ``inconclusive``, ``not judged``, ``cases``, as :func:`ssdlib.experiments.attacks.verdict_counts`
    returns): untestable where the attack never beats random prior samples, refuted by any case where it raises
    Acc@1, confirmed only where every judged case lowers it."""
    judged = counts["cases"] - counts.get("not judged", 0)
    if judged <= 0:
        return "not testable at this scale"
    if counts["higher"] > 0:
        return "does not hold at this scale"
    if counts["lower"] == judged:
        return "holds"
    if counts["lower"] > 0:
        return "holds in part"
    return "inconclusive at this scale"


def claim_verdicts(counts_by_row: dict, titles: dict | None = None) -> str:
    """One verdict for several rows (e.g. the SSD variants): the common verdict when they agree, else each row's
    as "title: verdict" joined by semicolons."""
    verdicts = {row: claim_verdict(c) for row, c in counts_by_row.items()}
    if len(set(verdicts.values())) == 1:
        return next(iter(verdicts.values()))
    return "; ".join(f"{(titles or {}).get(row, row)}: {v}" for row, v in verdicts.items())
