"""The analyses of Section 5.3, 5.4 and Appendix D: Figure 1's t-SNE inputs are exactly the correctly classified test
outputs, Table 5's profiler timer and overhead follow the solver chapter's definition, and the ablation helpers build
the grid asked for."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from ssdlib import SSD
from ssdlib.experiments import inference_cost as IC
from ssdlib.experiments import solver as S
from ssdlib.experiments import tsne as TS


class _Toy(torch.nn.Module):
    num_classes = 5

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(12, 5)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _fake_setting(monkeypatch, module, probs, labels):
    data = SimpleNamespace(test=SimpleNamespace(labels=labels), valid=None, num_classes=probs.shape[1])
    table = torch.softmax(torch.randn(5, 5, generator=torch.Generator().manual_seed(3)), -1).double()
    monkeypatch.setattr(module, "private_data", lambda *a, **k: data)
    monkeypatch.setattr(module, "train_target", lambda *a, **k: (_Toy(), {"key": "toy"}))
    monkeypatch.setattr(module, "predict_proba", lambda *a, **k: probs.clone())
    monkeypatch.setattr(module, "ssd_of_setting",
                        lambda *a, **k: ((lambda s: SSD(table, T=0.3, eps=0.5, seed=s)), {"T": 0.3}))
    return table


def test_tsne_inputs_are_exactly_the_correctly_classified_test_outputs(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(40, 5, generator=gen), -1).double()
    labels = torch.randint(0, 5, (40,), generator=gen)
    labels[:10] = probs[:10].argmax(-1)  # some right, the rest mostly wrong
    table = _fake_setting(monkeypatch, TS, probs, labels)
    out = TS.correct_test_outputs("lfw_vgg16", "smoke", ("ssd",), seed=7)
    correct = probs.argmax(-1) == labels
    assert 10 <= int(correct.sum()) < 40
    assert torch.equal(out["none"], probs[correct]) and torch.equal(out["labels"], labels[correct])
    assert (out["none"].argmax(-1) == out["labels"]).all()
    # SSD drawn over the whole test set with the run's seed (as the utility page), then the correct rows kept
    assert torch.equal(out["ssd"], SSD(table, T=0.3, eps=0.5, seed=7)(probs)[correct])
    xy = TS.embed(out["none"], seed=0)
    assert xy.shape == (int(correct.sum()), 2)
    # one correct output or none (the paper dry run's barely trained target): nothing to embed, no sklearn error
    assert TS.embed(out["none"][:1]).shape == (1, 2) and TS.embed(out["none"][:0]).shape == (0, 2)
    assert TS.embed(out["none"][:2]).shape == (2, 2)


def test_shown_groups_are_the_most_populated():
    groups = torch.tensor([3, 3, 3, 1, 1, 7, 7, 7, 7, 0])
    assert TS.shown_groups(groups, 2).tolist() == [7, 3]
    assert TS.shown_groups(groups, 10).tolist() == [7, 3, 1, 0]


def test_section53_claims_read_the_direction_of_each_change():
    rows = []
    for samples, base, new in (("private test, correctly classified", 0.2, 0.1),
                               ("attacker (Mirror's initial phase)", 1.0, 1.5)):
        rows += [{"samples": samples, "row": "none", "cmi": base, "given": "true label"},
                 {"samples": samples, "row": "ssd", "cmi": new, "given": "true label"}]
    from ssdlib import paper
    table = TS.with_paper(pd.DataFrame(rows), paper.section53_cmi())
    assert table["paper cmi"].tolist() == [0.21, 0.14, 4.02, 1.96]
    lines = TS.claim_lines(table, ["ssd"], {"ssd": "SSD"})
    assert "holds here" in lines[0] and "does not hold here" in lines[1]


def test_overhead_has_one_definition_and_the_profiler_timer_counts_every_inference():
    calls = []
    seconds = IC.profiled_seconds(lambda: calls.append(torch.ones(64, 64) @ torch.ones(64, 64)), inferences=5,
                                  device="cpu", warmup=2)
    assert len(calls) == 7 and seconds > 0
    model = _Toy()
    ssd = SSD(torch.full((5, 5), 0.2, dtype=torch.float64), T=0.3, seed=0)
    fake = iter([2.0, 2.5, 0.4])
    out = S.ssd_overhead(model, lambda p, inputs=None: ssd(p.double()), torch.randn(8, 12),
                         timer=lambda fn: next(fake))
    assert out["forward_ms"] == 2000 and out["SSD_alone_ms"] == 400
    assert out["overhead_%"] == pytest.approx(S.overhead_percent(0.4, 2.0)) == pytest.approx(20.0)
    paper = IC.with_paper(pd.DataFrame({"setting": ["lfw_vgg16"]}))
    assert paper["paper overhead_%"].item() == pytest.approx(100 * (6.07 - 5.65) / 5.65)
    assert abs(paper["paper overhead_%"].item() - paper["paper increase_percent"].item()) < 0.1


def test_the_batch_is_cycled_to_the_paper_size():
    images = torch.arange(5.0).reshape(5, 1)
    assert IC.batch_of(images, 12).flatten().tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError):
        IC.batch_of(images[:0], 4)


def test_the_ablation_grids_hold_what_was_asked():
    from ssdlib.experiments import ablations as AB
    from ssdlib.experiments.settings import SETTINGS, SSD_VARIANTS, ssd_params

    paper_T = {ssd_params(n, v)["T"] for n in SETTINGS for v in SSD_VARIANTS}
    for scale in ("smoke", "cpu", "paper"):
        points = AB.temperature_grid("lfw_ir152", scale)
        Ts = [p["T"] for p in points]
        assert Ts[0] == AB.NO and Ts.count(AB.NO) == 1
        numeric = Ts[1:]
        assert numeric == sorted(numeric) and len(set(numeric)) == len(numeric)
        assert paper_T | set(AB.GRIDS[scale]["T"]) == set(numeric)
        assert all(p["eps"] == ssd_params("lfw_ir152", "ssd")["eps"] for p in points)
        eps_points = AB.distortion_grid("lfw_ir152", scale)
        eps = sorted(set(AB.GRIDS[scale]["eps"]) | {1.0})
        assert [(p["eps"], p.get("budget", "adaptive")) for p in eps_points] == \
            [(e, b) for b in AB.BUDGETS for e in eps]
        assert {p["T"] for p in eps_points} == {ssd_params("lfw_ir152", "ssd")["T"]}
    custom = AB.temperature_grid("lfw_ir152", "cpu", [2.0])
    assert [p["T"] for p in custom] == [AB.NO, *sorted(paper_T | {2.0})]
    assert [p["eps"] for p in AB.distortion_grid("lfw_ir152", "cpu", [0.3], budgets=("constant",))] == [0.3, 1.0]
    with pytest.raises(ValueError, match="budgets"):
        AB.distortion_grid("lfw_ir152", "cpu", budgets=("fixed",))
    # the point with the paper's settings has exactly the attack pages' SSD parameters (so it reuses their runs)
    assert ssd_params("lfw_ir152", "ssd") in AB.temperature_grid("lfw_ir152", "cpu")
    assert AB.point_label(points[0]) == "T=NO, eps=1" and "(constant)" in AB.point_label(eps_points[-1])


def test_the_ablated_defenses_do_what_their_names_say():
    from ssdlib.experiments import ablations as AB

    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(3, 6, generator=gen), -1).double()
    table = torch.softmax(torch.randn(6, 6, generator=gen), -1).double()
    untempered = AB.UntemperedSSD(table, T=1.0, seed=0)
    draws = torch.stack([untempered.sample_labels(probs) for _ in range(4000)])
    freq = torch.stack([(draws == k).double().mean(0) for k in range(6)], -1)
    assert torch.allclose(freq, probs, atol=0.03)  # y ~ f(x) itself (eq. 11)
    constant = AB.ConstantBudgetSSD(table, T=0.1, eps=0.3, seed=0)
    assert torch.equal(constant.radius(probs), torch.full((3,), 0.3, dtype=torch.float64))
    out = constant(probs)
    assert ((out - probs).abs().sum(-1) <= 0.3 + 1e-9).all()
    adaptive = SSD(table, T=0.1, eps=0.3, seed=0)
    assert not torch.allclose(adaptive.radius(probs), constant.radius(probs))
