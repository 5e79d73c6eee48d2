"""ssdlib: the Stealthy Shield Defense against black-box model inversion, and the experiments around it."""
from .defense import SSD, DefendedModel, estimate_q_table
from .information import cmi, conditional_mutual_information, entropy, kl_divergence, mutual_information
from .solver import waterfill

__all__ = [
    "SSD", "DefendedModel", "estimate_q_table", "waterfill",
    "cmi", "conditional_mutual_information", "entropy", "kl_divergence", "mutual_information",
]
__version__ = "0.1.0"
