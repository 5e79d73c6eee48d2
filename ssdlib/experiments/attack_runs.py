"""One attack run = (setting, defense, attack, class, seed): a pure function of its configuration, cached.

The configuration names the target and the prior by their cache keys (the caller passes them: the target's
``train_or_load`` key, the prior's ``Prior.key``), the defense by name and parameters, the attack by name and all
its resolved parameters, the class, the seed, and the oracle's mode and budget. :func:`attack_run` stores the
result under ``cache_dir("attacks")``; the attack's shared setup (Mirror's scored pool, C2F's inversion network)
is cached once per (target, defense, prior, setup parameters, seed) under ``cache_dir("attack-setups")``. A crash
or a changed parameter reruns only the runs whose configuration changed. Every run seeds torch's global RNG from
its configuration (and restores it after). A defense with its own random generator (SSD's default
``randomness="generator"``) answers according to that generator's state: pass an oracle *factory* (a zero-argument
callable returning a fresh BlackBox and defense) so that every run starts from the same state, whatever ran before.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..attacks.base import Attack, AttackResult
from ..blackbox import BlackBox
from ..cache import CacheInfo, cached, config_hash

__all__ = ["run_config", "setup_config", "attack_setup", "attack_run", "attack_runs"]

OracleSource = BlackBox | Callable[[], BlackBox]


def _oracle(source: OracleSource) -> BlackBox:
    oracle = source() if callable(source) and not isinstance(source, BlackBox) else source
    if not isinstance(oracle, BlackBox):
        raise TypeError(f"attack runs query targets only through ssdlib.blackbox.BlackBox, got {type(oracle).__name__}")
    return oracle


def _identity(attack: Attack, oracle: BlackBox, *, target_key: str, prior_key: str | None, setting: str,
              defense: str, defense_params: dict | None) -> dict:
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be a ssdlib.attacks.Attack, got {type(attack).__name__}")
    if not target_key:
        raise ValueError("target_key must name the attacked model (e.g. the key train_or_load returns)")
    rep = getattr(attack, "representation", None)
    return {"setting": setting, "defense": defense, "defense_params": dict(defense_params or {}),
            "target": str(target_key), "prior": str(prior_key or attack.prior.key), "attack": attack.name,
            "representation": None if rep is None else type(rep).__name__,
            "oracle": {"mode": oracle.mode, "budget": oracle.budget}}


def setup_config(attack: Attack, oracle: BlackBox, *, seed: int = 0, **identity) -> dict:
    """Configuration of an attack's shared setup (independent of the class)."""
    return {"kind": "attack-setup", **_identity(attack, oracle, **identity), "params": attack.setup_params,
            "seed": int(seed)}


def run_config(attack: Attack, oracle: BlackBox, target_class: int, *, seed: int = 0, **identity) -> dict:
    """Configuration of one run: identities, every attack parameter, class, seed, oracle mode and budget."""
    return {"kind": "attack-run", **_identity(attack, oracle, **identity), "params": dict(attack.params),
            "class": int(target_class), "seed": int(seed)}


def _seeded(config: dict, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config_hash(config), 16) % 2**63)
        return fn()


def attack_setup(attack: Attack, oracle: OracleSource, *, seed: int = 0, target_key: str, prior_key: str | None = None,
                 setting: str = "", defense: str = "none", defense_params: dict | None = None,
                 cache: bool = True) -> tuple[dict, CacheInfo]:
    """The attack's shared setup for this target, cached (the oracle is queried only when it is computed)."""
    source = oracle
    oracle = _oracle(source)
    config = setup_config(attack, oracle, seed=seed, target_key=target_key, prior_key=prior_key, setting=setting,
                          defense=defense, defense_params=defense_params)
    return cached("attack-setups", config, lambda _: _seeded(config, lambda: attack.setup(oracle, seed=seed)),
                  name=f"{attack.name}-{setting or 'target'}-{defense}", enabled=cache)


def attack_run(attack: Attack, oracle: OracleSource, target_class: int, *, seed: int = 0, target_key: str,
               prior_key: str | None = None, setting: str = "", defense: str = "none",
               defense_params: dict | None = None, setup: dict | Callable[[], dict] | None = None,
               cache: bool = True) -> tuple[AttackResult, CacheInfo]:
    """Attack one class (cached). The setup is ``setup`` (a dict, or a callable giving it when the run must be
    computed), else :func:`attack_setup`; a cached run touches neither the setup nor the oracle."""
    identity = dict(target_key=target_key, prior_key=prior_key, setting=setting, defense=defense,
                    defense_params=defense_params)
    probe = _oracle(oracle)
    config = run_config(attack, probe, target_class, seed=seed, **identity)

    def compute(_):
        if setup is None:
            shared, _info = attack_setup(attack, oracle, seed=seed, cache=cache, **identity)
        else:
            shared = setup() if callable(setup) else setup
        result = _seeded(config, lambda: attack.attack_class(probe, int(target_class), shared, seed=seed))
        return {"result": result.to_dict(), "seconds": result.seconds}

    payload, info = cached("attacks", config, compute,
                           name=f"{attack.name}-{setting or 'target'}-{defense}-c{int(target_class)}", enabled=cache)
    return AttackResult.from_dict(payload["result"]), info


def attack_runs(attack: Attack, oracle: OracleSource, classes: Iterable[int], *, seed: int = 0, target_key: str,
                prior_key: str | None = None, setting: str = "", defense: str = "none",
                defense_params: dict | None = None, cache: bool = True, progress: bool = True) -> list[AttackResult]:
    """:func:`attack_run` for each class, the setup computed (or loaded) at most once and only if a run needs it.
    ``oracle`` is one BlackBox shared by all runs, or a zero-argument callable returning a fresh one per run (so
    that a query budget applies per class)."""
    identity = dict(target_key=target_key, prior_key=prior_key, setting=setting, defense=defense,
                    defense_params=defense_params)
    memo: dict = {}

    def shared() -> dict:
        if "setup" not in memo:
            memo["setup"] = attack_setup(attack, oracle, seed=seed, cache=cache, **identity)[0]
        return memo["setup"]

    return [attack_run(attack, oracle, c, seed=seed, setup=shared, cache=cache, **identity)[0]
            for c in tqdm([int(c) for c in classes], desc=f"{attack.name} {setting} {defense}".strip(),
                          disable=not progress)]
