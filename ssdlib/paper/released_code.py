"""Facts of the authors' released code (github.com/ZhuangQu/Stealthy-Shield-Defense), each with its source.

The code is one function with one set of defaults; its per-setting epsilons are those of the final version's
Table 5, taken from :func:`ssdlib.paper.hyperparameters`, not from the code. The code facts below were read in
``Stealthy_Shield_Defense.py`` (both stored versions, commits 5c1009b and 08fe433) and ``code.py`` (commit
f16fab0) through this project's code index; they agree with what the previous version of this module stated
about the code.
"""
from __future__ import annotations

from .hyperparameters import hyperparameters
from .labels import SETTINGS

REPOSITORY = "https://github.com/ZhuangQu/Stealthy-Shield-Defense"
_CODE = f"{REPOSITORY}, Stealthy_Shield_Defense.py and code.py"

AUTHORS_CODE = {
    "repository": REPOSITORY,
    "T": 0.1,
    "eps_default": 0.5,
    "eps": {s: hyperparameters(s, "iclr2025")["ssd_eps"] for s in SETTINGS},
    "entropy_unit": "nats",
    "entropy_normalized": False,
    "temperature_applies_to": "probabilities",
    "returns_q_inside_budget": True,
    "q_table": "a |Y| x |Y| matrix whose row y is q^y",
}
AUTHORS_CODE_SOURCES = {
    "repository": "the repository's readme.md (links the OpenReview page and the ICLR 2025 poster)",
    "T": f"{_CODE}: default argument T=0.1; also the final version's Table 5 (T = 0.1 in every setting)",
    "eps_default": f"{_CODE}: default argument eps=0.5 (one value, no per-setting table in the code)",
    "eps": "final version, Table 5 (0.35, 0.5, 0.8); not in the code",
    "entropy_unit": f"{_CODE}: H = -sum f log f with the natural log; shared/paper/iclr2025-notes.md",
    "entropy_normalized": f"{_CODE}: H is not divided by log|Y|; shared/paper/iclr2025-notes.md",
    "temperature_applies_to": f"{_CODE}: the label is drawn from softmax(f / T) with f the output probability "
                              "vector, not the logits; shared/paper/iclr2025-notes.md",
    "returns_q_inside_budget": f"{_CODE}: rows with ||f - q^y||_1 <= eps * H get q^y itself",
    "q_table": f"{_CODE}: the argument holding q^y has shape [class_num, class_num] and is indexed by the label",
}
