"""The `paper` dry run: the caps of :mod:`ssdlib.scales` (fast) and the runner's ``--dry-run`` on the real data (slow).

The fast tests check that the caps apply only under the dry run, only to loop counts, and that a dry run's artifacts
have cache keys (and a cache folder) of their own.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ssdlib import cache as C
from ssdlib.attacks import build_attack
from ssdlib.experiments import settings
from ssdlib.priors import PRIOR_RECIPES
from ssdlib.reporting import runner
from ssdlib.scales import DRY_RUN_CAPS, DRY_RUN_ENV, budget, cap, dry_run
from ssdlib.training import TrainConfig, fit
from ssdlib.utils import REPO_ROOT, data_root

TABLE = {"smoke": {"epochs": 2}, "cpu": {"epochs": 15},
         "paper": {"epochs": 100, "lr": 0.01, "batch_size": 256, "milestones": (75, 90), "width": 64, "loss": "ns"}}


@pytest.fixture
def dry(monkeypatch, tmp_path):
    """The dry run on, with a cache of the test's own."""
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    monkeypatch.setenv("SSD_CACHE_DIR", str(tmp_path / "cache"))


def test_caps_apply_only_under_the_dry_run(monkeypatch):
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    assert not dry_run()
    assert budget(TABLE, "paper") == TABLE["paper"]
    assert cap("epochs", 100) == 100 and cap("classes", None) is None
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    assert dry_run()
    capped = budget(TABLE, "paper")
    assert capped["epochs"] == DRY_RUN_CAPS["epochs"]
    assert {k: v for k, v in capped.items() if k != "epochs"} == {k: v for k, v in TABLE["paper"].items()
                                                                   if k != "epochs"}  # sizes and rates untouched
    assert budget(TABLE, "paper") is not TABLE["paper"] and TABLE["paper"]["epochs"] == 100  # a copy


def test_cap_values(dry):
    assert cap("classes", None) == DRY_RUN_CAPS["classes"]  # "all classes" becomes the cap
    assert cap("epochs", 0) == 0  # never raised
    assert cap("lr", 0.5) == 0.5 and cap("batch_size", 512) == 512  # not loop counts
    assert cap("repeats", [1, 2, 4, 8, 256]) == [1, 2, 4]
    assert cap("epochs", True) is True


def test_dry_run_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv(DRY_RUN_ENV, "maybe")
    with pytest.raises(ValueError, match="SSD_DRY_RUN"):
        dry_run()


def test_budget_checks_the_scale():
    with pytest.raises(ValueError, match="unknown scale"):
        budget(TABLE, "gpu")


def test_paper_tables_keep_everything_but_loop_counts(dry):
    recipe = settings.recipe("paper", "celeba_ir152")
    assert recipe["epochs"] == 1 and recipe["lr"] == 0.01 and tuple(recipe["milestones"]) == (75, 90)
    prior = budget(PRIOR_RECIPES, "paper")
    assert prior["steps"] == DRY_RUN_CAPS["steps"] and prior["loss"] == "wgan-gp" and prior["gp_weight"] == 10.0
    assert prior["batch_size"] == 64


def test_attack_budgets_are_capped(dry):
    from ssdlib.models.generators import build_generator
    from ssdlib.priors import Prior
    prior = Prior(build_generator("smoke"), key="toy")
    mirror = build_attack("mirror", prior, scale="paper")
    assert mirror.params["generations"] == DRY_RUN_CAPS["generations"]
    assert mirror.params["pool"] == DRY_RUN_CAPS["pool"] and mirror.params["batch_size"] == 500
    brep = build_attack("brep", prior, scale="paper")
    assert brep.params["iterations"] == DRY_RUN_CAPS["iterations"] and brep.params["start_batch"] == 256


def test_cache_key_and_folder_differ_from_a_real_run(monkeypatch, tmp_path):
    monkeypatch.delenv("SSD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    real, info = C.cached("examples", {"n": 3}, lambda partial: {"x": 1}, enabled=False)
    assert C.cache_root() == tmp_path / "ssdlib" and "dry_run" not in real["environment"]
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    capped, dry_info = C.cached("examples", {"n": 3}, lambda partial: {"x": 1}, enabled=False)
    assert dry_info.key != info.key
    assert capped["config"]["dry_run"] is True and capped["environment"]["dry_run"] is True
    assert C.cache_root() == tmp_path / "ssdlib-dry-run"


def test_training_runs_one_batch_per_epoch(dry):
    calls = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    model.register_forward_hook(lambda *args: calls.append(1))
    data = (torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 2)
    config = TrainConfig(family="vgg16", scale="paper", num_classes=2, epochs=3, batch_size=8, augment=False)
    _, history = fit(model, data, config=config, progress=False)
    assert len(history) == 3 and len(calls) == 3 * DRY_RUN_CAPS["batches"]


def test_runner_parameters_are_capped(dry):
    profiles = {"adaptive": {"paper": {"images": 500, "repeats": [1, 2, 4, 8, 16], "ks": [0.1, 1.0]}}}
    params = runner.parameters_for("adaptive", "paper", profiles)
    assert params["images"] == DRY_RUN_CAPS["images"] and params["repeats"] == [1, 2, 4]
    assert params["ks"] == [0.1, 1.0]



def test_lists_of_seeds_are_capped_and_their_default_stays_a_list(dry):
    """A seed list keeps seeds 0 and 1; its ``None`` default ("the scale's seeds") stays ``None`` (capping it to the
    count 1 broke the ablation page's loop over seeds in a dry run)."""
    assert cap("seeds", [0, 1, 2]) == [0, 1] and cap("ssd_seeds", list(range(10))) == [0, 1]
    assert cap("seeds", None) is None and cap("classes", None) == DRY_RUN_CAPS["classes"]
    defaults = runner.capped_defaults(REPO_ROOT / "notebooks" / "ablations.ipynb")
    assert "seeds" not in defaults and "ssd_seeds" not in defaults and defaults["classes"] == DRY_RUN_CAPS["classes"]

def test_dry_run_keeps_one_setting_per_architecture(dry, monkeypatch, tmp_path):
    """Settings lists (scales.yml's, a notebook's own defaults, and per-attack maps) keep one setting per
    architecture under the dry run, the first of each; nothing changes without it."""
    profiles = {"table1": {"paper": {"settings": ["celeba_ir152", "lfw_ir152", "lfw_vgg16"],
                                     "attack_settings": {"lokt": ["lfw_ir152", "lfw_vgg16"]}}}}
    params = runner.parameters_for("table1", "paper", profiles)
    assert params["settings"] == ["celeba_ir152", "lfw_vgg16"]
    assert params["attack_settings"] == {"lokt": ["lfw_ir152", "lfw_vgg16"]}
    assert runner.capped_defaults(REPO_ROOT / "notebooks" / "table5.ipynb")["settings"] == ["celeba_ir152",
                                                                                            "lfw_vgg16"]
    with pytest.raises(ValueError, match="unknown setting"):
        runner.one_per_architecture("settings", ["no_such_setting"])
    monkeypatch.delenv(DRY_RUN_ENV)
    assert runner.parameters_for("table1", "paper", profiles)["settings"] == ["celeba_ir152", "lfw_ir152",
                                                                              "lfw_vgg16"]

# ------------------------------------------------------------------------------------------------ the dry run
#: The notebooks the slow test runs (see its docstring), and the setting and rows its attack pages attack.
SUBSET = ("data", "targets_lfw_ir152", "targets_lfw_vgg16", "prior", "attack_mirror", "attack_c2f", "attack_rlb",
          "attack_brep", "attack_lokt")
ATTACKED = ("-p", "settings", '["lfw_vgg16"]', "-p", "rows", '["none", "ssd"]')


@pytest.mark.slow
def test_paper_dry_run(tmp_path):
    """``python -m ssdlib.reporting.runner --scale paper --dry-run`` on ``../shared/data`` for a representative
    subset of the book (:data:`SUBSET`): the data pipeline, both paper target architectures (IR-152 and VGG-16)
    under every training-time defense, the WGAN-GP prior and each of the five attacks (their paper-size attacker
    models: C2F's inversion network, RLB's agent, LOKT's T-ACGAN and DenseNet surrogates) against the undefended and
    the SSD row of one setting (LFW / VGG-16). The whole book's dry run takes too long for a test on 2 cores
    (book/cluster.md gives its times); the analyses pages, the other rows and settings run there."""
    root = data_root()
    if not root.is_dir() or not any(root.iterdir()):
        pytest.skip(f"no face data at {root} (the dry run reads the real data: see DEVELOPERS.md, or set "
                    "SSD_DATA_ROOT)")
    env = {**os.environ, "SSD_CACHE_DIR": str(tmp_path / "cache")}
    env.pop(DRY_RUN_ENV, None)  # the runner's --dry-run sets it
    proc = subprocess.run([sys.executable, "-m", "ssdlib.reporting.runner", "--scale", "paper", "--dry-run",
                           "--out", str(tmp_path / "out"), "--only", *SUBSET, *ATTACKED],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"{len(SUBSET)} ok, 0 failed" in proc.stdout
    assert all((tmp_path / "out" / "paper" / f"{name}.ipynb").exists() for name in SUBSET)
    payloads = list((tmp_path / "cache" / "models").glob("*.pt"))
    assert payloads and not list((tmp_path / "cache").rglob("*.partial.pt"))
    stored = torch.load(payloads[0], map_location="cpu", weights_only=False)
    assert stored["config"]["dry_run"] is True and stored["environment"]["dry_run"] is True
