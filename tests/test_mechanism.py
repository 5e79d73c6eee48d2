"""The label-survival arithmetic behind the mechanism page and the calibrated temperature: exact against SSD's own
sampler, monotone in T and |Y|, inverted by the calibration, and generated sentences that say what the numbers do."""
import pandas as pd
import pytest
import torch

from ssdlib import SSD
from ssdlib.experiments import calibration as K
from ssdlib.experiments import mechanism as M


def test_survival_is_the_probability_that_ssd_draws_the_top_label():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(6, 20, generator=gen), -1)
    ssd = SSD(torch.full((20, 20), 1 / 20), T=0.2, seed=1)
    draws = torch.stack([ssd.sample_labels(probs) for _ in range(4000)])
    empirical = (draws == probs.argmax(-1)).double().mean(0)
    assert torch.allclose(empirical, K.label_survival(probs, 0.2), atol=0.03)
    assert torch.equal(K.label_survival(probs, 0.0), torch.ones(6, dtype=torch.float64))


def test_the_worked_example_and_the_dependence_on_the_class_count():
    top = torch.tensor([0.3])
    at = {c: K.label_survival(K.synthetic_outputs(top, c), 0.1).item() for c in (62, 181, 1000)}
    assert at[1000] == pytest.approx(0.02, abs=0.005)  # about 2 % at 1,000 classes
    assert 0.09 < at[181] < at[62] < 0.26               # 10-25 % at our class counts
    curve = M.survival_by_classes(torch.tensor([0.2, 0.5, 0.9]), [10, 100, 1000], [0.05, 0.3])
    for _, g in curve.groupby("T"):
        assert g.sort_values("classes").survival.is_monotonic_decreasing


def test_synthetic_outputs_are_distributions_with_the_given_top():
    out = K.synthetic_outputs(torch.tensor([0.9, 0.3, 0.0001]), 50)
    assert torch.allclose(out.sum(-1), torch.ones(3, dtype=torch.float64))
    assert out[0, 0] == pytest.approx(0.9) and out[2, 0] == pytest.approx(1 / 50)  # at least uniform
    assert (out.argmax(-1) == 0).all()
    with pytest.raises(ValueError, match="num_classes"):
        K.synthetic_outputs(torch.tensor([0.5]), 1)


def test_the_calibrated_temperature_reaches_the_target_rate_and_refuses_the_unreachable():
    probs = torch.softmax(4 * torch.randn(200, 62, generator=torch.Generator().manual_seed(3)), -1)
    for rate in (0.2, 0.5, 0.9):
        T = K.temperature_for_survival(probs, rate)
        assert K.label_survival(probs, T).mean().item() == pytest.approx(rate, abs=1e-4)
    with pytest.raises(ValueError, match="out of reach"):
        K.temperature_for_survival(probs, 0.5 / 62)  # below the uniform draw's 1/|Y|


def test_paper_class_counts_come_from_the_paper():
    assert K.paper_classes("celeba_ir152") == 1000 and K.paper_classes("lfw_vgg16") == 530


def test_sentences_say_what_the_tables_say():
    calib = pd.DataFrame([
        {"setting": "A", "SSD": "SSD (code)", "paper T": 0.1, "paper |Y|": 530, "kept at paper |Y| (%)": 36.4,
         "our |Y|": 62, "kept here at paper T (%)": 61.6, "calibrated T": 0.1557, "clipped": False},
        {"setting": "B", "SSD": "SSD (paper)", "paper T": 0.3, "paper |Y|": 530, "kept at paper |Y| (%)": 1.4,
         "our |Y|": 62, "kept here at paper T (%)": 10.3, "calibrated T": 100.0, "clipped": True}])
    first, second = M.calibration_lines(calib)
    assert "36% of generated" in first and "62% at our 62" in first and "T = 0.156" in first
    assert "uniform draw" in second and "1/62 (1.6%)" in second
    agreement = pd.DataFrame([
        {"setting": "s", "row": r, "title": t, "images": k, "agreement": v, "accuracy": float("nan"), "n": 10}
        for r, t, k, v in (("none", "none", "generated", 100.0), ("none", "none", "private test", 100.0),
                           ("ssd_code", "SSD (authors' code)", "generated", 41.0),
                           ("ssd_code", "SSD (authors' code)", "private test", 97.0),
                           ("ls", "LS", "generated", 20.0), ("ls", "LS", "private test", 90.0))])
    (line,) = M.agreement_lines(agreement, titles={"s": "S"})
    assert "41% of generated labels and 97% of test labels" in line and "20-20%" in line
