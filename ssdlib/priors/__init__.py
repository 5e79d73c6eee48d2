"""The attacker's generative prior: the :class:`Prior` attacks see (``prior``) and its training on the public
faces (``training``). Its quality measures live in :mod:`ssdlib.metrics.prior_quality`."""
from .external import load_prior
from .prior import Prior, Sampler, save_grid
from .training import LOSSES, PRIOR_RECIPES, PriorTrainingStopped, prior_config, prior_data, train_prior

__all__ = ["Prior", "Sampler", "save_grid", "PRIOR_RECIPES", "LOSSES", "PriorTrainingStopped", "prior_data",
           "prior_config", "train_prior", "load_prior"]
