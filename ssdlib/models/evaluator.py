"""The evaluation classifier: a head on dlib's pretrained face embedding that judges reconstructions.

The attack metrics Acc@1/Acc@5 of model-inversion papers need a judge that is independent of, and more accurate
than, the attacked targets: here a multinomial logistic regression (or a small MLP) on dlib's 128-d descriptors,
trained on the private train split with the weight decay chosen on the valid split. Its accuracies are measured by
the evaluation notebook; :meth:`EvaluationClassifier.features` gives the penultimate features behind delta_eval.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..cache import atomic_save
from ..utils import seed_everything
from ..data.faceset import check_faceset, check_labels
from .embedding import EMBEDDING_DIM, DlibEmbedder, check_images

DEFAULT_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)


def _make_head(num_classes: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(EMBEDDING_DIM, num_classes)
    return nn.Sequential(nn.Linear(EMBEDDING_DIM, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class EvaluationClassifier(nn.Module):
    """Identity classifier on dlib embeddings: ``predict_proba(images) -> [N, K]``; the head is ~128xK numbers.

    Embeddings are standardised with the train mean and scale, then a linear layer (``hidden=0``) or a one-hidden-
    layer MLP gives the logits; the weight decay is picked by valid accuracy in :meth:`fit`.
    """

    def __init__(self, classes: Sequence[str], *, hidden: int = 0, embedder: DlibEmbedder | None = None):
        super().__init__()
        if len(classes) < 2:
            raise ValueError(f"an evaluation classifier needs at least 2 classes, got {len(classes)}")
        if not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"hidden must be a non-negative integer, got {hidden!r}")
        self.classes = list(classes)
        self.hidden = hidden
        self.embedder = embedder
        self.register_buffer("mean", torch.zeros(EMBEDDING_DIM))
        self.register_buffer("scale", torch.ones(()))
        self.head = _make_head(len(self.classes), hidden)
        self.metrics: dict = {}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def embedder_or_default(self) -> DlibEmbedder:
        """The embedder this classifier reads faces with (dlib's, created on first use)."""
        if self.embedder is None:
            self.embedder = DlibEmbedder()
        return self.embedder


    def logits_from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K]`` from dlib embeddings ``[N, 128]``."""
        if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM:
            raise ValueError(f"embeddings must have shape [N, {EMBEDDING_DIM}], got {tuple(emb.shape)}")
        return self.head((emb.to(self.mean) - self.mean) / self.scale)

    def features_from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the standardised embedding (linear head) or the hidden layer (MLP head)."""
        if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM:
            raise ValueError(f"embeddings must have shape [N, {EMBEDDING_DIM}], got {tuple(emb.shape)}")
        z = (emb.to(self.mean) - self.mean) / self.scale
        return z if self.hidden == 0 else self.head[1](self.head[0](z))

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """Penultimate features of float images ``[N, 3, S, S]`` in [0, 1] (the space of delta_eval)."""
        self.eval()
        return self.features_from_embeddings(self.embedder_or_default().embed(check_images(images)))

    def forward(self, images) -> torch.Tensor:
        """Logits ``[N, K]`` of float images ``[N, 3, S, S]`` in [0, 1] (no gradient flows through dlib)."""
        return self.logits_from_embeddings(self.embedder_or_default().embed(check_images(images)))

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """Class probabilities ``[N, K]`` of float images ``[N, 3, S, S]`` in [0, 1]."""
        self.eval()
        return self(images).softmax(-1)

    @torch.no_grad()
    def predict(self, images) -> torch.Tensor:
        """Predicted labels ``[N]``."""
        return self.predict_proba(images).argmax(-1)

    @torch.no_grad()
    def topk_accuracy(self, images, labels, k: Sequence[int] | int = (1, 5), *, embeddings: torch.Tensor | None = None) -> dict:
        """Fraction of images whose label is among the top-k predictions, as ``{"acc@1": .., "acc@5": ..}``.

        ``k`` larger than the number of classes counts as the number of classes; pass ``embeddings`` to reuse them.
        """
        ks = (k,) if isinstance(k, int) else tuple(k)
        if not ks or any(not isinstance(j, (int, np.integer)) or j < 1 for j in ks):
            raise ValueError(f"k must be positive integers, got {k!r}")
        emb = embeddings if embeddings is not None else self.embedder_or_default().embed(check_images(images))
        labels = check_labels(labels, len(emb), self.num_classes)
        self.eval()
        logits = self.logits_from_embeddings(emb)
        top = logits.topk(min(max(ks), self.num_classes), dim=-1).indices.cpu()
        hits = top == labels[:, None]
        return {f"acc@{j}": float(hits[:, :min(j, self.num_classes)].any(-1).float().mean()) if len(emb) else float("nan")
                for j in ks}

    def fit(self, train_set, valid_set, embedder: DlibEmbedder | None = None, *,
            weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, max_iter: int = 300, seed: int = 0) -> EvaluationClassifier:
        """Train the head on ``train_set`` for each weight decay; keep the one with the best ``valid_set`` accuracy."""
        train_set, valid_set = check_faceset(train_set, "train_set"), check_faceset(valid_set, "valid_set")
        if list(train_set.classes) != self.classes or list(valid_set.classes) != self.classes:
            raise ValueError("train_set and valid_set must have the classifier's classes (same names, same order)")
        if not weight_decays or any(w < 0 for w in weight_decays):
            raise ValueError(f"weight_decays must be non-negative numbers, got {weight_decays!r}")
        if embedder is not None:
            self.embedder = embedder
        e_train = self.embedder_or_default().embed_faceset(train_set)
        e_valid = self.embedder_or_default().embed_faceset(valid_set)
        return self.fit_embeddings(e_train, train_set.labels, e_valid, valid_set.labels,
                                   weight_decays=weight_decays, max_iter=max_iter, seed=seed)

    def fit_embeddings(self, e_train, y_train, e_valid, y_valid, *, weight_decays=DEFAULT_WEIGHT_DECAYS,
                       max_iter: int = 300, seed: int = 0) -> EvaluationClassifier:
        """:meth:`fit` on precomputed embeddings (full-batch L-BFGS on cross-entropy + weight decay)."""
        y_train = check_labels(y_train, len(e_train), self.num_classes)
        y_valid = check_labels(y_valid, len(e_valid), self.num_classes)
        e_train, e_valid = e_train.float(), e_valid.float()
        with torch.no_grad():
            self.mean.copy_(e_train.mean(0))
            self.scale.copy_((e_train - self.mean).pow(2).sum(1).mean().sqrt().clamp_min(1e-8) / EMBEDDING_DIM ** 0.5)
        x_train, x_valid = (e_train - self.mean) / self.scale, (e_valid - self.mean) / self.scale
        best = None
        results = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny full-batch problem: extra threads only add overhead (6x slower measured)
        try:
            for wd in sorted(weight_decays, reverse=True):  # on ties keep the strongest regularisation
                acc, state = self._fit_one(x_train, y_train, x_valid, y_valid, wd, max_iter, seed)
                results[float(wd)] = acc
                if best is None or acc > best[0]:
                    best = (acc, wd, state)
        finally:
            torch.set_num_threads(threads)
        self.head.load_state_dict(best[2])
        self.metrics.update(valid_acc=best[0], weight_decay=float(best[1]), valid_by_weight_decay=results)
        self.eval()
        return self

    def _fit_one(self, x_train, y_train, x_valid, y_valid, wd: float, max_iter: int, seed: int):
        seed_everything(seed)
        head = _make_head(self.num_classes, self.hidden)
        params = [p for n, p in head.named_parameters() if n.endswith("weight")]
        opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(head(x_train), y_train)
            loss = loss + 0.5 * wd * sum(p.pow(2).sum() for p in params)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            acc = float((head(x_valid).argmax(-1) == y_valid).float().mean())
        return acc, head.state_dict()

    def to_payload(self) -> dict:
        """The head, the standardisation, the classes and the metrics as a plain dict (a few hundred kB at most)."""
        return {"classes": self.classes, "hidden": self.hidden, "state": self.state_dict(), "metrics": self.metrics}

    @classmethod
    def from_payload(cls, blob: dict, embedder: DlibEmbedder | None = None) -> EvaluationClassifier:
        """The classifier of a :meth:`to_payload` dict."""
        model = cls(blob["classes"], hidden=blob["hidden"], embedder=embedder)
        model.load_state_dict(blob["state"])
        model.metrics = dict(blob.get("metrics", {}))
        return model.eval()

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_payload` to ``path`` atomically."""
        return atomic_save(self.to_payload(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, embedder: DlibEmbedder | None = None) -> EvaluationClassifier:
        """Read a classifier written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no evaluation classifier at {path}")
        return cls.from_payload(torch.load(path, map_location="cpu", weights_only=False), embedder=embedder)
