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
    """The attack called ``name`` (:data:`ATTACKS`) on ``prior`` at ``scale``, with parameter overrides."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACKS)}")
    return ATTACKS[name](prior, scale=scale, **params)


__all__ = ["Attack", "AttackResult", "check_oracle", "Mirror", "C2F", "RLB", "BREP", "LOKT", "ATTACKS", "build_attack"]
