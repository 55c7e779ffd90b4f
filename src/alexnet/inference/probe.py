"""Linear and k-NN probes on stored features: how good a layer's code is for classes it was not trained on.

DeCAF (Donahue et al. 2014) and "CNN features off-the-shelf" (Razavian et al. 2014) train a linear
classifier on fc6/fc7 activations of a frozen ImageNet AlexNet; the k-NN probe is the other
standard reading of a representation (e.g. DINO's, Caron et al. 2021). Both read two feature sets
written by :func:`alexnet.inference.features.extract` (the train split and the test split, same checkpoint and
layer) and report top-1/top-5 as ``alexnet eval`` does (:class:`alexnet.inference.evaluate.Scores`).

Conventions:

* linear: scikit-learn's ``LogisticRegression`` (multinomial, L-BFGS, L2 penalty ``C``) on features
  standardised with the training set's mean and standard deviation (``StandardScaler``), as
  scikit-learn recommends for L-BFGS; its ``predict_proba`` ranks the classes.
* k-NN: scikit-learn's ``KNeighborsClassifier`` with ``k`` neighbours, uniform votes, cosine
  distance by default (L2-normalised codes; ``euclidean`` is §6.1's); the vote shares rank the
  classes, so top-5 counts a label among the five most voted (ties broken by class index).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from alexnet.errors import AlexNetError, at_least, not_one_of
from alexnet.inference.evaluate import Scores, check_classes, score
from alexnet.inference.features import FeatureSet, open_features
from alexnet.inference.neighbours import check_k

log = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class ProbeConfig:
    c: float = 1.0  # inverse L2 strength of the logistic regression (scikit-learn's C)
    max_iter: int = 1000  # L-BFGS iterations
    k: int = 20  # neighbours of the k-NN probe
    metric: str = "cosine"  # k-NN distance, see METRICS
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.c) and self.c > 0):  # nan passed `<= 0` and reached scikit-learn's own wording
            raise AlexNetError(f"--C {self.c} must be a positive, finite number")
        at_least("--k", self.k)
        at_least("--max-iter", self.max_iter)
        if self.metric not in METRICS:
            raise AlexNetError(not_one_of("--metric ", self.metric, METRICS))


def _matrix(features: FeatureSet) -> np.ndarray:
    return np.asarray(features.rows, dtype=np.float32)


def _full_probabilities(scores: np.ndarray, seen: np.ndarray, num_classes: int) -> torch.Tensor:
    """Scores over the classes a classifier saw ([N, len(seen)]) → [N, num_classes], 0 for the unseen."""
    out = np.zeros((scores.shape[0], num_classes), dtype=np.float64)
    out[:, seen] = scores
    return torch.from_numpy(out)


def linear_probe(train: FeatureSet, test: FeatureSet, config: ProbeConfig) -> Scores:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=config.c, max_iter=config.max_iter, random_state=config.seed))
    classifier.fit(_matrix(train), train.labels)
    scores = classifier.predict_proba(_matrix(test))
    probabilities = _full_probabilities(scores, classifier.classes_, len(train.classes))
    return score(probabilities, torch.from_numpy(test.labels), train.classes, checkpoints=[str(train.path)])


def knn_probe(train: FeatureSet, test: FeatureSet, config: ProbeConfig) -> Scores:
    from sklearn.neighbors import KNeighborsClassifier

    check_k(config.k, len(train), train.path)
    classifier = KNeighborsClassifier(n_neighbors=config.k, metric=config.metric, algorithm="brute")
    classifier.fit(_matrix(train), train.labels)
    scores = classifier.predict_proba(_matrix(test))
    probabilities = _full_probabilities(scores, classifier.classes_, len(train.classes))
    return score(probabilities, torch.from_numpy(test.labels), train.classes, checkpoints=[str(train.path)])


def check_pair(train: FeatureSet, test: FeatureSet) -> None:
    """Two feature sets a probe can compare: same classes, same layer of the same checkpoint, same width."""
    check_classes(train.classes, test.classes, f"{test.path} against {train.path}")
    if train.rows.shape[1] != test.rows.shape[1]:
        raise AlexNetError(f"{test.path}: {test.rows.shape[1]} columns but {train.path} has {train.rows.shape[1]}")
    for key in ("checkpoint_sha256", "reads"):  # "reads": the module read ("fc7" and "features" are one)
        if train.record.get(key) != test.record.get(key):
            raise AlexNetError(f"{test.path}: {key} {test.record.get(key)!r} differs from {train.path}'s "
                               f"{train.record.get(key)!r}; extract both with the same checkpoint and --layer")
    if len(set(train.labels.tolist())) < 2:
        raise AlexNetError(f"{train.path}: the training features have fewer than two classes")


def run_probes(train_path: str, test_path: str, config: ProbeConfig) -> dict[str, Scores]:
    """{"linear": Scores, "knn": Scores} of the probes trained on ``train_path`` and tested on ``test_path``."""
    train, test = open_features(train_path), open_features(test_path)
    check_pair(train, test)
    check_k(config.k, len(train), train.path)  # before the linear probe's minutes, not after
    log.info("probe: %d training rows, %d test rows, %d columns", len(train), len(test), train.rows.shape[1])
    return {"linear": linear_probe(train, test, config), "knn": knn_probe(train, test, config)}
