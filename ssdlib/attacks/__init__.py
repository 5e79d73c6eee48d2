"""Black-box model-inversion attacks; each reaches its target only through :class:`ssdlib.blackbox.BlackBox`."""
from .base import Attack, AttackResult, check_oracle
from .brep import BREP
from .c2f import C2F
from .lokt import LOKT
from .mirror import Mirror
from .rlb import RLB

#: attack name -> class, for configurations that name an attack.
ATTACKS = {"mirror": Mirror, "c2f": C2F, "rlb": RLB, "brep": BREP, "lokt": LOKT}


def build_attack(name: str, prior, *, scale: str = "cpu", **params) -> Attack:
    """The attack called ``name`` (:data:`ATTACKS`) on ``prior`` at ``scale``, with parameter overrides.

    >>> import torch
    >>> from ssdlib import BlackBox
    >>> from ssdlib.priors import Prior
    >>> gen = torch.nn.Sequential(torch.nn.Linear(8, 3 * 4 * 4), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (3, 4, 4)))
    >>> attack = build_attack("mirror", Prior(gen, latent_dim=8, key="toy"), scale="smoke")
    >>> oracle = BlackBox(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)))
    >>> [result] = attack.run(oracle, [1], seed=0)  # reconstruct class 1 through the oracle's answers
    >>> result.target, result.images.shape, result.queries == oracle.queries - result.setup_queries
    (1, torch.Size([2, 3, 4, 4]), True)
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    return ATTACKS[name](prior, scale=scale, **params)


__all__ = ["Attack", "AttackResult", "check_oracle", "Mirror", "C2F", "RLB", "BREP", "LOKT", "ATTACKS", "build_attack"]
