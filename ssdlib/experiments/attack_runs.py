"""One attack run = (setting, defense, attack, class, seed): a pure function of its configuration, cached.

The configuration names the target and the prior by their cache keys (the caller passes them: the target's
``train_or_load`` key, the prior's ``Prior.key``), the defense by name and parameters, the attack by name and all
its resolved parameters, the class, the seed, and the oracle's mode and budget. :func:`attack_run` stores the
result under ``cache_dir("attacks")``; the attack's shared setup (Mirror's scored pool, C2F's inversion network)
is cached once per (target, defense, prior, setup parameters, seed) under ``cache_dir("attack-setups")``. A crash
or a changed parameter reruns only the runs whose configuration changed. Every run seeds torch's global RNG from
its configuration (and restores it after).

The defense's randomness is part of the experiment. An :class:`OracleFactory` builds a fresh BlackBox for every
run, and a randomised defense (SSD samples its label) is seeded per (experiment seed, run seed, class): the
attack seeds of a row then differ in the attacker's AND the defender's draws, so the spread over seeds covers
both, and that seed (``defense_seed``) is part of the run's cache key. The shared setup gets its own seed.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from ..attacks.base import Attack, AttackResult
from ..blackbox import BlackBox
from ..cache import CacheInfo, cached, config_hash

__all__ = ["OracleFactory", "SETUP", "METRICS", "run_config", "setup_config", "attack_setup", "attack_run",
           "attack_runs"]

#: The ``target`` an :class:`OracleFactory` is asked for when it builds the oracle of a shared setup, and of the
#: metrics' target top-1 (neither belongs to one class).
SETUP, METRICS = "setup", "metrics"


class OracleFactory:
    """Fresh :class:`BlackBox` oracles of one model and defense, the defense seeded per (run seed, class).

    ``make_defense(seed)`` builds the post-processing defense with its random generator seeded by ``seed`` (None:
    a deterministic or no defense). ``oracle = factory(run_seed, target)``; :meth:`defense_seed` is the seed that
    oracle's defense got, which :func:`run_config` puts into the cache key.
    """

    def __init__(self, model, make_defense: Callable[[int], Callable] | None = None, *, mode: str = "soft",
                 name: str = "", seed: int = 0):
        self._model, self._make_defense = model, make_defense
        self.mode, self.name, self.seed = mode, name, int(seed)

    @property
    def randomised(self) -> bool:
        """Whether the oracles' defense draws random numbers (its seed then enters the cache keys)."""
        return self._make_defense is not None

    def defense_seed(self, run_seed: int, target: int | str) -> int | None:
        """The defense seed of the oracle for ``(run_seed, target)``; None without a randomised defense."""
        if not self.randomised:
            return None
        return int(config_hash({"experiment": self.seed, "run": int(run_seed), "target": target}), 16) % 2**63

    def __call__(self, run_seed: int = 0, target: int | str = SETUP) -> BlackBox:
        defense = None
        if self._make_defense is not None:
            defense = self._make_defense(self.defense_seed(run_seed, target))
        return BlackBox(self._model, defense, mode=self.mode, name=self.name)

    def __repr__(self) -> str:
        return f"OracleFactory(name={self.name!r}, mode={self.mode!r}, randomised={self.randomised})"


OracleSource = BlackBox | OracleFactory


def _oracle(source: OracleSource, seed: int, target: int | str) -> BlackBox:
    if isinstance(source, OracleFactory):
        return source(seed, target)
    if not isinstance(source, BlackBox):
        raise TypeError("attack runs query targets only through ssdlib.blackbox.BlackBox (or an OracleFactory of "
                        f"them), got {type(source).__name__}")
    return source


def _defense_seed(source: OracleSource, seed: int, target: int | str) -> int | None:
    return source.defense_seed(seed, target) if isinstance(source, OracleFactory) else None


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


def setup_config(attack: Attack, oracle: BlackBox, *, seed: int = 0, defense_seed: int | None = None,
                 **identity) -> dict:
    """Configuration of an attack's shared setup (independent of the class)."""
    return {"kind": "attack-setup", **_identity(attack, oracle, **identity), "params": attack.setup_params,
            "seed": int(seed), "defense_seed": defense_seed}


def run_config(attack: Attack, oracle: BlackBox, target_class: int, *, seed: int = 0,
               defense_seed: int | None = None, **identity) -> dict:
    """Configuration of one run: identities, every attack parameter, class, seed, the defense's seed, oracle mode
    and budget."""
    return {"kind": "attack-run", **_identity(attack, oracle, **identity), "params": dict(attack.params),
            "class": int(target_class), "seed": int(seed), "defense_seed": defense_seed}


def _seeded(config: dict, fn):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config_hash(config), 16) % 2**63)
        return fn()


def attack_setup(attack: Attack, oracle: OracleSource, *, seed: int = 0, target_key: str, prior_key: str | None = None,
                 setting: str = "", defense: str = "none", defense_params: dict | None = None,
                 cache: bool = True) -> tuple[dict, CacheInfo]:
    """The attack's shared setup for this target, cached (the oracle is queried only when it is computed)."""
    source = oracle
    oracle = _oracle(source, seed, SETUP)
    config = setup_config(attack, oracle, seed=seed, defense_seed=_defense_seed(source, seed, SETUP),
                          target_key=target_key, prior_key=prior_key, setting=setting, defense=defense,
                          defense_params=defense_params)
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
    probe = _oracle(oracle, seed, int(target_class))
    config = run_config(attack, probe, target_class, seed=seed,
                        defense_seed=_defense_seed(oracle, seed, int(target_class)), **identity)

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
    ``oracle`` is one BlackBox shared by all runs, or an :class:`OracleFactory` building a fresh one per run (so
    that a query budget applies per class and a randomised defense is seeded per class)."""
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
