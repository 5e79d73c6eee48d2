"""Planners: the grid jobs behind each notebook of the book, from ``notebooks/scales.yml`` and ``_toc.yml``.

Each planner reads a notebook's parameters exactly as the runner injects them (the notebook's own defaults, then
``common``, its ``parameters``, its scale's entry and ``-p`` overrides) and mirrors the library calls the notebook
makes, so that the jobs fill the very cache entries the notebook then reads. :func:`plan_attack_table` mirrors
:func:`ssdlib.experiments.attacks.attack_table` (and :func:`plan_attack_variants` its variant check), call for call.
Notebooks whose work is cheap or not cached (theory, solver, data) have no jobs: they compute as they render.
A :class:`Plan` is an ordered, de-duplicated set of jobs whose dependencies come first.
"""
from __future__ import annotations

import ast
import json
from collections import Counter
from typing import Iterable

from ..scales import budget, check_scale
from .jobs import KINDS, Job

__all__ = ["Plan", "notebook_parameters", "plan_notebook", "plan_book", "plan_attack_table", "plan_attack_variants",
           "PLANNERS", "NO_JOBS", "unplanned"]


class Plan:
    """Jobs in an order where every job comes after the jobs it needs; adding a job twice keeps one."""

    def __init__(self, jobs: Iterable[Job] = ()):
        self._jobs: dict[str, Job] = {}
        self.gathers: list[dict] = []  # the notebook calls that read the jobs' artifacts (see tests)
        self.extend(jobs)

    def add(self, job: Job) -> str:
        missing = [d for d in job.deps if d not in self._jobs]
        if missing:
            raise ValueError(f"job {job.name} needs {missing}, which are not in the plan yet (add them first)")
        self._jobs.setdefault(job.name, job)
        return job.name

    def extend(self, jobs: Iterable[Job]) -> Plan:
        for job in jobs:
            self.add(job)
        return self

    def merge(self, other: Plan) -> Plan:
        self.extend(other.jobs)
        self.gathers.extend(g for g in other.gathers if g not in self.gathers)
        return self

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self):
        return iter(self.jobs)

    def __getitem__(self, name: str) -> Job:
        return self._jobs[name]

    def counts(self) -> dict[str, int]:
        """Jobs per kind, in :data:`KINDS` order."""
        c = Counter(j.kind for j in self._jobs.values())
        return {k: c[k] for k in KINDS if c[k]}

    def to_json(self) -> str:
        return json.dumps([j.to_dict() for j in self.jobs], indent=1)

    def __repr__(self) -> str:
        return f"Plan({len(self)} jobs: {self.counts()})"


# --- the notebooks' parameters ----------------------------------------------------------------------------------
def _defaults(source) -> dict:
    """The literal assignments of a notebook's cell tagged ``parameters`` (its defaults)."""
    nb = json.loads(source.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            out = {}
            for node in ast.parse("".join(cell["source"])).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
            return out
    return {}


def notebook_parameters(name: str, scale: str, overrides: dict | None = None, profiles: dict | None = None) -> dict:
    """What notebook ``name`` (a ``_toc.yml`` entry) runs with at ``scale``: its defaults, then what the runner
    injects (:func:`ssdlib.reporting.runner.parameters_for`)."""
    from ..reporting import runner
    profiles = runner.load_profiles() if profiles is None else profiles
    return {**_defaults(runner.source_of(name, profiles)),
            **runner.parameters_for(name, scale, profiles, overrides)}


# --- job builders -------------------------------------------------------------------------------------------
def _base(scale: str, seed: int, root, device) -> dict:
    return {"scale": check_scale(scale), "seed": int(seed), "root": None if root is None else str(root),
            "device": None if device is None else str(device)}


def _targets(plan: Plan, name: str, defense: str, base: dict, train_seed: int | None = None) -> str:
    from ..experiments.settings import setting
    family = setting(name).family
    bb = plan.add(Job("backbone", {**base, "family": family}, label=f"{family}"))
    params = {**base, "setting": name, "defense": defense}
    if train_seed is not None:
        params["train_seed"] = int(train_seed)
    label = f"{name}/{defense}" + (f"/t{train_seed}" if train_seed is not None else "")
    return plan.add(Job("target", params, (bb,), label=label))


def _dp_target(plan: Plan, name: str, row: str, base: dict) -> str:
    from ..experiments.dpsgd import DP_ROWS
    from ..experiments.settings import setting
    family = setting(name).family
    bb = plan.add(Job("backbone", {**base, "family": family}, label=f"{family}"))
    return plan.add(Job("dp-target", {**base, "setting": name, "epsilon": float(DP_ROWS[row])}, (bb,),
                        label=f"{name}/{row}"))


def _prior(plan: Plan, base: dict) -> str:
    return plan.add(Job("prior", dict(base), label="prior"))


def _evaluator(plan: Plan, dataset: str, base: dict) -> str:
    return plan.add(Job("evaluator", {**base, "dataset": dataset}, label=dataset))


def _calibration(plan: Plan, name: str, variant: str, base: dict) -> str:
    deps = (_targets(plan, name, "none", base), _prior(plan, base))
    return plan.add(Job("calibration", {**base, "setting": name, "variant": variant}, deps, label=f"{name}/{variant}"))


def _row_model(plan: Plan, name: str, row: str, base: dict) -> tuple[str, ...]:
    """The jobs an oracle of ``row`` needs: its target (the undefended one for SSD rows and any other row that
    post-processes the undefended model's outputs) and, for the calibrated row, its temperature. An unknown row is
    refused by the job that builds its oracle (``oracle_factory``), with its configuration."""
    from ..defenses import TRAINING_DEFENSES
    from ..experiments import attacks as A
    if row in TRAINING_DEFENSES:
        return (_targets(plan, name, row, base),)
    if row in A.DP_SGD_ROWS:
        return (_dp_target(plan, name, row, base),)
    deps = (_targets(plan, name, "none", base),)
    if row == A.CALIBRATED:
        deps += (_calibration(plan, name, A.CALIBRATED_BASE, base),)
    return deps


def _num_classes(name: str, scale: str, seed: int, root) -> int:
    from ..experiments import targets as T
    from ..experiments.settings import setting
    return T.private_data(setting(name).dataset, scale, seed=seed, root=root).num_classes


def _runs(plan: Plan, name: str, row: str, attack: str, attack_seed: int, classes: list[int], base: dict,
          overrides: dict | None = None, tag: str = "") -> None:
    shared = {**base, "setting": name, "row": row, "attack": attack, "attack_seed": int(attack_seed)}
    if overrides:
        shared["overrides"] = dict(overrides)
    deps = (_prior(plan, base), *_row_model(plan, name, row, base))
    label = f"{name}/{row}/{attack}{tag}/s{attack_seed}"
    setup = plan.add(Job("attack-setup", shared, deps, label=label))
    for c in classes:
        plan.add(Job("attack-run", {**shared, "class": int(c)}, (setup,), label=f"{label}/c{c}"))


def plan_attack_table(name: str, scale: str, attack: str, *, rows=None, seeds=(0,), extra_seeds=(1,),
                      extra_seed_rows=("none", "ssd"), classes: int | None = None, device=None, seed: int = 0,
                      root=None, plan: Plan | None = None) -> Plan:
    """The jobs of ``attack_table(name, scale, attack, ...)`` (same arguments): the evaluator, the prior, each row's
    target (and calibrated temperature), the white-box ceiling, and per row and attack seed the shared setup and
    one run per class."""
    from ..experiments import attacks as A
    from ..experiments.settings import setting
    plan = Plan() if plan is None else plan
    rows = A.ROWS if rows is None else rows
    base = _base(scale, seed, root, device)
    protocol = budget(A.PROTOCOL, scale)
    targets = list(range(min(classes or protocol["classes"], _num_classes(name, scale, seed, root))))
    _evaluator(plan, setting(name).dataset, base)
    prior = _prior(plan, base)
    for row in rows:
        for s in (*seeds, *(extra_seeds if row in extra_seed_rows else ())):
            _runs(plan, name, row, attack, s, targets, base)
    if "none" in rows:
        none = _targets(plan, name, "none", base)
        plan.add(Job("ceiling", {**base, "setting": name, "classes": len(targets),
                                 "per_class": protocol["per_class"]}, (none, prior),
                     label=f"{name}/{len(targets)}x{protocol['per_class']}"))
    plan.gathers.append({"call": "attack_table", "args": [name, scale, attack],
                         "kwargs": {"rows": list(rows), "seeds": list(seeds), "extra_seeds": list(extra_seeds),
                                    "extra_seed_rows": list(extra_seed_rows), "classes": classes, "device": device,
                                    "seed": seed, "root": base["root"]}})
    return plan


def plan_attack_variants(name: str, scale: str, attack: str, *, seed: int = 0, classes: int | None = None,
                         device=None, root=None, plan: Plan | None = None) -> Plan:
    """The jobs of ``attack_variants(name, scale, attack, ...)``: the undefended target attacked with the scale's
    parameters and with each variant of :data:`ssdlib.experiments.attacks.VARIANTS`."""
    from ..attacks import ATTACKS
    from ..experiments import attacks as A
    from ..experiments.settings import setting
    if attack not in A.VARIANTS:
        raise ValueError(f"no variants defined for attack {attack!r}; known: {', '.join(A.VARIANTS)}")
    plan = Plan() if plan is None else plan
    base = _base(scale, seed, root, device)
    protocol = budget(A.PROTOCOL, scale)
    targets = list(range(min(classes or protocol["classes"], _num_classes(name, scale, seed, root))))
    _evaluator(plan, setting(name).dataset, base)
    cls = ATTACKS[attack]
    default = {**budget(cls.EFFORT, scale), **cls.DEFAULTS, "top_k": protocol["per_class"]}
    for label, grow in (("default", lambda p: {}), *A.VARIANTS[attack].items()):
        overrides = grow(default)
        tag = "" if not overrides else "/" + ",".join(f"{k}={v}" for k, v in overrides.items())
        _runs(plan, name, "none", attack, seed, targets, base, overrides=overrides, tag=tag)
    plan.gathers.append({"call": "attack_variants", "args": [name, scale, attack],
                         "kwargs": {"seed": seed, "classes": classes, "device": device, "root": base["root"]}})
    return plan


# --- per notebook -------------------------------------------------------------------------------------------
def _attack_page(p: dict, plan: Plan) -> None:
    for s in p["settings"]:
        plan_attack_table(s, p["scale"], p["attack"], rows=p["rows"], seeds=p["seeds"],
                          extra_seeds=p["extra_seeds"], classes=p.get("classes"), device=p.get("device"),
                          seed=p["seed"], root=p.get("data_root"), plan=plan)
    from ..experiments import attacks as A
    if p.get("variant_classes") and p["attack"] in A.VARIANTS:
        for s in p["settings"]:
            plan_attack_variants(s, p["scale"], p["attack"], seed=p["seeds"][0], classes=p["variant_classes"],
                                 device=p.get("device"), root=p.get("data_root"), plan=plan)


def _table1(p: dict, plan: Plan) -> None:
    for attack in p["attacks"]:
        for s in p["settings"]:
            plan_attack_table(s, p["scale"], attack, rows=p["rows"], seeds=p["seeds"], extra_seeds=p["extra_seeds"],
                              device=p.get("device"), seed=p["seed"], root=p.get("data_root"), plan=plan)


def _table2(p: dict, plan: Plan) -> None:
    from ..experiments import attacks as A
    for attack in p["attacks"]:
        for s in p.get("attack_settings", {}).get(attack, p["settings"]):
            plan_attack_table(s, p["scale"], attack, rows=p.get("attack_rows", {}).get(attack, p["rows"]),
                              seeds=p["seeds"], extra_seeds=p["extra_seeds"], device=p.get("device"),
                              seed=p["seed"], root=p.get("data_root"), plan=plan)
    figure_classes = [c for c in p["figure_classes"] if c < budget(A.PROTOCOL, p["scale"])["classes"]]
    fig_rows = [r for r in p["rows"] if r != "ssd_cal"]
    for attack in p["figure_attacks"]:
        plan_attack_table(p["figure_setting"], p["scale"], attack, rows=fig_rows, seeds=[p["seeds"][0]],
                          extra_seeds=[], classes=max(figure_classes) + 1, device=p.get("device"), seed=p["seed"],
                          root=p.get("data_root"), plan=plan)


def _table7(p: dict, plan: Plan) -> None:
    from ..experiments import attacks as A
    rows = ["none", "ssd", A.TRAIN_Q]
    for attack in p["attacks"]:
        plan_attack_table(p["setting"], p["scale"], attack, rows=rows, seeds=p["seeds"], extra_seeds=p["extra_seeds"],
                          extra_seed_rows=rows, device=p.get("device"), seed=p["seed"], root=p.get("data_root"),
                          plan=plan)


def _targets_page(p: dict, plan: Plan) -> None:
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    for d in p["defenses"]:
        _targets(plan, p["setting"], d, base)
    for t in p.get("spread_seeds") or []:
        _targets(plan, p["setting"], "none", base, train_seed=t)


def _utility(p: dict, plan: Plan) -> None:
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    for s in p["settings"]:
        for d in p["defenses"]:
            _targets(plan, s, d, base)
        for t in p.get("spread_seeds") or []:
            _targets(plan, s, "none", base, train_seed=t)


def _prior_page(p: dict, plan: Plan) -> None:
    _prior(plan, _base(p["scale"], p["seed"], p.get("data_root"), p.get("device")))


def _evaluation(p: dict, plan: Plan) -> None:
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    for d in p["datasets"]:
        _evaluator(plan, d, base)


def _mechanism(p: dict, plan: Plan) -> None:
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    _prior(plan, base)
    for s in p["settings"]:
        for row in p["rows"]:
            _row_model(plan, s, row, base)
        for variant in ("ssd", "ssd_code"):
            _calibration(plan, s, variant, base)


def _baselines(p: dict, plan: Plan) -> None:
    """The second block: each setting's undefended and SSD rows, every output perturbation, and the DP-SGD targets
    of ``dp_settings``, under each of ``attacks`` (the perturbations' matched parameters compute as the page renders:
    a few forward passes)."""
    from ..experiments import attacks as A
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    for s in p.get("dp_settings") or []:
        for row in A.DP_SGD_ROWS:
            _dp_target(plan, s, row, base)
    for attack in p["attacks"]:
        for s in p["settings"]:
            rows = ["none", "ssd", *p["perturbations"], *(A.DP_SGD_ROWS if s in (p.get("dp_settings") or []) else ())]
            plan_attack_table(s, p["scale"], attack, rows=rows, seeds=[0],
                              extra_seeds=(p.get("extra_seeds") or {}).get(attack, []), device=p.get("device"),
                              seed=p["seed"], root=p.get("data_root"), plan=plan)


def _tsne(p: dict, plan: Plan) -> None:
    """Figure 1: the undefended target's outputs with and without SSD, and the prior's samples it scores."""
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    _targets(plan, p["setting"], "none", base)
    _prior(plan, base)


def _table5(p: dict, plan: Plan) -> None:
    """Table 5 times the undefended targets (the timing itself is measured as the page renders, never cached)."""
    base = _base(p["scale"], p["seed"], p.get("data_root"), p.get("device"))
    for s in p["settings"]:
        _targets(plan, s, "none", base)


def _ablation_points(plan: Plan, name: str, attack: str, points, classes: int, seeds, base: dict) -> None:
    """The jobs of ``ablations.attack_points``: the undefended row and SSD at each point, per attack seed."""
    from ..experiments import ablations as AB
    from ..experiments.settings import setting
    _evaluator(plan, setting(name).dataset, base)
    for s in seeds:
        _runs(plan, name, "none", attack, s, list(range(classes)), base)
    deps = (_prior(plan, base), _targets(plan, name, "none", base))
    for point in points:
        shared = {**base, "setting": name, "row": "ssd", "attack": attack, "point": dict(point)}
        for s in seeds:
            label = f"{name}/{AB.point_label(point)}/{attack}/s{s}"
            setup = plan.add(Job("attack-setup", {**shared, "attack_seed": int(s)}, deps, label=label))
            for c in range(classes):
                plan.add(Job("attack-run", {**shared, "attack_seed": int(s), "class": c}, (setup,),
                             label=f"{label}/c{c}"))


def _ablation_classes(name: str, p: dict, classes) -> int:
    from ..experiments import ablations as AB
    grid = budget(AB.GRIDS, p["scale"])
    return min(classes or grid["classes"], _num_classes(name, p["scale"], p["seed"], p.get("data_root")))


def _ablations(p: dict, plan: Plan) -> None:
    """Figure 3: BREP over the T grid and Mirror over the eps grid (both budgets), and the training-time targets
    whose Avg L1 the figure marks."""
    from ..defenses import TRAINING_DEFENSES
    from ..experiments import ablations as AB
    name, scale = p["setting"], p["scale"]
    base = _base(scale, p["seed"], p.get("data_root"), p.get("device"))
    seeds = budget(AB.GRIDS, scale)["seeds"] if p.get("seeds") is None else p["seeds"]
    classes = _ablation_classes(name, p, p.get("classes"))
    _ablation_points(plan, name, "brep", AB.temperature_grid(name, scale, p.get("temperatures")), classes, seeds,
                     base)
    _ablation_points(plan, name, "mirror", AB.distortion_grid(name, scale, p.get("epsilons")), classes, seeds, base)
    for d in TRAINING_DEFENSES:
        _targets(plan, name, d, base)


def _frontier(p: dict, plan: Plan) -> None:
    """The frontier reads every attack page's table (first attack seed) and the utility of every row, and SSD's
    sweep from the ablation page (Mirror over eps with the adaptive budget, BREP over T, without "NO")."""
    from ..defenses import TRAINING_DEFENSES
    from ..experiments import ablations as AB
    scale = p["scale"]
    base = _base(scale, p["seed"], p.get("data_root"), p.get("device"))
    for attack in [*p["soft_attacks"], *p["label_attacks"]]:
        for s in p.get("attack_settings", {}).get(attack, p["settings"]):
            if s in p["settings"]:
                plan_attack_table(s, scale, attack, rows=p.get("attack_rows", {}).get(attack, p["rows"]),
                                  extra_seeds=(), device=p.get("device"), seed=p["seed"], root=p.get("data_root"),
                                  plan=plan)
    for s in p["settings"]:
        for d in TRAINING_DEFENSES:
            _targets(plan, s, d, base)
    sweep = p.get("sweep_setting")
    if sweep in p["settings"]:
        seeds, classes = budget(AB.GRIDS, scale)["seeds"], _ablation_classes(sweep, p, None)
        if "mirror" in p["soft_attacks"]:
            _ablation_points(plan, sweep, "mirror", AB.distortion_grid(sweep, scale, budgets=("adaptive",)), classes,
                             seeds, base)
        if "brep" in p["label_attacks"]:
            points = [g for g in AB.temperature_grid(sweep, scale) if g["T"] != AB.NO]
            _ablation_points(plan, sweep, "brep", points, classes, seeds, base)


def _adaptive(p: dict, plan: Plan) -> None:
    """The adaptive attacker's page: the undefended target and the prior (the recovery curves compute as the page
    renders, in seconds), and with ``mirror_classes`` Mirror behind the averaging attacker: the undefended row
    first, then one job per variant (Mirror alone and averaged)."""
    from ..experiments import adaptive as AD
    from ..experiments.settings import setting
    name, scale = p["setting"], p["scale"]
    base = _base(scale, p["seed"], p.get("data_root"), p.get("device"))
    deps = (_targets(plan, name, "none", base), _prior(plan, base), _evaluator(plan, setting(name).dataset, base))
    if not p.get("mirror_classes"):
        return
    shared = {**base, "setting": name, "variant": p["variant"], "images": int(p["images"]),
              "classes": int(p["mirror_classes"]), "repeats": int(p["mirror_repeats"]),
              "grey_levels": int(p["mirror_grey_levels"])}
    first = plan.add(Job("adaptive-mirror", {**shared, "spec": None}, deps, label=f"{name}/undefended"))
    for v in AD.variants(p["ks"], p["literal_ks"]):
        if v.randomness != "robust" or (v.offsets and v.k in p["mirror_ks"]):
            spec = {"randomness": v.randomness, "k": v.k, "offsets": v.offsets}
            plan.add(Job("adaptive-mirror", {**shared, "spec": spec}, (first,), label=f"{name}/{v.label}"))


#: Notebook sources whose work is cheap or not cached: they compute as they render, and have no jobs (Tables 10/11
#: run only at `paper` with a prior the user supplies, and cache nothing).
NO_JOBS = ("theory", "solver", "data", "table10")
#: notebook source -> planner of its jobs (sources in neither have no planner yet: they compute as they render, and
#: ``python -m ssdlib.grid plan`` lists them).
PLANNERS = {"attack": _attack_page, "table1": _table1, "table2": _table2, "table7": _table7,
            "targets": _targets_page, "utility": _utility, "prior": _prior_page, "evaluation": _evaluation,
            "mechanism": _mechanism, "baselines": _baselines, "tsne": _tsne, "table5": _table5,
            "ablations": _ablations, "frontier": _frontier, "adaptive": _adaptive}


def plan_notebook(name: str, scale: str, *, overrides: dict | None = None, profiles: dict | None = None,
                  plan: Plan | None = None) -> Plan:
    """The jobs of notebook ``name`` (a ``_toc.yml`` entry) at ``scale``, with the runner's ``-p`` overrides."""
    from ..reporting import runner
    profiles = runner.load_profiles() if profiles is None else profiles
    source = runner.source_of(name, profiles).stem
    plan = Plan() if plan is None else plan
    if source in PLANNERS:
        PLANNERS[source](notebook_parameters(name, scale, overrides, profiles), plan)
    return plan


def plan_book(scale: str, *, only: Iterable[str] | None = None, overrides: dict | None = None) -> dict[str, Plan]:
    """``{notebook: Plan}`` for every notebook of ``_toc.yml`` (or ``only`` those), in book order; merge them with
    :meth:`Plan.merge` to run the whole book (shared jobs are kept once)."""
    from ..reporting import runner
    profiles = runner.load_profiles()
    names = runner.toc_notebooks()
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"not in _toc.yml: {unknown}; known: {names}")
        names = [n for n in names if n in set(only)]
    return {n: plan_notebook(n, scale, overrides=overrides, profiles=profiles) for n in names}


def unplanned(names: Iterable[str] | None = None) -> list[str]:
    """The notebooks of ``_toc.yml`` (or ``names``) that have no planner yet although they may compute cached work."""
    from ..reporting import runner
    profiles = runner.load_profiles()
    names = runner.toc_notebooks() if names is None else names
    return [n for n in names if runner.source_of(n, profiles).stem not in (*PLANNERS, *NO_JOBS)]
