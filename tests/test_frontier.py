"""The privacy-utility frontier: points join the attack and utility tables, dominance follows its definition."""
import matplotlib
import numpy as np
import pandas as pd

from ssdlib.experiments import frontier as F

matplotlib.use("Agg")


def _tables():
    rows = [("none", "no defense", 12.0, 80.0, 0.0), ("mid", "MID", 10.0, 70.0, 0.5), ("ls", "LS", 4.0, 81.0, 0.2),
            ("ssd", "SSD", 5.0, 79.0, 0.1), ("ssd_code", "SSD (code)", 9.0, 78.0, 0.05)]
    summary = pd.DataFrame([{"setting": "s", "attack": "mirror", "row": r, "title": t, "acc@1": a,
                             "acc@1 low": a - 2, "acc@1 high": a + 2} for r, t, a, _, _ in rows]
                           + [{"setting": "s", "attack": "brep", "row": "none", "title": "no defense", "acc@1": 3.0,
                               "acc@1 low": 1, "acc@1 high": 5}])
    utility = pd.DataFrame([{"setting": "s", "defense": "ssd" if r.startswith("ssd") else r,
                             "variant": r if r.startswith("ssd") else "", "q_from": "valid" if r.startswith("ssd")
                             else "", "test_acc": acc, "avg_l1": l1} for r, _, _, acc, l1 in rows]
                           + [{"setting": "s", "defense": "ssd", "variant": "ssd", "q_from": "train", "test_acc": 1.0,
                               "avg_l1": 9.0}])
    rng = np.random.default_rng(0)
    hits = []
    for r, _, a, _, _ in rows:  # 40 classes x 5 images at the row's accuracy, MID's and SSD's far apart
        for c in range(40):
            hits.append({"setting": "s", "attack": "mirror", "row": r, "class": c,
                         "hits@1": int(rng.binomial(5, a / 100 * 3)), "n": 5})
    return summary, utility, pd.DataFrame(hits)


def test_strongest_attack_and_points():
    summary, utility, _ = _tables()
    assert F.strongest_attack(summary, "s", ["mirror", "brep"]) == "mirror"
    assert F.strongest_attack(summary, "s", ["lokt"]) is None
    points = F.frontier_points(summary, utility, "s", "mirror")
    assert list(points.row) == ["none", "mid", "ls", "ssd", "ssd_code"]
    assert points.set_index("row").loc["ssd", "test_acc"] == 79.0  # q^y from the validation split, not train


def test_dominance_follows_its_definition():
    summary, utility, hits = _tables()
    points = F.frontier_points(summary, utility, "s", "mirror")
    table = F.dominance(points, hits, rows=["mid", "ls"]).set_index("row")
    assert table.loc["mid", "verdict"] == "dominates"  # more accuracy, less L1, attack clearly lower
    assert table.loc["ls", "verdict"] == "trades off with"  # LS keeps more accuracy
    lines = F.dominance_lines(table.reset_index(), setting_titles={"s": "S"}, attack_titles={"mirror": "Mirror"})
    assert lines == ["S, Mirror: SSD dominates MID; neither dominates nor is dominated by LS (utility traded for "
                     "privacy, or an attack difference the paired rule cannot resolve at this scale)."]


def test_frontier_figure_draws_every_point():
    from ssdlib.reporting.plots import frontier_figure
    summary, utility, _ = _tables()
    points = F.frontier_points(summary, utility, "s", "mirror")
    curve = points[points.row == "ssd"].assign(row="sweep")
    fig = frontier_figure({"mirror": points}, {"mirror": curve}, title="S")
    assert len(fig.axes) == 2 and len(fig.axes[0].texts) == len(points)
