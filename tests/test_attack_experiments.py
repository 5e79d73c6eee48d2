"""The attack tables: the verdict rule (intervals, paired bootstrap), seed means and spreads, the paper's columns,
the white-box ceiling, and attack_table end to end on a tiny synthetic setting."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ssdlib.experiments import attacks as A
from ssdlib.experiments import verdicts as V
from ssdlib.experiments.attack_runs import OracleFactory
from ssdlib.experiments.ceiling import max_margin_loss, white_box_latents
from test_attacks import C, D, ToyGenerator, ToyTarget
from ssdlib.priors import Prior


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
    from ssdlib import paper
    s = A.with_paper(A.summarize(runs())).set_index("row")
    t = paper.soft_label_attacks("submitted")
    t = t[(t.setting.map(paper.SETTING_FROM_PAPER) == "lfw_ir152") & (t.attack.str.lower() == "mirror")]
    assert s.loc["none", "paper acc@1 (submitted)"] == t[t.defense == "none"].acc1.iloc[0]
    assert s.loc["ssd", "paper acc@1 (submitted)"] == t[t.defense == "ssd"].acc1.iloc[0]
    assert math.isnan(s.loc["ssd", "paper acc@1 (ICLR 2025)"])  # the final version's SSD row is the code's variant
    assert math.isnan(s.loc["prior", "paper acc@1 (submitted)"])


def test_rows_cover_every_defense_and_variant_once():
    from ssdlib.defenses import TRAINING_DEFENSES
    from ssdlib.experiments.settings import SSD_VARIANTS
    extra = {A.CALIBRATED, A.TRAIN_Q}  # beyond Table 1: the calibrated SSD, and q^y from the train split (Table 7)
    assert set(A.ROWS) == set(TRAINING_DEFENSES) | set(SSD_VARIANTS) | extra and len(set(A.ROWS)) == len(A.ROWS)
    assert set(A.SSD_ROWS) == set(SSD_VARIANTS) | extra
    titles = [A.row_title(r) for r in (*A.ROWS, *A.REFERENCE_ROWS)]
    assert len(set(titles)) == len(titles)
    with pytest.raises(ValueError, match="unknown row"):
        A.oracle_factory("lfw_ir152", "dp", "smoke")


def test_variants_change_only_existing_parameters():
    from ssdlib.attacks import ATTACKS
    for name, variants in A.VARIANTS.items():
        params = ATTACKS[name].EFFORT["cpu"] | ATTACKS[name].DEFAULTS
        for label, change in variants.items():
            changed = change(params)
            assert changed and set(changed) <= set(params), (name, label)
            assert any(changed[k] != params[k] for k in changed), (name, label)
    with pytest.raises(ValueError, match="no variants"):
        A.attack_variants("lfw_ir152", "smoke", "no-such-attack")


# --- the verdict rule ---------------------------------------------------------------------------------------
def simulated(rate: float, classes: int = 60, per_class: int = 5, seeds=(0,), rng=None, difficulty=None):
    """Per-class hits of a row whose class c is recovered with probability rate * difficulty[c]."""
    rng = rng or np.random.default_rng(0)
    difficulty = np.ones(classes) if difficulty is None else difficulty
    rows = []
    for s in seeds:
        for c in range(classes):
            rows.append({"class": c, "attack_seed": s, "n": per_class,
                         "hits@1": int(rng.binomial(per_class, min(1.0, rate * difficulty[c])))})
    return pd.DataFrame(rows)


def test_interval_covers_the_rate_and_shrinks_with_images():
    rng = np.random.default_rng(1)
    acc, low, high = V.interval(simulated(0.2, classes=62, rng=rng))
    assert low < acc < high and low < 20.0 < high
    wide = V.interval(simulated(0.2, classes=20, rng=rng))
    assert (wide[2] - wide[1]) > (high - low)
    assert (high - low) < 2 * 7.5  # 310 images around 20 %: about +-4.5 points


def test_paired_rule_detects_a_planted_difference():
    rng = np.random.default_rng(2)
    difficulty = rng.uniform(0.2, 1.8, size=62)  # classes differ in difficulty; pairing removes that
    a = simulated(0.25, classes=62, rng=rng, difficulty=difficulty, seeds=(0, 1))
    b = simulated(0.10, classes=62, rng=rng, difficulty=difficulty, seeds=(0, 1))
    c = V.compare(a, b)
    assert c.verdict == "lower" and c.high < 0 and c.classes == 62 and c.images_a == c.images_b == 620
    assert V.compare(b, a).verdict == "higher"


def test_paired_rule_rarely_flags_identical_rows():
    rng = np.random.default_rng(3)
    flagged = 0
    trials = 200
    for _ in range(trials):
        difficulty = rng.uniform(0.2, 1.8, size=40)
        a = simulated(0.2, classes=40, rng=rng, difficulty=difficulty)
        b = simulated(0.2, classes=40, rng=rng, difficulty=difficulty)
        flagged += V.compare(a, b, n_boot=500).verdict != "inconclusive"
    assert flagged / trials < 0.10  # the nominal false-alarm rate is 5 %


def test_rule_refuses_too_little_evidence():
    with pytest.raises(ValueError, match="at least 2 classes"):
        V.compare(simulated(0.2, classes=1), simulated(0.2, classes=1))
    with pytest.raises(ValueError, match="columns"):
        V.interval(pd.DataFrame({"class": [0]}))


# --- the white-box ceiling ------------------------------------------------------------------------------------
def test_max_margin_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert torch.equal(max_margin_loss(logits, torch.tensor([0, 2])), torch.tensor([-1.0, 4.0]))


@pytest.fixture
def toy_prior():
    return Prior(ToyGenerator(), D, name="toy", key="toy-prior")


def test_white_box_ceiling_beats_random_prior_samples(toy_prior, tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    model = ToyTarget()
    classes = [0, 2, 4]
    z, labels = white_box_latents(model, toy_prior, classes, "smoke", target_key="toy", steps=30, starts=4)
    assert z.shape == (12, D) and labels.tolist() == [c for c in classes for _ in range(4)]
    start = toy_prior.clip(toy_prior.sample(12, torch.Generator().manual_seed(0)), 2.0)  # where it started
    with torch.no_grad():
        hit = (model(toy_prior.decode(z)).argmax(1) == labels).float().mean()
        random = (model(toy_prior.decode(start)).argmax(1) == labels).float().mean()
        before = max_margin_loss(model(toy_prior.decode(start)), labels)
        after = max_margin_loss(model(toy_prior.decode(z)), labels)
    assert hit >= random + 0.4 and (after < before).float().mean() >= 0.9
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # the model is left as it was
    lo, hi = toy_prior.bounds(2.0)
    assert torch.all(z >= lo - 1e-6) and torch.all(z <= hi + 1e-6)


# --- attack_table end to end -----------------------------------------------------------------------------------
class FakeEmbedder:
    """Flattened pixels as the "face embedding" (so the toy target's own layer can act as the evaluator)."""

    def embed(self, images):
        return images.flatten(1).float()

    def embed_faceset(self, faceset):
        return faceset.images


class FakeEvaluator:
    def __init__(self):
        self.fc = ToyTarget().fc
        self.classes = list(range(C))

    def embedder_or_default(self):
        return FakeEmbedder()

    def logits_from_embeddings(self, emb):
        return self.fc(emb)

    def features_from_embeddings(self, emb):
        return emb


def test_attack_table_end_to_end_on_a_toy_setting(toy_prior, tmp_path, monkeypatch):
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path))
    from test_attacks import toy_ssd_factory
    gen = torch.Generator().manual_seed(5)
    train = SimpleNamespace(classes=list(range(C)), labels=torch.arange(C).repeat(4),
                            images=torch.rand(4 * C, 3 * 64, generator=gen))
    data = SimpleNamespace(train=train, num_classes=C)
    protocol = {"classes": C, "per_class": 2}
    monkeypatch.setattr(A, "_attack_context", lambda *a, **k: (protocol, data, list(range(C)), FakeEvaluator(),
                                                               toy_prior))

    def factory(name, row, scale, **kwargs):
        if row == "ssd":
            return toy_ssd_factory(toy_prior, T=0.3, eps=1.0), "toy-none", {"T": 0.3}
        return OracleFactory(ToyTarget()), f"toy-{row}", {}

    monkeypatch.setattr(A, "oracle_factory", factory)

    def ceiling(name, scale, classes, per_class, **kwargs):
        z, labels = white_box_latents(ToyTarget(), toy_prior, classes, "smoke", target_key="toy", starts=per_class)
        return toy_prior.decode(z), labels

    monkeypatch.setattr(A, "white_box_ceiling", ceiling)
    params = dict(pool=32, population=6, generations=4)
    table, results, per_class = A.attack_table("toy", "smoke", "mirror", rows=("none", "ssd"), seeds=(0,),
                                               extra_seeds=(1,), progress=False, **params)
    assert list(table.row) == ["none", "none", "ssd", "ssd", "prior", "ceiling"]
    attacked = table[table.row.isin(["none", "ssd"])]
    # equal effort: every row and seed ran every generation with the same queries per class
    assert (attacked.generations_per_class == 4).all()
    assert (attacked.queries_min == attacked.queries_max).all() and attacked.queries_per_class.nunique() == 1
    assert (attacked.stopped == f"generations: {C}").all()
    effort = A.effort_summary(table).set_index("row")
    assert list(effort.index) == ["none", "ssd"] and (effort.seeds == 2).all()
    assert effort.loc["none", "full_runs"] == f"{2 * C}/{2 * C}" and effort.loc["none", "queries"] == "20"
    assert set(per_class.columns) >= {"class", "hits@1", "hits@5", "n", "row", "attack_seed"}
    assert per_class.groupby(["row", "attack_seed"]).n.sum().eq(C * 2).all()
    summary = A.with_intervals(table, per_class).set_index("row")
    assert summary.loc["none", "images"] == 2 * C * 2 and summary.loc["prior", "images"] == C * 2
    assert (summary["acc@1 low"] <= summary["acc@1"] + 1e-9).all()
    assert (summary["acc@1"] <= summary["acc@1 high"] + 1e-9).all()
    against = A.verdicts(per_class)
    assert set(against.row) == {"ssd", "prior", "ceiling"} and set(against.verdict) <= set(V.VERDICTS)
    assert (results[("ssd", 0)][0].latents != results[("ssd", 1)][0].latents).any()


def planted_per_class(none_rate, ssd_rate, prior_rate, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for row, rate, seeds in (("none", none_rate, (0, 1)), ("ssd", ssd_rate, (0, 1)), ("prior", prior_rate, (0,)),
                             ("ceiling", 0.5, (0,))):
        frames.append(simulated(rate, classes=62, rng=rng, seeds=seeds).assign(setting="lfw_ir152",
                                                                                attack="mirror", row=row))
    per_class = pd.concat(frames, ignore_index=True)
    table = per_class.groupby(["setting", "attack", "row", "attack_seed"], as_index=False, sort=False).agg(
        hits=("hits@1", "sum"), n=("n", "sum"))
    table = table.assign(**{"acc@1": 100 * table.hits / table.n, "acc@5": 100 * table.hits / table.n,
                            "title": table.row, "delta_eval": 1.0, "delta_face": 1.0})
    per_class["hits@5"] = per_class["hits@1"]
    return A.with_intervals(table, per_class), per_class


def test_verdict_sentences_follow_the_rule():
    summary, per_class = planted_per_class(0.30, 0.05, 0.02)
    [line] = A.verdict_lines(summary, per_class, titles={"lfw_ir152": "LFW / IR-152"})
    assert line.startswith("**LFW / IR-152**") and "SSD (paper, Table 4) lowers Acc@1" in line
    assert "white-box ceiling" in line and "95% CI" in line
    assert A.verdict_counts(per_class) == {"lower": 1, "higher": 0, "inconclusive": 0, "attack beats prior": 1,
                                           "not judged": 0, "cases": 1}
    summary, per_class = planted_per_class(0.30, 0.30, 0.02, seed=1)
    [line] = A.verdict_lines(summary, per_class)
    assert "inconclusive at this scale" in line
    summary, per_class = planted_per_class(0.03, 0.01, 0.03, seed=2)  # the attack recovers nothing: no verdict
    [line] = A.verdict_lines(summary, per_class)
    assert "does not beat random prior samples" in line and "lowers" not in line
    counts = A.verdict_counts(per_class)
    assert counts["not judged"] == 1 and counts["lower"] == counts["inconclusive"] == 0


def test_variant_sentences_name_what_is_clearly_stronger():
    rng = np.random.default_rng(4)
    default = simulated(0.2, classes=40, rng=rng)
    frames = [default.assign(setting="lfw_vgg16", attack="mirror", row="default"),
              simulated(0.45, classes=40, rng=rng).assign(setting="lfw_vgg16", attack="mirror",
                                                           row="twice the generations"),
              default.assign(setting="lfw_vgg16", attack="mirror", row="no latent box")]  # identical: no change
    against = A.verdicts(pd.concat(frames, ignore_index=True), reference="default")
    [line] = A.variant_lines(against, titles={"lfw_vgg16": "LFW / VGG-16"})
    assert "twice the generations: clearly stronger" in line and "no latent box: not clearly different" in line


def test_diagnostics_table_shows_the_chosen_diagnostics_per_row():
    runs = pd.DataFrame({"setting": ["s"] * 3, "row": ["none", "none", "ssd"], "diag_inversion_mse": [1.0, 3.0, 2.0],
                         "diag_inversion_mse_of_mean": [2.0, 2.0, 2.0], "diag_stage1_before": [0.1, 0.3, 0.2],
                         "diag_other": [9.0, 9.0, 9.0]})
    table = A.diagnostics_table(runs, "c2f")
    assert list(table.columns) == ["setting", "row", "p before I", "inv. error"]  # only what exists, relabelled
    assert table.set_index("row").loc["none", "inv. error"] == pytest.approx(1.0)  # mean of 0.5 and 1.5
    assert A.diagnostics_table(runs, "mirror") is None


def test_claim_verdicts_follow_the_counts():
    from ssdlib.experiments.verdicts import claim_verdict, claim_verdicts
    base = {"lower": 0, "higher": 0, "inconclusive": 0, "not judged": 0, "cases": 3}
    assert claim_verdict({**base, "not judged": 3}) == "not testable at this scale"
    assert claim_verdict({**base, "lower": 2, "not judged": 1}) == "holds"
    assert claim_verdict({**base, "lower": 1, "inconclusive": 2}) == "holds in part"
    assert claim_verdict({**base, "lower": 2, "higher": 1}) == "does not hold at this scale"
    assert claim_verdict({**base, "inconclusive": 3}) == "inconclusive at this scale"
    both = {"ssd": {**base, "lower": 3}, "ssd_code": {**base, "inconclusive": 3}}
    assert claim_verdicts(both, {"ssd": "paper", "ssd_code": "code"}) == "paper: holds; code: inconclusive at this scale"
    assert claim_verdicts({"ssd": both["ssd"], "ssd_code": both["ssd"]}) == "holds"
