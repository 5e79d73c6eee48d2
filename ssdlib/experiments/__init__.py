"""The pipeline behind the book's chapters: settings, target models, evaluators, and each chapter's experiment
(solver, theory, utility; the attacks with their issue). Notebooks call these functions and only narrate."""
from .settings import (PRETRAIN_LIMITS, PRETRAIN_RECIPES, PRIVATE_LIMITS, PROJECT_CHOICES, RECIPES, SETTINGS, SSD_VARIANT_TITLES,
                       SSD_VARIANTS, Setting, defense_params, pretrain_recipe, recipe, setting, ssd_params)
from .targets import (default_config, pretrain_public, pretraining_data, private_data, public_backbone, seed_spread,
                      train_target)

__all__ = ["SETTINGS", "Setting", "setting", "recipe", "pretrain_recipe", "RECIPES", "PRETRAIN_RECIPES", "PRIVATE_LIMITS", "PRETRAIN_LIMITS",
           "default_config", "public_backbone", "defense_params", "ssd_params", "SSD_VARIANTS", "SSD_VARIANT_TITLES",
           "PROJECT_CHOICES", "pretrain_public", "pretraining_data", "private_data", "seed_spread",
           "train_target"]
