"""Shape and sanity checks of the paper's published facts (ssdlib.paper)."""
import math

import pandas as pd
import pytest

from ssdlib import paper


@pytest.mark.parametrize(
    "fn, keys, attacks",
    [(paper.table1_attacks, ["setting", "attack", "defense"], paper.SOFT_LABEL_ATTACKS),
     (paper.table2_attacks, ["setting", "attack", "defense"], paper.HARD_LABEL_ATTACKS)],
)
def test_attack_tables_cover_every_setting_attack_defense(fn, keys, attacks):
    df = fn()
    assert list(df.columns) == keys + list(paper.ATTACK_METRICS)
    assert len(df) == len(paper.SETTINGS) * len(attacks) * len(paper.DEFENSES)
    assert not df.duplicated(keys).any()
    assert set(df["defense"]) == set(paper.DEFENSES)
    assert set(df["attack"]) == set(attacks)
    acc = df[["acc1", "acc5"]].stack().dropna()
    assert ((acc >= 0) & (acc <= 100)).all()
    both = df.dropna(subset=["acc1", "acc5"])
    assert (both["acc5"] >= both["acc1"]).all()


def test_soft_and_hard_label_attacks_are_disjoint():
    assert not set(paper.SOFT_LABEL_ATTACKS) & set(paper.HARD_LABEL_ATTACKS)


def test_utility_table():
    df = paper.table3_utility()
    assert list(df.columns) == ["setting", "defense", *paper.UTILITY_METRICS]
    assert set(df["setting"]) == set(paper.SETTINGS) and set(df["defense"]) == set(paper.DEFENSES)
    acc = df["test_acc"].dropna()
    assert ((acc >= 0) & (acc <= 100)).all()
    l1 = df[["avg_l1", "max_l1"]].dropna()
    assert ((l1 >= 0) & (l1 <= 2)).all().all()  # L1 distance of two probability vectors is at most 2
    assert (l1["max_l1"] >= l1["avg_l1"]).all()


def test_hyperparameters_and_cost_tables():
    hp = paper.table4_hyperparameters()
    assert list(hp["setting"]) == list(paper.SETTINGS)
    assert (hp[["ssd_T", "ssd_eps"]].dropna() > 0).all().all()
    cost = paper.table5_cost()
    assert (cost["time_overhead"].dropna() >= 0).all()


def test_waterfill_time_table_rows_and_bad_input():
    df = paper.table6_waterfill_time((10, 1000))
    assert list(df["num_classes"]) == [10, 10, 1000, 1000]
    assert (df["batch_size"] == 256).all()
    assert len(paper.table6_waterfill_time()) == 0
    with pytest.raises(ValueError, match="num_classes"):
        paper.table6_waterfill_time((1,))


def test_missing_counts_and_published_records_fill_the_grid(monkeypatch):
    base = paper.table3_utility()
    assert base.attrs["missing"] == int(base[list(paper.UTILITY_METRICS)].isna().sum().sum())
    rec = paper.Record("table3", ("CelebA / IR-152", "SSD"), "test_acc", 87.5, "test record")
    monkeypatch.setattr(paper, "PUBLISHED", paper.PUBLISHED + (rec,))
    df = paper.table3_utility()
    row = df[(df["setting"] == "CelebA / IR-152") & (df["defense"] == "SSD")]
    assert row["test_acc"].item() == 87.5
    assert df.attrs["missing"] == base.attrs["missing"] - (0 if not math.isnan(
        base.loc[row.index, "test_acc"].item()) else 1)
    bad = paper.Record("table3", ("Nowhere", "SSD"), "test_acc", 1.0, "bad")
    monkeypatch.setattr(paper, "PUBLISHED", (bad,))
    with pytest.raises(ValueError, match="does not fit"):
        paper.table3_utility()


def test_published_records_are_in_range():
    for rec in paper.PUBLISHED:
        assert math.isfinite(rec.value) and rec.source


def test_authors_code_facts():
    code = paper.AUTHORS_CODE
    assert code["entropy_unit"] == "nats" and code["entropy_normalized"] is False
    assert code["temperature_applies_to"] == "probabilities"
    assert code["T"] == 0.1 and code["eps"] == 0.5


def test_coverage_counts_every_table():
    cov = paper.coverage()
    assert isinstance(cov, pd.DataFrame) and list(cov["table"]) == ["table1", "table2", "table3", "table4", "table5"]
    assert (cov["missing"] <= cov["cells"]).all()
