"""Attack metrics of the paper's Section 5.1, on reconstructions labelled with the class they attack.

* Acc@1 / Acc@5: top-1 / top-5 accuracy of the evaluation classifier (:class:`ssdlib.models.
  EvaluationClassifier`, a head on dlib's 128-d embedding; the paper's is a separate FaceNet) on every
  reconstructed image against its attacked class.
* delta_eval: mean L2 distance (NOT squared; the paper says average l2 distance) in the evaluation classifier's
  penultimate features, from each reconstruction to the nearest private *training* image of its class. The book's
  evaluator has an MLP head (``ssdlib.experiments.evaluators.EVALUATOR_HIDDEN``), whose hidden activation is that
  space; with a linear head it would be the standardised embedding (e - mean) / scale with one scalar scale, and
  delta_eval exactly delta_face / scale. Its magnitude is not comparable to the paper's (a deep network's layer).
* delta_face: the same distance in dlib's 128-d embedding, our stand-in for the paper's FaceNet.
* target top-1: the fraction of reconstructions the attacked model itself (through an oracle the caller gives, or
  any callable) labels as the attacked class; the attack optimised this, so it is an upper reference for Acc@1.

:func:`prior_only_metrics` gives the same figures for unoptimised prior samples (the floor an attack must beat);
:func:`metrics_table` lays rows side by side with each distance's ratio to the undefended row.
"""
from __future__ import annotations

import inspect
from collections import Counter
from typing import Callable, Mapping, Sequence

import torch

from .distances import nearest_class_distance

__all__ = ["topk_accuracy", "nearest_class_distance", "evaluation_features", "target_accuracy", "attack_metrics",
           "results_metrics", "attack_effort", "prior_samples", "prior_only_metrics", "metrics_table", "METRIC_COLUMNS"]

METRIC_COLUMNS = ("acc@1", "acc@5", "delta_eval", "delta_face", "target_acc@1")


def _labels(labels, n: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).cpu()
    if labels.is_floating_point() or labels.shape != (n,):
        raise ValueError(f"labels must be {n} integers (one attacked class per image), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    return labels.long()


def topk_accuracy(logits: torch.Tensor, labels, ks: Sequence[int] = (1, 5)) -> dict:
    """``{"acc@k": fraction of rows whose label is among the k largest logits}`` for each k (k capped at C).

    >>> topk_accuracy(torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]), [1, 0], ks=(1, 2))
    {'acc@1': 0.0, 'acc@2': 0.5}
    """
    if logits.dim() != 2 or not len(logits):
        raise ValueError(f"logits must be a non-empty [N, C] tensor, got {tuple(logits.shape)}")
    labels = _labels(labels, len(logits))
    if int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}")
    top = logits.float().cpu().topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {f"acc@{k}": float(hits[:, :min(k, logits.shape[1])].any(1).float().mean()) for k in ks}


def evaluation_features(evaluator, embeddings: torch.Tensor) -> torch.Tensor:
    """The evaluation classifier's penultimate features of dlib embeddings: the standardised embedding for a
    linear head, the hidden activation for an MLP head (:meth:`EvaluationClassifier.features_from_embeddings`)."""
    with torch.no_grad():
        return evaluator.features_from_embeddings(embeddings.float())


def target_accuracy(target, images: torch.Tensor, labels) -> float:
    """Fraction of ``images`` that ``target`` (a BlackBox, soft or hard, or a callable giving probabilities
    ``[N, C]`` or labels ``[N]``) assigns to their attacked class. A BlackBox counts these queries."""
    labels = _labels(labels, len(images))
    out = target(images)
    pred = out.argmax(-1) if out.dim() == 2 else out
    return float((pred.cpu().long() == labels).float().mean())


def attack_metrics(images: torch.Tensor, labels, evaluator, private_train, *, embedder=None,
                   target: Callable | None = None, per_image: bool = False) -> dict:
    """Acc@1, Acc@5, delta_eval, delta_face (means over images) and, with ``target``, the target's own top-1.

    ``images`` float ``[N, 3, 64, 64]`` in [0, 1]; ``labels`` the attacked class of each; ``private_train`` the
    private training FaceSet (classes in the evaluator's order). dlib embeddings of the private set are cached.
    """
    if list(private_train.classes) != list(evaluator.classes):
        raise ValueError("private_train and the evaluator must have the same classes in the same order")
    labels = _labels(labels, len(images))
    embedder = embedder or evaluator.embedder_or_default()
    # Cache the reconstructions' embeddings (the summary tables score the same runs again) where the embedder can.
    emb = embedder.embed(images, cache=True) if "cache" in inspect.signature(embedder.embed).parameters \
        else embedder.embed(images)
    ref = embedder.embed_faceset(private_train)
    with torch.no_grad():
        logits = evaluator.logits_from_embeddings(emb)
    out = topk_accuracy(logits, labels)
    d_eval = nearest_class_distance(evaluation_features(evaluator, emb), labels,
                                    evaluation_features(evaluator, ref), private_train.labels)
    d_face = nearest_class_distance(emb, labels, ref, private_train.labels)
    out.update({"delta_eval": float(d_eval.mean()), "delta_face": float(d_face.mean()), "n": len(images)})
    if target is not None:
        out["target_acc@1"] = target_accuracy(target, images, labels)
    if per_image:
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        out.update(delta_eval_all=d_eval, delta_face_all=d_face, eval_pred=logits.argmax(1),
                   hit1_all=top[:, 0], hit5_all=top.any(1))
    return out


def attack_effort(results) -> dict:
    """What a list of :class:`ssdlib.attacks.AttackResult` cost: generations and queries per class (mean, and the
    least and most of any class: equal effort shows as min = max), seconds per class (setup excluded), why the
    runs stopped (``"generations: 62"``), the shared setup's queries and seconds, the number of classes, and the
    mean of each numeric diagnostic the attack recorded (``diag_<name>``)."""
    if not results:
        raise ValueError("no attack results given")
    queries = [r.queries for r in results]
    reasons = Counter(r.stopped for r in results)
    out = dict(generations_per_class=sum(r.generations for r in results) / len(results),
               queries_per_class=sum(queries) / len(results), queries_min=min(queries), queries_max=max(queries),
               seconds_per_class=sum(r.seconds for r in results) / len(results),
               stopped=", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())),
               setup_queries=results[0].setup_queries, setup_seconds=results[0].setup_seconds,
               classes=len(results))
    names = sorted({k for r in results for k, v in r.diagnostics.items() if isinstance(v, (int, float))})
    for name in names:
        values = [float(r.diagnostics[name]) for r in results if name in r.diagnostics]
        out[f"diag_{name}"] = sum(values) / len(values)
    return out


def results_metrics(results, evaluator, private_train, **kwargs) -> dict:
    """:func:`attack_metrics` of a list of :class:`ssdlib.attacks.AttackResult` and their :func:`attack_effort`."""
    if not results:
        raise ValueError("no attack results given")
    images = torch.cat([r.images for r in results])
    labels = torch.cat([torch.full((len(r.images),), r.target, dtype=torch.long) for r in results])
    return {**attack_metrics(images, labels, evaluator, private_train, **kwargs), **attack_effort(results)}


def prior_samples(prior, classes: Sequence[int], per_class: int, *, seed: int = 0):
    """Unoptimised prior samples, ``per_class`` labelled with each class of ``classes``: (images, labels)."""
    gen = torch.Generator().manual_seed(seed)
    z = prior.sample(len(classes) * per_class, gen)
    labels = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    return prior.decode(z), labels


def prior_only_metrics(prior, classes: Sequence[int], per_class: int, evaluator, private_train, *, seed: int = 0,
                       **kwargs) -> dict:
    """:func:`attack_metrics` of random prior samples labelled with the attacked classes: the no-attack floor."""
    images, labels = prior_samples(prior, classes, per_class, seed=seed)
    return attack_metrics(images, labels, evaluator, private_train, **kwargs)


def metrics_table(rows: Mapping[str, Mapping], reference: str | None = "No Def."):
    """A pandas DataFrame of metric rows (index = row names) with ``delta_eval_ratio`` and ``delta_face_ratio``,
    each distance divided by that of the ``reference`` (undefended) row; ``reference`` None adds no ratios."""
    import pandas as pd
    if not rows:
        raise ValueError("metrics_table needs at least one row")
    frame = pd.DataFrame({name: {k: v for k, v in row.items() if not isinstance(v, torch.Tensor)}
                          for name, row in rows.items()}).T
    cols = [c for c in METRIC_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in METRIC_COLUMNS]
    frame = frame[cols]
    if reference is not None:
        if reference not in frame.index:
            raise ValueError(f"reference row {reference!r} not among the rows {list(frame.index)}")
        for d in ("delta_eval", "delta_face"):
            if d in frame.columns:
                frame[f"{d}_ratio"] = frame[d].astype(float) / float(frame.loc[reference, d])
    return frame
