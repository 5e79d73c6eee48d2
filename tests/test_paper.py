"""The paper's transcribed numbers (ssdlib.paper): equal to the source files, structurally sound, sourced."""
import math
import re

import pandas as pd
import pytest

from ssdlib import paper
from ssdlib.utils import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "paper"
needs_shared = pytest.mark.skipif(
    not (SHARED / "ssd-paper-tables.csv").is_file(),
    reason=f"the paper's source data files are not at {SHARED}; the transcription cannot be compared with them")
SOURCES = [("submitted", "ssd-paper-tables.csv", 473), ("iclr2025", "iclr2025-tables.csv", 457)]
KEY = ["table", "setting", "attack", "row", "metric"]

# (accessor, subject, versions having it)
ATTACK_ACCESSORS = [(paper.soft_label_attacks, "soft_label_attacks", paper.VERSIONS),
                    (paper.hard_label_attacks, "hard_label_attacks", paper.VERSIONS),
                    (paper.rlb_attack, "rlb_attack", paper.VERSIONS),
                    (paper.q_estimator_attacks, "q_estimator", ("submitted",)),
                    (paper.high_resolution_attacks, "high_resolution", paper.VERSIONS),
                    (paper.purifier_attacks, "purifier", ("iclr2025",))]
UTILITY_ACCESSORS = [(paper.utility, "utility", paper.VERSIONS),
                     (paper.q_estimator_utility, "q_estimator", ("submitted",)),
                     (paper.high_resolution_utility, "high_resolution", paper.VERSIONS),
                     (paper.purifier_utility, "purifier", ("iclr2025",))]
OTHER_ACCESSORS = [(paper.timing, "timing", paper.VERSIONS), (paper.solver_time, "solver_time", ("submitted",)),
                   (paper.hyperparameter_table, "hyperparameters", paper.VERSIONS)]
ALL_ACCESSORS = ATTACK_ACCESSORS + UTILITY_ACCESSORS + OTHER_ACCESSORS


def _calls(accessors):
    return [pytest.param(fn, subject, v, id=f"{fn.__name__}-{v}") for fn, subject, vs in accessors for v in vs]


# --- (a) every value equals the source files, and every source value is transcribed ---------------------------

@needs_shared
@pytest.mark.parametrize("version, filename, count", SOURCES)
def test_every_value_equals_the_source_csv_and_none_is_missing(version, filename, count):
    src = pd.read_csv(SHARED / filename, dtype=str, keep_default_na=False)
    src["table"] = src["table"].astype(int)
    ours = paper.values(version)
    assert len(src) == count and len(ours) == count
    both = src.merge(ours, on=KEY, how="outer", suffixes=("_src", "_ours"), indicator=True)
    missing = both[both["_merge"] == "left_only"][KEY].values.tolist()
    extra = both[both["_merge"] == "right_only"][KEY].values.tolist()
    assert not missing, f"values of {filename} not transcribed: {missing[:5]}"
    assert not extra, f"transcribed values not in {filename}: {extra[:5]}"
    wrong = both[both["value_src"].astype(float) != both["value_ours"]]
    assert wrong.empty, f"values differ from {filename}: {wrong[KEY + ['value_src', 'value_ours']].values[:5]}"
    wrong_unit = both[both["unit_src"] != both["unit_ours"]]
    assert wrong_unit.empty, f"units differ from {filename}: {wrong_unit[KEY].values[:5]}"


@needs_shared
def test_text_claims_equal_the_source_csv():
    src = pd.read_csv(SHARED / "ssd-paper-text-claims.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(paper.text_claims(), src)


@needs_shared
@pytest.mark.parametrize("version, filename, count", SOURCES)
def test_hyperparameters_equal_the_source_rows(version, filename, count):
    src = pd.read_csv(SHARED / filename, dtype=str, keep_default_na=False)
    labels = {"beta": "mid_beta", "lambda_x": "bido_lambda_x", "lambda_y": "bido_lambda_y", "alpha": "ls_alpha",
              "T": "ssd_T", "eps": "ssd_eps"}
    settings = [*paper.SETTINGS, paper.HIGH_RESOLUTION_SETTINGS[version]]
    for setting in settings:
        rows = src[(src["setting"] == setting) & src["metric"].isin([*labels, "frozen_first_layers"])]
        hp = paper.hyperparameters(setting, version)
        assert len(rows) == 7
        for metric, value in zip(rows["metric"], rows["value"].astype(float)):
            if metric == "frozen_first_layers":
                assert hp["tl_frozen_fraction"] == value / 100
            else:
                assert hp[labels[metric]] == value, (version, setting, metric)


# --- provenance -------------------------------------------------------------------------------------------------

def test_every_value_carries_version_table_subject_and_unit():
    df = paper.values()
    assert len(df) == 473 + 457
    assert df[["version", "table", "subject", "setting", "row", "metric"]].ne("").all().all()
    assert df.groupby(["version", "table"])["subject"].nunique().eq(1).all()
    assert not df.duplicated(["version"] + KEY).any()
    assert set(df["subject"]) == set(paper.SUBJECTS)
    unitless = df[df["unit"] == ""]
    assert set(unitless["metric"]) <= {"beta", "lambda_x", "lambda_y", "alpha", "T", "eps"}
    cat = paper.tables()
    counts = df.groupby(["version", "table"]).size()
    assert [counts[(v, t)] for v, t in zip(cat["version"], cat["table"])] == list(cat["n_values"])


def test_table_numbers_of_each_subject():
    assert {s: paper.table_numbers(s) for s in paper.SUBJECTS} == {
        "soft_label_attacks": {"submitted": (1,), "iclr2025": (1,)},
        "hard_label_attacks": {"submitted": (2,), "iclr2025": (2,)},
        "rlb_attack": {"submitted": (9,), "iclr2025": (6,)},
        "utility": {"submitted": (3,), "iclr2025": (3,)},
        "hyperparameters": {"submitted": (4,), "iclr2025": (5,)},
        "timing": {"submitted": (5,), "iclr2025": (4,)},
        "solver_time": {"submitted": (6,), "iclr2025": ()},
        "q_estimator": {"submitted": (7, 8), "iclr2025": ()},
        "high_resolution": {"submitted": (10, 11), "iclr2025": (8,)},
        "purifier": {"submitted": (), "iclr2025": (7,)},
    }


@pytest.mark.parametrize("fn, subject, version", _calls(ALL_ACCESSORS))
def test_accessors_name_their_source_tables(fn, subject, version):
    df = fn(version)
    assert len(df) and (df["version"] == version).all()
    tables = set(paper.table_numbers(subject)[version])
    if subject == "hyperparameters":
        tables |= set(paper.table_numbers("high_resolution")[version])
    assert set(df["table"]) <= tables
    assert df.attrs["source"] and version in df.attrs["source"]
    metrics = [c for c in df.columns if c in df.attrs["units"]]
    assert metrics and df[metrics].notna().any().all()


@pytest.mark.parametrize("fn, version", [(paper.solver_time, "iclr2025"), (paper.q_estimator_attacks, "iclr2025"),
                                         (paper.q_estimator_utility, "iclr2025"),
                                         (paper.purifier_attacks, "submitted"), (paper.purifier_utility, "submitted")])
def test_a_subject_missing_from_a_version_is_a_clear_error(fn, version):
    with pytest.raises(ValueError, match=f"the {version} version of the paper has no"):
        fn(version)


def test_bad_version_and_table_are_clear_errors():
    with pytest.raises(ValueError, match="unknown paper version"):
        paper.utility("final")
    with pytest.raises(ValueError, match="give version="):
        paper.values(table=3)
    with pytest.raises(ValueError, match="has no Table 9"):
        paper.values("iclr2025", table=9)
    with pytest.raises(ValueError, match="unknown subject"):
        paper.values(subject="cost")


# --- (b) structure ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", paper.VERSIONS)
@pytest.mark.parametrize("fn, attacks", [(paper.soft_label_attacks, ("Mirror", "C2F")),
                                         (paper.hard_label_attacks, ("BREP", "LOKT"))])
def test_main_attack_tables_are_complete_grids(fn, attacks, version):
    df = fn(version)
    grid = [(s, a, d) for s in paper.SETTINGS for a in attacks for d in paper.DEFENSES]
    assert list(map(tuple, df[["setting", "attack", "defense"]].values)) == grid
    assert df[list(paper.ATTACK_METRICS)].notna().all().all()


@pytest.mark.parametrize("version", paper.VERSIONS)
def test_rlb_and_high_resolution_cover_every_defense_once(version):
    for fn in (paper.rlb_attack, paper.high_resolution_attacks, paper.high_resolution_utility):
        df = fn(version)
        assert list(df["defense"]) == list(paper.DEFENSES) and df["setting"].nunique() == 1
    assert set(paper.rlb_attack(version)["setting"]) == {"IR-152/CelebA"}
    assert set(paper.high_resolution_attacks(version)["setting"]) == {paper.HIGH_RESOLUTION_SETTINGS[version]}


@pytest.mark.parametrize("fn, subject, version", _calls(ATTACK_ACCESSORS))
def test_attack_metrics_are_in_range(fn, subject, version):
    df = fn(version)
    assert df[list(paper.ATTACK_METRICS)].notna().all().all()
    assert (df["acc5"] >= df["acc1"]).all(), df[df["acc5"] < df["acc1"]]
    assert df["acc1"].between(0, 100).all() and df["acc5"].between(0, 100).all()
    assert (df[["delta_eval", "delta_face"]] > 0).all().all()


@pytest.mark.parametrize("fn, subject, version", _calls(UTILITY_ACCESSORS))
def test_utility_metrics_are_in_range(fn, subject, version):
    df = fn(version)
    assert df["acc"].between(0, 100).all()
    l1 = df[["avg_l1", "max_l1"]]
    assert pd.concat([l1["avg_l1"], l1["max_l1"]]).dropna().between(0, 2).all()  # an L1 distance of two
    # probability vectors is at most 2
    both = l1.dropna()
    assert (both["max_l1"] >= both["avg_l1"]).all()
    assert df["max_l1"].isna().all() == (version == "iclr2025")  # the final version reports no Max L1
    if "defense" in df:
        assert (df.loc[df["defense"] == "none", "avg_l1"] == 0).all()


def test_ssd_max_l1_is_within_its_bound_in_the_submitted_version():
    """With normalized entropy <= 1 the budget eps * H is at most eps (Table 4: eps = 1): Table 3's Max L1."""
    util = paper.utility("submitted")
    ssd = util[util["defense"] == "ssd"]
    for setting, max_l1 in zip(ssd["setting"], ssd["max_l1"]):
        assert max_l1 <= paper.hyperparameters(setting)["ssd_eps"]
    others = util[~util["defense"].isin(["none", "ssd"])]
    assert (others["max_l1"] > ssd["max_l1"].max()).all()


@pytest.mark.parametrize("version", paper.VERSIONS)
def test_timing_increase_is_the_ratio_truncated_to_one_decimal(version):
    df = paper.timing(version)
    assert list(df["setting"]) == list(paper.SETTINGS)
    ratio = 100 * (df["seconds_with"] / df["seconds_without"] - 1)
    # the printed percentages are the ratios truncated, not rounded (3.17 -> 3.1, 2.60 -> 2.5, 7.43 -> 7.4)
    assert list(df["increase_percent"]) == [math.floor(r * 10) / 10 for r in ratio]
    assert ((ratio - df["increase_percent"]).abs() < 0.1).all()
    # ... while the claims file documents the ratios recomputed and rounded
    note = paper.text_claims().set_index("claim").loc["time increase 2.5% to 7.4%", "note"]
    documented = [float(x) for x in re.findall(r"(\d+\.\d)%", note)]
    assert documented == [3.2, 2.6, 7.4] == [round(r, 1) for r in ratio]
    # Appendix D: "about 0.5 s" for 100 x 512 predictions; the claims file lists the differences
    assert [round(d, 2) for d in df["seconds_with"] - df["seconds_without"]] == [0.59, 0.46, 0.42]


def test_timing_is_the_same_in_both_versions():
    cols = ["setting", "seconds_without", "seconds_with", "increase_percent"]
    pd.testing.assert_frame_equal(paper.timing("submitted")[cols], paper.timing("iclr2025")[cols])


def test_solver_time_grows_with_the_number_of_classes():
    df = paper.solver_time()
    assert list(df["num_classes"]) == [10 ** k for k in range(1, 7)]
    assert df["milliseconds"].is_monotonic_increasing
    assert (df["batch_size"] == 256).all() and (df["device"] == "GPU").all()
    assert df.attrs["units"] == {"milliseconds": "ms"}
    assert df["milliseconds"].iloc[-1] == 1301  # Appendix D's "1.3 s" for |Y| = 10^6


def test_q_estimator_valid_rows_repeat_the_main_tables_but_one():
    """Table 7/8's D_valid rows should be Table 1-3's SSD rows on IR-152/CelebA; only Mirror Acc@5 differs."""
    q = paper.q_estimator_attacks()
    main = pd.concat([paper.soft_label_attacks(), paper.hard_label_attacks()])
    main = main[(main["setting"] == "IR-152/CelebA") & (main["defense"] == "ssd")].set_index("attack")
    valid = q[q["q_from"] == "valid"].set_index("attack")
    diff = {(a, m): (valid.loc[a, m], main.loc[a, m]) for a in valid.index for m in paper.ATTACK_METRICS
            if valid.loc[a, m] != main.loc[a, m]}
    assert diff == {("Mirror", "acc5"): (2.9, 3.0)}
    u = paper.q_estimator_utility().set_index("q_from")
    ssd = paper.utility().set_index(["setting", "defense"]).loc[("IR-152/CelebA", "ssd")]
    assert [u.loc["valid", m] for m in paper.UTILITY_METRICS] == [ssd[m] for m in paper.UTILITY_METRICS]


def test_hyperparameter_tables_hold_one_row_per_setting():
    for version in paper.VERSIONS:
        df = paper.hyperparameter_table(version)
        assert list(df["setting"]) == [*paper.SETTINGS, paper.HIGH_RESOLUTION_SETTINGS[version]]
        assert list(df.columns) == ["version", "table", "setting", *paper.HYPERPARAMETER_KEYS]
        assert df[list(paper.HYPERPARAMETER_KEYS)].notna().all().all()


# --- (c) label mappings ----------------------------------------------------------------------------------------

def test_setting_names_round_trip():
    assert paper.SETTING_FROM_PAPER == {"IR-152/CelebA": "celeba_ir152", "IR-152/FaceScrub": "lfw_ir152",
                                        "VGG-16/FaceScrub": "lfw_vgg16"}
    for label in paper.SETTINGS:
        assert paper.paper_setting(paper.project_setting(label)) == label
    for name in paper.PAPER_SETTING:
        assert paper.project_setting(paper.paper_setting(name)) == name
        assert name in paper.SETTING_TITLES
    with pytest.raises(ValueError, match="no project counterpart"):
        paper.project_setting(paper.HIGH_RESOLUTION_SETTINGS["submitted"])
    with pytest.raises(ValueError, match="unknown setting"):
        paper.paper_setting("FaceScrub / IR-152")


def test_defense_names_round_trip():
    assert paper.DEFENSE_FROM_PAPER == {"No Def.": "none", "No Defense": "none", "MID": "mid", "BiDO": "bido",
                                        "LS": "ls", "TL": "tl", "Ours": "ssd", "SSD (ours)": "ssd",
                                        "Purifier": "purifier"}
    for label, name in paper.DEFENSE_FROM_PAPER.items():
        assert paper.project_defense(label) == name
        assert paper.project_defense(paper.paper_defense(name)) == name
        assert paper.DEFENSE_FROM_PAPER[paper.paper_defense(name)] == name
        assert name in paper.DEFENSE_TITLES
    with pytest.raises(ValueError, match="unknown defense"):
        paper.project_defense("NoDef")
    with pytest.raises(ValueError, match="unknown defense"):
        paper.paper_defense("SSD")


def test_every_defense_row_of_the_tables_has_a_canonical_name():
    df = paper.values()
    non_defense = {"Time without defense", "Time with our defense", "Percent of increased time",
                   "D_valid", "D_train"} | {f"|Y|={10 ** k}" for k in range(1, 7)}
    assert set(df.loc[df["defense"].isna(), "row"]) == non_defense
    assert set(df["defense"].dropna()) == set(paper.DEFENSES) | {"purifier"}
    main = df[df["subject"].isin(["soft_label_attacks", "hard_label_attacks", "utility", "timing",
                                  "hyperparameters", "rlb_attack", "q_estimator", "purifier"])]
    assert set(main["setting"]) == set(paper.SETTINGS)


# --- (d) hyper-parameters, pinned after checking them against the source files ----------------------------------

HP = {  # checked against ssd-paper-tables.csv (Tables 4, 11) and iclr2025-tables.csv (Tables 5, 8)
    ("submitted", "IR-152/CelebA"): (0.005, 0.001, 0.01, -0.05, 0.5, 0.03, 1.0),
    ("submitted", "IR-152/FaceScrub"): (0.01, 0.01, 0.1, -0.1, 0.5, 0.05, 1.0),
    ("submitted", "VGG-16/FaceScrub"): (0.02, 0.002, 0.02, -0.1, 0.5, 0.3, 1.0),
    ("submitted", "ResNet-152/FaceScrub 224px (high-res)"): (0.005, 0.15, 1.5, -0.01, 0.7, 1.0, 20.0),
    ("iclr2025", "IR-152/CelebA"): (0.005, 0.0005, 0.005, -0.1, 0.5, 0.1, 0.35),
    ("iclr2025", "IR-152/FaceScrub"): (0.02, 0.005, 0.05, -0.05, 0.5, 0.1, 0.5),
    ("iclr2025", "VGG-16/FaceScrub"): (0.015, 0.0005, 0.005, -0.05, 0.5, 0.1, 0.8),
    ("iclr2025", "IR-152/CelebA 224px (high-res)"): (0.005, 0.05, 0.5, -0.005, 0.8, 0.1, 1.5),
}
PROTOCOL = {"submitted": ("normalized", "single"), "iclr2025": ("nats", "valid_mean")}


@pytest.mark.parametrize("version, setting", list(HP))
def test_hyperparameters_are_the_papers(version, setting):
    expected = dict(zip(paper.HYPERPARAMETER_KEYS, HP[(version, setting)] + PROTOCOL[version]))
    got = paper.hyperparameters(setting, version)
    assert got == expected and list(got) == list(paper.HYPERPARAMETER_KEYS)
    assert set(got) == {"mid_beta", "bido_lambda_x", "bido_lambda_y", "ls_alpha", "tl_frozen_fraction", "ssd_T",
                        "ssd_eps", "ssd_entropy", "ssd_q_estimator"}
    if setting in paper.SETTING_FROM_PAPER:
        assert paper.hyperparameters(paper.project_setting(setting), version) == got


def test_hyperparameters_default_to_the_submitted_version_and_reject_unknown_settings():
    assert paper.hyperparameters("celeba_ir152") == paper.hyperparameters("IR-152/CelebA", "submitted")
    with pytest.raises(ValueError, match="no hyper-parameters"):
        paper.hyperparameters(paper.HIGH_RESOLUTION_SETTINGS["iclr2025"], "submitted")
    with pytest.raises(ValueError, match="unknown setting"):
        paper.hyperparameters("cifar10")


# --- released code, prose numbers -------------------------------------------------------------------------------

def test_authors_code_facts_are_sourced_and_match_the_final_version():
    code = paper.AUTHORS_CODE
    assert code["T"] == 0.1 and code["eps_default"] == 0.5
    assert code["eps"] == {"IR-152/CelebA": 0.35, "IR-152/FaceScrub": 0.5, "VGG-16/FaceScrub": 0.8}
    assert code["entropy_unit"] == "nats" and code["entropy_normalized"] is False
    assert code["temperature_applies_to"] == "probabilities" and code["returns_q_inside_budget"] is True
    assert set(paper.AUTHORS_CODE_SOURCES) == set(code) and all(paper.AUTHORS_CODE_SOURCES.values())
    for setting in paper.SETTINGS:
        assert paper.hyperparameters(setting, "iclr2025")["ssd_T"] == code["T"]
        assert paper.hyperparameters(setting, "iclr2025")["ssd_entropy"] == code["entropy_unit"]
    assert set(paper.PAPER["sources"]) and all(paper.PAPER["sources"].values())


def test_section53_cmi_matches_the_claims_and_drops_with_ssd():
    cmi = paper.section53_cmi()
    assert set(cmi["setting"]) == {"VGG-16/FaceScrub"} and cmi["unit"].isna().all()
    assert list(cmi["cmi"]) == [0.21, 0.14, 4.02, 1.96] and list(cmi["defense"]) == ["none", "ssd"] * 2
    claims = paper.text_claims()
    stated = [float(v) for v in claims.loc[claims["section"] == "5.3", "value_in_text"]]
    assert stated == list(cmi["cmi"])
    for _, g in cmi.groupby("samples"):
        assert g.set_index("defense").loc["ssd", "cmi"] < g.set_index("defense").loc["none", "cmi"]


def test_text_disagreements_are_real_against_the_tables():
    dis = paper.text_disagreements()
    assert list(dis["value_in_text"]) == ["52.3", "0.111", "0.25", "82.9", "1.7", "0.2-0.5",
                                          "Mirror 1.2/2.9/2527/1.56"]
    assert set(paper.text_claims()["consistent"]) == {"yes", "no", "partly", "n/a"}
    soft = paper.soft_label_attacks().set_index(["setting", "attack", "defense"])
    hard = paper.hard_label_attacks().set_index(["setting", "attack", "defense"])
    assert soft.loc[("IR-152/FaceScrub", "Mirror", "none"), "acc1"] == 52.4  # text: 52.3
    assert soft.loc[("IR-152/FaceScrub", "Mirror", "ssd"), "acc1"] == 19.4  # text agrees
    assert hard.loc[("IR-152/FaceScrub", "LOKT", "none"), "acc1"] == 83.0  # text: 82.9
    assert hard.loc[("IR-152/FaceScrub", "LOKT", "ssd"), "acc1"] == 1.8  # text: 1.7
    c2f = soft.xs("C2F", level="attack").loc["VGG-16/FaceScrub", "acc1"]
    assert round(c2f["ssd"] / c2f["none"], 2) == 0.37 and round(c2f["ssd"] / c2f["tl"], 2) == 0.85  # text: 1/9, 1/4
    util = paper.utility()
    ratios = [s / o for setting, g in util.groupby("setting") for s in g.loc[g["defense"] == "ssd", "avg_l1"]
              for o in g.loc[~g["defense"].isin(["none", "ssd"]), "avg_l1"]]
    assert round(min(ratios), 2) == 0.10 and round(max(ratios), 2) == 0.43  # text: 1/5 to 1/2
