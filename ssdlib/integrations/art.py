"""SSD as a postprocessing defense of IBM's Adversarial Robustness Toolbox (ART 1.20, the extra ``ssdlib[art]``).

:class:`SSDPostprocessor` is an ``art.defences.postprocessor.Postprocessor``: attach it to any ART estimator
(``BlackBoxClassifier(..., postprocessing_defences=[post])``, ``PyTorchClassifier(...)``) and every ``predict``
releases SSD's answers. Three decisions, each forced by ART's interface:

* **Fitting.** ART never calls a postprocessor's ``fit``: fit it yourself, ``post.fit(preds, y)`` on held-out
  predictions and their labels (q^y, :func:`ssdlib.estimate_q_table`), or pass ``q_table``, before attaching it.
  An unfitted postprocessor refuses to answer.
* **Logits.** ART hands over float32 rows and, through ``PyTorchClassifier``, the raw logits unless the model ends
  in a softmax. A row is read as probabilities when it is finite, non-negative and sums to 1 within
  :data:`SUM_TOLERANCE`; any other row is read as logits and goes through a softmax first (``logits="softmax"``,
  the default) or is refused (``logits="raise"``). Either way the answer is a defended probability vector, so a
  logits model behind this postprocessor answers probabilities (its argmax is unchanged by the softmax).
* **Randomness.** ART passes no inputs to a postprocessor, so SSD's label draw cannot be seeded from the query as
  in :class:`ssdlib.SSD`'s hash mode. It is seeded from a keyed hash (BLAKE2b, key ``hash_key``, a secret drawn per
  instance unless given) of the row exactly as ART hands it over: the same prediction row always gets the same
  answer, so repeating a query gives an attacker nothing to average (the paper's Appendix H), a batch answers as
  its rows one by one, and two inputs with bit-identical predictions share their answer. The hash reads bits: a
  model whose last bits depend on the batch a query arrives in (matrix kernels do) can draw differently for the
  same input in another batch.

ART applies postprocessing in ``predict`` only: loss and class gradients skip it (ART's documented behaviour), so
gradient-based ART attacks (e.g. ``MIFace``) on a ``PyTorchClassifier`` never see SSD; black-box ones that call
``predict`` (``CopycatCNN``, ``KnockoffNets``, ``MembershipInferenceBlackBox``) do.
"""
from __future__ import annotations

import secrets

import numpy as np
import torch

try:
    from art.defences.postprocessor import Postprocessor
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError("ssdlib.integrations.art needs the Adversarial Robustness Toolbox: "
                      "pip install 'ssdlib[art]' (or adversarial-robustness-toolbox==1.20.*)") from err

from ..defenses.ssd import ESTIMATORS, SSD, estimate_q_table

__all__ = ["SSDPostprocessor", "probability_rows", "SUM_TOLERANCE"]

#: How far from 1 a row's sum may be for the row to be read as probabilities (ART's float32 softmax rows).
SUM_TOLERANCE = 1e-3
LOGITS = ("softmax", "raise")


def probability_rows(preds: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``preds`` [N, C] that are probability vectors (finite, >= 0, sum 1 within
    :data:`SUM_TOLERANCE`); the others are read as logits.

    >>> probability_rows(np.array([[0.2, 0.8], [2.0, -1.0], [0.5, 0.5001]], dtype=np.float32)).tolist()
    [True, False, True]
    """
    preds = np.asarray(preds)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(preds).all(-1)
        return finite & (preds >= 0).all(-1) & (np.abs(preds.sum(-1, dtype=np.float64) - 1.0) <= SUM_TOLERANCE)


class SSDPostprocessor(Postprocessor):
    """SSD behind an ART estimator: ``post.fit(preds, y)`` estimates q^y, ``post(preds)`` defends ``[N, C]`` rows.

    ``T``, ``eps`` and ``entropy`` are :class:`ssdlib.SSD`'s (``T`` required); ``estimator`` chooses how ``fit``
    estimates q^y; ``logits`` what happens to rows that are not probabilities; ``hash_key`` keys the per-row
    seeding (see the module docstring). All of them can be changed with ART's ``set_params``.

    >>> import numpy as np
    >>> from art.estimators.classification import BlackBoxClassifier
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(300, 5)) * 3
    >>> probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    >>> post = SSDPostprocessor(T=0.3, eps=1.0, hash_key=b"secret")
    >>> post.fit(probs[:200], probs[:200].argmax(1))       # ART never calls fit: q^y from held-out rows
    >>> answers = post(probs[200:])
    >>> answers.shape, bool(np.allclose(answers.sum(1), 1, atol=1e-5))
    ((100, 5), True)
    >>> bool((post(probs[200:]) == answers).all())          # the same row always gets the same answer
    True
    >>> table = {tuple(np.round(x, 3)): p for x, p in zip(rng.random((100, 4)).astype(np.float32), probs[200:])}
    >>> api = BlackBoxClassifier(lambda x: np.stack([table[tuple(np.round(r, 3))] for r in x]), (4,), 5,
    ...                          postprocessing_defences=[post])
    >>> x = np.array(list(table), dtype=np.float32)[:3]
    >>> bool(np.allclose(api.predict(x), post(probs[200:203]), atol=1e-6))
    True
    """

    params = ["T", "eps", "entropy", "estimator", "logits", "hash_key"]

    def __init__(self, T: float, eps: float = 1.0, entropy: str = "normalized", *, q_table=None,
                 estimator: str = "mean", logits: str = "softmax", hash_key: bytes | None = None,
                 apply_fit: bool = False, apply_predict: bool = True) -> None:
        super().__init__(is_fitted=q_table is not None, apply_fit=apply_fit, apply_predict=apply_predict)
        self.T, self.eps, self.entropy, self.estimator, self.logits = T, eps, entropy, estimator, logits
        self.hash_key = hash_key if hash_key is not None else secrets.token_bytes(32)
        self.q_table = None if q_table is None else torch.as_tensor(np.asarray(q_table, dtype=np.float64))
        self._check_params()

    @classmethod
    def from_ssd(cls, ssd: SSD, **kwargs) -> "SSDPostprocessor":
        """The postprocessor of an existing :class:`ssdlib.SSD` (its q^y, T, eps, entropy and hash key).

        >>> probs = torch.softmax(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)), -1)
        >>> ssd = SSD.from_predictions(probs, torch.arange(40) % 4, T=0.5, randomness="hash")
        >>> post = SSDPostprocessor.from_ssd(ssd)
        >>> post.num_classes, post.T, bool(torch.equal(post.q_table, ssd.q_table.double()))
        (4, 0.5, True)
        """
        if not isinstance(ssd, SSD):
            raise TypeError(f"ssd must be an ssdlib.SSD, got {type(ssd).__name__}")
        return cls(ssd.T, ssd.eps, ssd.entropy, q_table=ssd.q_table.double().cpu().numpy(),
                   hash_key=bytes(ssd.hash_key.cpu().tolist()), **kwargs)

    def _check_params(self) -> None:
        if not (isinstance(self.T, (int, float)) and self.T >= 0):
            raise ValueError(f"T must be a number >= 0, got {self.T!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps >= 0):
            raise ValueError(f"eps must be a number >= 0, got {self.eps!r}")
        if self.entropy not in ("normalized", "nats"):
            raise ValueError(f"entropy must be 'normalized' or 'nats', got {self.entropy!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.logits not in LOGITS:
            raise ValueError(f"logits must be one of {LOGITS}, got {self.logits!r}")
        if not isinstance(self.hash_key, bytes) or not 1 <= len(self.hash_key) <= 64:
            raise ValueError("hash_key must be 1 to 64 bytes")

    @property
    def num_classes(self) -> int | None:
        """Classes of the fitted q^y table (None before ``fit``)."""
        return None if self.q_table is None else int(self.q_table.shape[0])

    def defense(self) -> SSD:
        """The :class:`ssdlib.SSD` this postprocessor applies now (hash-seeded, current parameters).

        >>> SSDPostprocessor(T=0.3).defense()
        Traceback (most recent call last):
        RuntimeError: SSDPostprocessor is not fitted: ART never calls fit itself; call post.fit(preds, y) on held-out predictions (or pass q_table) before attaching it
        >>> post = SSDPostprocessor(T=0.3, q_table=np.full((3, 3), 1 / 3))
        >>> post.set_params(eps=0.5)
        >>> post.defense().eps, post.defense().randomness
        (0.5, 'hash')
        """
        if self.q_table is None:
            raise RuntimeError("SSDPostprocessor is not fitted: ART never calls fit itself; call "
                               "post.fit(preds, y) on held-out predictions (or pass q_table) before attaching it")
        return SSD(self.q_table, T=float(self.T), eps=float(self.eps), entropy=self.entropy, randomness="hash",
                   hash_key=self.hash_key)

    def _probabilities(self, preds: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """``preds`` as float64 probability rows (logit rows through a softmax) and the raw float32 rows."""
        preds = np.asarray(preds)
        if preds.ndim != 2:
            raise ValueError(f"preds must be [N, C] model outputs, got shape {preds.shape}")
        if self.num_classes is not None and preds.shape[1] != self.num_classes:
            raise ValueError(f"preds have {preds.shape[1]} classes, the fitted q^y table has {self.num_classes}"
                             " (SSD needs the full probability vector, not a binary score)")
        if not np.isfinite(preds).all():
            raise ValueError("preds contain NaN or infinite entries")
        raw = np.ascontiguousarray(preds, dtype=np.float32)
        probs = torch.from_numpy(np.array(preds, dtype=np.float64))
        is_prob = torch.from_numpy(probability_rows(preds))
        if not bool(is_prob.all()):
            if self.logits == "raise":
                bad = np.flatnonzero(~is_prob.numpy())
                raise ValueError(f"rows {bad[:10].tolist()} are not probability vectors (logits?); apply a softmax"
                                 " or construct the postprocessor with logits='softmax'")
            probs[~is_prob] = torch.softmax(probs[~is_prob], dim=-1)
        return probs / probs.sum(-1, keepdim=True), raw

    def fit(self, preds: np.ndarray, y: np.ndarray | None = None, **kwargs) -> None:
        """Estimate q^y from held-out predictions ``preds`` [N, C] (probabilities or logits) and their true labels
        ``y`` (class indices [N] or one-hot [N, C]); ``missing="uniform"`` fills absent classes.

        >>> post = SSDPostprocessor(T=0.3)
        >>> post.fit(np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]]), np.array([0, 0, 1]))
        >>> post.q_table
        tensor([[0.8000, 0.2000],
                [0.2000, 0.8000]], dtype=torch.float64)
        >>> post.fit(np.array([[0.9, 0.1]]), None)
        Traceback (most recent call last):
        ValueError: fit needs the true labels y of preds: q^y is the mean prediction of class y
        """
        if y is None:
            raise ValueError("fit needs the true labels y of preds: q^y is the mean prediction of class y")
        self.q_table = None
        probs, _ = self._probabilities(preds)
        y = np.asarray(y)
        labels = y.argmax(-1) if y.ndim == 2 else y
        if labels.shape != (probs.shape[0],):
            raise ValueError(f"y must hold one label per row of preds ({probs.shape[0]}), got shape {y.shape}")
        self.q_table = estimate_q_table(probs, torch.as_tensor(labels.astype(np.int64)), probs.shape[1],
                                        estimator=self.estimator, missing=kwargs.get("missing", "raise"),
                                        seed=int(kwargs.get("seed", 0)))
        self._is_fitted = True

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        """The defended rows of ``preds`` [N, C], float32 probability vectors; each row's label draw is seeded by a
        keyed hash of the row as given (so a batch answers as its rows one by one)."""
        ssd = self.defense()
        probs, raw = self._probabilities(preds)
        if not len(probs):
            return raw.copy()
        defended = ssd(probs, inputs=torch.from_numpy(raw))
        return defended.numpy().astype(np.float32)
