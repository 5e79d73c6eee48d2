"""The three scales every experiment runs at, from one parameter: ``smoke`` (CI, minutes), ``cpu`` (a 2-core
laptop, the default) and ``paper`` (one CUDA GPU, the paper's sizes). Smaller scales shrink budgets, never the
algorithm: each module that has per-scale sizes keys them by these names and reads them through :func:`budget`,
which caps the loop counts under the dry run (:func:`dry_run`: the ``paper`` code paths on CPU, loops cut short)."""
from __future__ import annotations

import os

SCALES = ("smoke", "cpu", "paper")


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`, else a ValueError naming the valid ones.

    >>> check_scale("cpu")
    'cpu'
    >>> check_scale("laptop")
    Traceback (most recent call last):
    ValueError: unknown scale 'laptop'; valid: smoke, cpu, paper
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    return scale


# ------------------------------------------------------------------------------------------------ dry run
#: The environment variable that turns the dry run on (the runner's ``--dry-run`` sets it for the kernels).
DRY_RUN_ENV = "SSD_DRY_RUN"

#: The dry run's caps, defined once: every loop count of a per-scale table (a key below) is capped at its value,
#: so the ``paper`` path (architectures, image sizes, widths, batch sizes, data pipeline, code paths) runs on CPU in
#: minutes. Keys not listed here (sizes, rates, batch sizes) are never touched. ``batches`` caps the batches of one
#: training epoch; ``max_identities``, ``images_per_identity`` and ``public_images`` what is kept after loading the full
#: data root (private identities, their images split 2/1/1, public images), which bounds every per-image cost
#: (forward passes of a paper-width target, about 6 images a second on 2 CPU cores; dlib embeddings, 0.09 s each).
DRY_RUN_CAPS: dict[str, int] = {
    # training loops
    "epochs": 1, "batches": 1, "steps": 2, "warmup_steps": 1, "tacgan_steps": 2, "surrogate_steps": 2,
    "inversion_epochs": 1, "inversion_samples": 64, "stage1_steps": 2, "attack_steps": 2, "starts": 1,
    # searches of the attacks (each query is a forward pass of the target)
    "generations": 1, "iterations": 2, "episodes": 4, "start_batches": 1, "pool": 32, "population": 16,
    "surrogates": 1, "holdout": 16, "n_dis": 1, "n_critic": 1, "per_class": 2,
    # how much is attacked, measured or sampled
    "classes": 2, "samples": 64, "reference": 64, "inferences": 2, "variant_classes": 2, "mirror_classes": 2,
    "max_identities": 10, "images_per_identity": 4, "public_images": 256,
    # the notebooks' own loop counts (notebooks/scales.yml)
    "n_trials": 5, "oracle_instances": 5, "repeat": 1, "images": 4, "repeats": 4, "pairs": 1, "mirror_repeats": 2,
    # the solver's timing sweep: its C = 10^6 cells at batch 256 take 15 GB of host memory (a GPU's job)
    "sweep_sizes": 100_000, "crop_sample": 8, "attacker_samples": 64,
    # lists of seeds (0, 1, ...): a cap of 1 keeps seeds 0 and 1, so the spread over seeds is still computed
    "seeds": 1, "ssd_seeds": 1,
}
#: Caps of lists (of seeds): ``None`` there means "the scale's list", never a count, so it stays ``None``.
LIST_CAPS = frozenset({"seeds", "ssd_seeds"})


def dry_run() -> bool:
    """Whether the dry run is on (``$SSD_DRY_RUN`` set to 1, true or yes); a clear error on any other value."""
    value = os.environ.get(DRY_RUN_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"${DRY_RUN_ENV} must be 1/true/yes or 0/false/no (or unset), got {value!r}")


def cap(key: str, value):
    """``value`` capped at the dry run's cap of ``key`` when the dry run is on (None, "no limit", becomes the cap; a
    list of counts keeps its distinct capped values); unchanged otherwise, or when ``key`` is not in
    :data:`DRY_RUN_CAPS`.

    >>> cap("epochs", 100)  # the dry run is off here
    100
    """
    if not dry_run() or key not in DRY_RUN_CAPS or isinstance(value, bool):
        return value
    limit = DRY_RUN_CAPS[key]
    if value is None:
        return None if key in LIST_CAPS else limit
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return type(value)(dict.fromkeys(min(v, limit) for v in value))
    if not isinstance(value, (int, float)):
        return value
    return type(value)(min(value, limit))


def budget(table: dict, scale: str) -> dict:
    """A copy of ``table[scale]``, a per-scale dict of budgets, with its loop counts capped under the dry run: the
    one way every per-scale table is read.

    >>> budget({"smoke": {"epochs": 2, "lr": 0.1}, "cpu": {}, "paper": {"epochs": 60, "lr": 0.1}}, "paper")
    {'epochs': 60, 'lr': 0.1}
    """
    entry = table[check_scale(scale)]
    if not isinstance(entry, dict):
        raise TypeError(f"budget() reads a per-scale table of dicts; {scale!r} holds a {type(entry).__name__}")
    return {k: cap(k, v) for k, v in entry.items()}


def budget_value(table: dict, scale: str, key: str):
    """``table[scale]``, a per-scale number (e.g. samples), capped as ``key`` under the dry run."""
    return cap(key, table[check_scale(scale)])
