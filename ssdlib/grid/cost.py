"""What a plan costs: jobs per notebook and kind, and the device-hours they take, from measured per-step times.

The estimate counts each job's steps from the recipes of its scale and the data at the data root (training steps
of the targets and backbones, generator steps of the prior, queries of the attacks, Adam steps of the ceiling,
images the dlib embedder reads), and multiplies them by per-step times measured on this machine with the scale's
own architectures (:func:`measure_steps`, one thread, cached). At ``paper`` scale the device is a GPU: the targets'
training steps and forward passes come from the measurements on an NVIDIA H200 in ``data/measurements/`` (batch
64, 1,000 classes), and the steps measured only on this CPU (the prior's generator and critic, decoding latents)
are scaled by the CPU/GPU ratio of the IR-152 training step. Not counted: the learned parts of some attacks beyond
their queries (C2F's inversion network, RLB's agent updates, LOKT's surrogates), data loading and evaluation
passes; the estimate is a floor for those pages. dlib's embedding runs on the CPU at every scale and is reported
apart, in CPU-hours.
"""
from __future__ import annotations

import json
import math
import time

import pandas as pd
import torch

from ..utils import REPO_ROOT
from .jobs import KINDS

__all__ = ["counts", "measure_steps", "estimate", "describe", "GPU_MEASUREMENTS", "DLIB_SECONDS_PER_IMAGE"]

#: The GPU measurements at paper scale (training step and forward pass of each family, batch 64, 1,000 classes).
GPU_MEASUREMENTS = REPO_ROOT / "data" / "measurements" / "gpu_check_h200.json"
#: dlib's 128-d embedding of one face on one CPU core (DEVELOPERS.md).
DLIB_SECONDS_PER_IMAGE = 0.09
BATCH = 64
#: The batch of the CPU measurements: per-step times there are scaled linearly to :data:`BATCH` (a CPU's step time
#: grows with the batch; a paper-scale IR-152 step of 64 images takes minutes on one loaded core).
CPU_BATCH = 16


def counts(plans: dict) -> pd.DataFrame:
    """Jobs per notebook (rows) and kind (columns)."""
    rows = [{"notebook": n, **p.counts()} for n, p in plans.items()]
    frame = pd.DataFrame(rows).fillna(0)
    cols = [k for k in KINDS if k in frame.columns]
    frame = frame[["notebook", *cols]]
    frame[cols] = frame[cols].astype(int)
    return frame


def _time(fn, repeat: int = 1) -> float:
    """Seconds of one call of ``fn`` at :data:`CPU_BATCH`, scaled to :data:`BATCH` (best of ``repeat`` after a
    warm-up)."""
    fn()  # warm-up: allocations, kernel choice
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * BATCH / CPU_BATCH


def _measure(scale: str) -> dict:
    from ..models.classifiers import build_model
    from ..models.generators import LATENT_DIM, build_discriminator, build_generator
    from ..priors.training import PRIOR_RECIPES
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(CPU_BATCH, 3, 64, 64, generator=gen)
    y = torch.randint(0, 1000, (CPU_BATCH,), generator=gen)
    out = {}
    for family in ("ir152", "vgg16"):
        model = build_model(family, 1000, scale)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        out[f"{family}_train_step"] = _time(step)
        model.eval()
        with torch.no_grad():
            out[f"{family}_forward"] = _time(lambda model=model: model(x))
    G, D = build_generator(scale), build_discriminator(scale)
    z = torch.randn(CPU_BATCH, LATENT_DIM, generator=gen)
    with torch.no_grad():
        out["decode"] = _time(lambda: G.eval()(z))
    G.train()
    recipe = PRIOR_RECIPES[scale]
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())

    def gan_step():  # one generator step with its critic steps (no gradient penalty: a floor for wgan-gp)
        for _ in range(recipe["n_critic"]):
            with torch.no_grad():
                fake = G(z)
            opt_d.zero_grad(set_to_none=True)
            (D(fake).mean() - D(x).mean()).backward()
            opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        (-D(G(z)).mean()).backward()
        opt_g.step()

    out["gan_step"] = _time(gan_step)
    out["threads"] = torch.get_num_threads()
    return out


def measure_steps(scale: str, *, cache: bool = True) -> dict:
    """Seconds per step at ``scale`` on this machine, one thread, measured at batch :data:`CPU_BATCH` and scaled to
    64: each family's training step and forward pass, the generator's decoding, one generator step of the prior with
    its critic steps (cached per scale, torch version and CPU)."""
    from ..cache import cached
    config = {"kind": "step-times", "scale": scale, "torch": str(torch.__version__), "batch": CPU_BATCH,
              "cpu": torch.backends.cpu.get_cpu_capability()}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        payload, _ = cached("step-times", config, lambda _: {"steps": _measure(scale)}, name=scale, enabled=cache)
    finally:
        torch.set_num_threads(before)
    return payload["steps"]


def _gpu() -> dict | None:
    if not GPU_MEASUREMENTS.is_file():
        return None
    m = json.loads(GPU_MEASUREMENTS.read_text())
    steps = {(s["family"], s["defense"]): s["step_ms"] / 1000 for s in m["steps"]}
    forward = {o["family"]: o["forward_ms"] / 1000 for o in m["overhead"]}
    return {"device": m["device"], "steps": steps, "forward": forward}


class _Sizes:
    """Data sizes at the data root, memoised (the plan's scale and seed)."""

    def __init__(self):
        self._memo = {}

    def private(self, dataset, scale, seed, root):
        key = ("private", dataset, scale, seed, root)
        if key not in self._memo:
            from ..experiments.targets import private_data
            d = private_data(dataset, scale, seed=seed, root=root)
            self._memo[key] = (len(d.train), len(d.train) + len(d.valid) + len(d.test), d.num_classes)
        return self._memo[key]

    def pretrain(self, scale, seed, root):
        key = ("pretrain", scale, seed, root)
        if key not in self._memo:
            from ..experiments.targets import pretraining_data
            self._memo[key] = len(pretraining_data(scale, seed=seed, root=root))
        return self._memo[key]


def _attack(name: str, scale: str, overrides: dict):
    from ..attacks import ATTACKS
    from ..experiments.attacks import PROTOCOL
    cls = ATTACKS[name]
    params = {**cls.EFFORT[scale], **cls.DEFAULTS, "top_k": PROTOCOL[scale]["per_class"], **overrides}
    fake = type("Params", (), {"params": params})()
    return cls, fake


def _job_seconds(job, steps: dict, gpu: dict | None, sizes: _Sizes) -> tuple[float, float]:
    """(device seconds, CPU seconds of dlib) of one job."""
    from ..experiments.ceiling import CEILING_RECIPES
    from ..experiments.settings import pretrain_recipe, recipe, setting
    from ..priors.training import PRIOR_RECIPES
    p, scale = job.params, job.params["scale"]
    on_gpu = gpu is not None and scale == "paper"
    ratio = steps["ir152_train_step"] / gpu["steps"][("ir152", "none")] if on_gpu else 1.0

    def train_step(family, defense="none"):
        if on_gpu:
            return gpu["steps"].get((family, defense), gpu["steps"][(family, "none")])
        return steps[f"{family}_train_step"]

    def forward(family):  # per image
        return (gpu["forward"][family] if on_gpu else steps[f"{family}_forward"]) / BATCH

    decode = steps["decode"] / ratio / BATCH  # per image
    if job.kind == "backbone":
        r = pretrain_recipe(scale, p["family"])
        n = sizes.pretrain(scale, p["seed"], p.get("root"))
        return r["epochs"] * math.ceil(n / BATCH) * train_step(p["family"]), 0.0
    if job.kind == "target":
        s = setting(p["setting"])
        n_train, _, _ = sizes.private(s.dataset, scale, p["seed"], p.get("root"))
        return recipe(scale, p["setting"])["epochs"] * math.ceil(n_train / BATCH) * train_step(s.family,
                                                                                               p["defense"]), 0.0
    if job.kind == "dp-target":  # per-example gradients: counted as one training step per example batch
        from ..experiments.dpsgd import DP_RECIPES
        s = setting(p["setting"])
        n_train, _, _ = sizes.private(s.dataset, scale, p["seed"], p.get("root"))
        return DP_RECIPES[scale]["epochs"] * math.ceil(n_train / BATCH) * train_step(s.family), 0.0
    if job.kind == "prior":
        return PRIOR_RECIPES[scale]["steps"] * steps["gan_step"] / ratio, 0.0
    if job.kind == "evaluator":
        _, n_all, _ = sizes.private(p["dataset"], scale, p["seed"], p.get("root"))
        return 0.0, n_all * DLIB_SECONDS_PER_IMAGE
    family = setting(p["setting"]).family
    if job.kind == "calibration":
        from ..experiments.calibration import CALIBRATION_SAMPLES
        return CALIBRATION_SAMPLES[scale] * (decode + forward(family)), 0.0
    if job.kind == "ceiling":
        r = CEILING_RECIPES[scale]
        images = p["classes"] * p["per_class"]
        return r["steps"] * images * 3 * (decode + forward(family)), 0.0  # forward + backward ~ 3 forwards
    if job.kind == "adaptive-mirror":  # Mirror alone and averaged (repeats x the queries), or the undefended row
        cls, fake = _attack("mirror", scale, {})
        planned = cls.planned_queries(fake, p["classes"])
        rows = 1 if p.get("spec") is None else 1 + p["repeats"]
        return (rows * (planned["setup"] + p["classes"] * planned["per_class"]) * (decode + forward(family)), 0.0)
    cls, fake = _attack(p["attack"], scale, p.get("overrides") or {})
    _, _, classes = sizes.private(setting(p["setting"]).dataset, scale, p["seed"], p.get("root"))
    planned = cls.planned_queries(fake, classes)
    if job.kind == "attack-setup":
        seconds = planned["setup"] * (decode + forward(family))
        if p["attack"] == "lokt":  # the T-ACGAN's generator steps, each with its critic steps
            seconds += fake.params["tacgan_steps"] * steps["gan_step"] / ratio
        return seconds, 0.0
    return planned["per_class"] * (decode + forward(family)), 0.0


def estimate(plans: dict, scale: str, *, steps: dict | None = None) -> pd.DataFrame:
    """Device-hours and dlib CPU-hours per notebook (a notebook counts every job it needs, shared or not)."""
    steps = measure_steps(scale) if steps is None else steps
    gpu = _gpu() if scale == "paper" else None
    sizes = _Sizes()
    memo: dict[str, tuple[float, float]] = {}
    rows = []
    for name, plan in plans.items():
        device = cpu = 0.0
        for job in plan:
            if job.name not in memo:
                memo[job.name] = _job_seconds(job, steps, gpu, sizes)
            device, cpu = device + memo[job.name][0], cpu + memo[job.name][1]
        rows.append({"notebook": name, "jobs": len(plan), "device_hours": device / 3600, "dlib_cpu_hours": cpu / 3600})
    frame = pd.DataFrame(rows)
    frame.attrs["total_device_hours"] = sum(v[0] for v in memo.values()) / 3600
    frame.attrs["total_dlib_cpu_hours"] = sum(v[1] for v in memo.values()) / 3600
    frame.attrs["device"] = (f"GPU ({gpu['device']} measurements; CPU steps scaled by the IR-152 training step's "
                             f"CPU/GPU ratio {steps['ir152_train_step'] / gpu['steps'][('ir152', 'none')]:.0f})"
                             if gpu else "this CPU, one thread")
    frame.attrs["steps"] = steps
    return frame


def describe(plans: dict, whole, scale: str, *, with_estimate: bool = True) -> str:
    """The text the planner prints: jobs per notebook and kind, and the estimate."""
    table = counts(plans)
    lines = [f"Grid at scale {scale}: {len(whole)} distinct jobs {whole.counts()}", ""]
    if with_estimate:
        est = estimate(plans, scale)
        table = table.merge(est[["notebook", "device_hours", "dlib_cpu_hours"]], on="notebook")
        steps = ", ".join(f"{k} {v:.3g} s" for k, v in est.attrs["steps"].items() if k != "threads")
        lines += [f"Estimated device: {est.attrs['device']}. Per-step times measured here (batch {BATCH}): {steps}.",
                  f"Whole book (jobs shared by notebooks counted once): {est.attrs['total_device_hours']:.1f} "
                  f"device-hours, plus {est.attrs['total_dlib_cpu_hours']:.1f} CPU-hours of dlib embeddings. "
                  "A floor: see ssdlib.grid.cost for what is not counted.", ""]
    lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    from .plan import unplanned
    missing = unplanned(list(plans))
    if missing:
        lines += ["", f"No planner yet (these compute as they render, and are not in the estimate): "
                      f"{', '.join(missing)}"]
    return "\n".join(lines)
