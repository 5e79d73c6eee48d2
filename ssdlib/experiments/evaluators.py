"""The evaluation classifier of each private set, trained once and cached by a hash of its data and settings."""
from __future__ import annotations

from typing import Sequence

from ..cache import cached, fingerprint
from ..models.embedding import DlibEmbedder
from ..data.faceset import check_faceset
from ..models.evaluator import DEFAULT_WEIGHT_DECAYS, EvaluationClassifier


#: Hidden units of the evaluation classifier's head. A hidden layer gives the evaluator penultimate features of its
#: own (the space of delta_eval); with a linear head they would be the standardised dlib embedding, and delta_eval a
#: constant multiple of delta_face.
EVALUATOR_HIDDEN = 256


def train_or_load_evaluator(private_data, *, embedder: DlibEmbedder | None = None, hidden: int = EVALUATOR_HIDDEN,
                            weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, seed: int = 0,
                            cache: bool = True) -> EvaluationClassifier:
    """The evaluation classifier of a ``PrivateData`` (train/valid/test), cached by a hash of data and config.

    ``metrics`` holds valid accuracy and test ``acc@1``/``acc@5`` measured on the test split.
    """
    for split in ("train", "valid", "test"):
        if not hasattr(private_data, split):
            raise ValueError(f"private_data must have train/valid/test FaceSets (ssdlib.data.PrivateData), "
                             f"missing {split!r}")
    faceset_print = lambda fs: fingerprint(fs.images, fs.labels, list(fs.classes))
    config = {"kind": "dlib-head", "hidden": hidden, "weight_decays": [float(w) for w in weight_decays],
              "seed": seed, "data": [faceset_print(getattr(private_data, s)) for s in ("train", "valid", "test")]}
    embedder = embedder or DlibEmbedder()

    def train(_partial):
        model = EvaluationClassifier(private_data.train.classes, hidden=hidden, embedder=embedder)
        model.fit(private_data.train, private_data.valid, weight_decays=weight_decays, seed=seed)
        test = check_faceset(private_data.test, "test split")
        accuracy = model.topk_accuracy(test.float_images(), test.labels)
        model.metrics.update({f"test_{k}": v for k, v in accuracy.items()})
        model.metrics.update(n_train=len(private_data.train), n_valid=len(private_data.valid), n_test=len(test),
                             num_classes=model.num_classes)
        return model.to_payload()

    payload, _ = cached("evaluators", config, train, name=getattr(private_data, "dataset", "private"),
                        enabled=cache)
    return EvaluationClassifier.from_payload(payload, embedder=embedder)
