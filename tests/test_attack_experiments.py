"""The attack tables' bookkeeping: seed means and spreads, ratios to the undefended row, the paper's columns."""
import math

import pandas as pd
import pytest

from ssdlib.experiments import attacks as A


def runs():
    rows = []
    for row, accs in (("none", [40.0, 30.0]), ("ssd", [10.0, 14.0]), ("mid", [25.0]), ("prior", [2.0])):
        for seed, acc in enumerate(accs):
            rows.append({"setting": "lfw_ir152", "attack": "mirror", "row": row, "title": row, "attack_seed": seed,
                         "acc@1": acc, "acc@5": acc + 10, "delta_eval": 2.0 if row == "none" else 3.0,
                         "delta_face": 0.5 if row == "none" else 0.6, "target_acc@1": 90.0,
                         "queries_per_class": 100.0, "seconds_per_class": 1.0})
    return pd.DataFrame(rows)


def test_summary_means_spreads_and_ratios():
    s = A.summarize(runs()).set_index("row")
    assert s.loc["none", "acc@1"] == 35.0 and s.loc["none", "acc@1 spread"] == 10.0 and s.loc["none", "seeds"] == 2
    assert s.loc["ssd", "acc@1"] == 12.0 and math.isnan(s.loc["mid", "acc@1 spread"])
    assert s.loc["none", "delta_face ratio"] == 1.0 and s.loc["ssd", "delta_face ratio"] == pytest.approx(1.2)
    assert s.loc["ssd", "delta_eval ratio"] == pytest.approx(1.5)


def test_paper_columns_match_each_ssd_row_to_its_version():
    s = A.with_paper(A.summarize(runs())).set_index("row")
    # the paper's Table 1, IR-152/FaceScrub (for which LFW / IR-152 stands in), Mirror
    assert s.loc["none", "paper acc@1 (submitted)"] == 52.4
    assert s.loc["ssd", "paper acc@1 (submitted)"] == 19.4
    assert math.isnan(s.loc["ssd", "paper acc@1 (ICLR 2025)"])  # the final version's SSD row is the code's variant
    assert math.isnan(s.loc["prior", "paper acc@1 (submitted)"])


def test_rows_are_named_and_checked():
    assert A.ROWS == ("none", "mid", "bido", "ls", "tl", "ssd", "ssd_code")
    assert A.row_title("ssd_code") == "SSD (authors' code)" and A.row_title("tl") == "TL"
    with pytest.raises(ValueError, match="unknown row"):
        A.oracle_factory("lfw_ir152", "dp", "smoke")


def test_larger_budgets_only_grow_the_budget():
    from ssdlib.attacks import ATTACKS
    for name, (description, larger) in A.LARGER_BUDGETS.items():
        params = ATTACKS[name].BUDGETS["cpu"] | ATTACKS[name].DEFAULTS
        grown = larger(params)
        assert description
        assert grown and set(grown) <= set(params)  # only existing parameters change
        for key, value in grown.items():  # more generations, or a later (or no) early stop
            assert value > params[key], (name, key)
    with pytest.raises(ValueError, match="no larger budget"):
        A.budget_check("lfw_ir152", "smoke", "brep")
