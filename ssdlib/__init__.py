"""ssdlib: the Stealthy Shield Defense against black-box model inversion, and the experiments around it.

The public API: :class:`SSD` (and :func:`estimate_q_table`), the exact solver :func:`waterfill`, the black-box
oracle :class:`BlackBox` through which attacks query a target, and the information measures. See ARCHITECTURE.md
for what each subpackage holds.
"""
from . import paper
from .blackbox import BlackBox, QueryBudgetExceeded
from .defenses.ssd import SSD, DefendedModel, estimate_q_table
from .information import cmi, conditional_mutual_information, entropy, kl_divergence, mutual_information
from .solver import waterfill

__all__ = [
    "SSD", "DefendedModel", "estimate_q_table", "waterfill", "BlackBox", "QueryBudgetExceeded", "paper",
    "cmi", "conditional_mutual_information", "entropy", "kl_divergence", "mutual_information",
]
__version__ = "0.4.0"
