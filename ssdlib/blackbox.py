"""The black-box seam: the only way an attack reaches a target model, as a deployed prediction API would.

A :class:`BlackBox` wraps a classifier and an optional post-processing defense (such as :class:`ssdlib.SSD`) and
answers queries in one of two modes: ``"soft"`` returns probability vectors (what Mirror, C2F and RLB see),
``"hard"`` returns the top-1 label only (what BREP and LOKT see). The model always runs in eval mode without
gradients, every queried image is counted, and an optional budget stops a run with :class:`QueryBudgetExceeded`.

What this seam does and does not enforce. Every query runs the model in eval mode (whatever mode it was left in
elsewhere; the mode is restored afterwards) under ``torch.no_grad``, and answers are detached: no gradient and no
BatchNorm update can flow through an answer. The model and the defense sit in name-mangled attributes
(``_BlackBox__model``), outside the public interface, but Python cannot hide an attribute and the query counter is
a plain attribute too: the black-box discipline of this project's attacks is a convention, checked statically by a
test (nothing under ``ssdlib/attacks`` touches an oracle's private attributes or imports the training code, the
defenses or the private data), not a security boundary against a hostile caller.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

__all__ = ["BlackBox", "QueryBudgetExceeded", "MODES"]

MODES = ("soft", "hard")
Defense = Callable[..., torch.Tensor]


class QueryBudgetExceeded(RuntimeError):
    """A query would take the oracle past its budget; nothing of that query was answered.

    >>> import torch
    >>> oracle = BlackBox(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)), budget=3)
    >>> oracle(torch.rand(4, 3, 8, 8))
    Traceback (most recent call last):
    ssdlib.blackbox.QueryBudgetExceeded: query budget of 3 images exceeded: 0 used, 4 more asked (3 left)
    >>> oracle.queries
    0
    """


class BlackBox:
    """A target classifier behind a prediction API: ``oracle(images)`` gives probabilities or labels, and counts.

    ``defense(probs, inputs=images)`` post-processes the softmax output (e.g. ``SSD``); ``budget`` caps the number of
    images queried over the oracle's life; ``batch_size`` splits large queries. Images are float ``[N, 3, H, W]`` in
    [0, 1]; answers come back detached, on the device of the query (``[N, C]`` float32, or ``[N]`` int64 labels).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    >>> oracle = BlackBox(net, mode="soft", budget=10)
    >>> oracle(torch.rand(4, 3, 8, 8)).shape
    torch.Size([4, 5])
    >>> oracle.queries, oracle.remaining
    (4, 6)
    >>> BlackBox(net, mode="hard")(torch.rand(2, 3, 8, 8)).dtype  # top-1 labels only
    torch.int64
    """

    __slots__ = ("__model", "__defense", "__device", "_mode", "_budget", "_queries", "_calls", "batch_size",
                 "num_classes", "name")

    def __init__(self, model: nn.Module, defense: Defense | None = None, *, mode: Literal["soft", "hard"] = "soft",
                 budget: int | None = None, batch_size: int = 256, device: str | torch.device | None = None,
                 name: str = ""):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if budget is not None and (not isinstance(budget, int) or budget < 0):
            raise ValueError(f"budget must be a non-negative integer or None, got {budget!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if defense is not None and not callable(defense):
            raise TypeError(f"defense must be callable (probs, inputs=...) -> probs, got {type(defense).__name__}")
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
        self.__model = model.eval()
        self.__defense = defense
        self.__device = torch.device(device)
        self._mode, self._budget, self._queries, self._calls = mode, budget, 0, 0
        self.batch_size = batch_size
        self.num_classes = getattr(model, "num_classes", None)
        self.name = name

    # --- what an attacker may know -------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"soft"`` (probability vectors) or ``"hard"`` (top-1 labels)."""
        return self._mode

    @property
    def queries(self) -> int:
        """Images answered so far."""
        return self._queries

    @property
    def calls(self) -> int:
        """Calls to :meth:`query` answered so far (each may hold many images)."""
        return self._calls

    @property
    def budget(self) -> int | None:
        """The most images this oracle answers over its life (None: unlimited)."""
        return self._budget

    @property
    def remaining(self) -> int | None:
        """Images still allowed by the budget (None: unlimited)."""
        return None if self._budget is None else self._budget - self._queries

    def __repr__(self) -> str:
        budget = "unlimited" if self._budget is None else self._budget
        return f"BlackBox(mode={self._mode!r}, queries={self._queries}, budget={budget}, name={self.name!r})"

    def __reduce__(self):
        raise TypeError("a BlackBox cannot be pickled: that would hand its model to the caller")

    # --- answering -----------------------------------------------------------------------------------------
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Answer a batch of images: probabilities ``[N, C]`` (soft) or labels ``[N]`` (hard); counts N queries.

        >>> import torch
        >>> oracle = BlackBox(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)))
        >>> answers = oracle.query(torch.rand(3, 3, 4, 4))
        >>> answers.shape, oracle.queries, oracle.calls
        (torch.Size([3, 2]), 3, 1)
        """
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise ValueError(f"queries must be a float tensor of images, got {getattr(images, 'dtype', type(images))}")
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"queries must be images [N, 3, H, W], got shape {tuple(images.shape)}")
        n = int(images.shape[0])
        if self._budget is not None and self._queries + n > self._budget:
            raise QueryBudgetExceeded(
                f"query budget of {self._budget} images exceeded: {self._queries} used, {n} more asked "
                f"({self.remaining} left)")
        images = images.detach()
        if n and not torch.isfinite(images).all():
            raise ValueError("queries contain NaN or infinite pixels")
        out = []
        model = self.__model
        was_training = model.training
        model.eval()  # every query, not only at construction: a model.train() elsewhere must not reach the answers
        try:
            with torch.no_grad():
                for start in range(0, n, self.batch_size):
                    x = images[start:start + self.batch_size].to(self.__device)
                    probs = torch.softmax(model(x).float(), dim=-1)
                    if self.__defense is not None:
                        probs = self.__defense(probs, inputs=x)
                    out.append(probs.argmax(-1) if self._mode == "hard" else probs.float())
        finally:
            if was_training:
                model.train()
        self._queries += n
        self._calls += 1
        if not out:
            shape = (0,) if self._mode == "hard" else (0, self.num_classes or 0)
            return torch.empty(shape, dtype=torch.int64 if self._mode == "hard" else torch.float32,
                               device=images.device)
        return torch.cat(out).to(images.device).detach()

    __call__ = query
