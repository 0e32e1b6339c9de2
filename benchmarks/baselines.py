"""Unsupervised baselines, each with its free parameter tuned on labelled meta-train data.

Every baseline exposes ``tune(features, labels) -> parameter`` and ``run(features, parameter,
n_classes) -> labels``. Tuning maximises the mean of pairwise F and BCubed F on the meta-train
classes; the test classes are never looked at.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.cluster import HDBSCAN, KMeans

from hilander.metrics import evaluate


def _score(labels_true, labels_pred) -> float:
    metrics = evaluate(labels_true, labels_pred)
    return 0.5 * (metrics["pairwise_f"] + metrics["bcubed_f"])


def noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    """Give every noise point (label -1) a cluster of its own, as the metrics expect."""
    labels = labels.copy()
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


class KMeansOracle:
    """k-means given the true number of test classes, which no user has in practice."""

    name = "k-means (true k, oracle)"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def tune(self, features, labels):
        return None

    def run(self, features, parameter, n_classes):
        return KMeans(n_clusters=n_classes, n_init=3, random_state=self.seed).fit_predict(features)


class AverageLinkage:
    """Average-linkage agglomerative clustering on cosine distance, cut at a distance threshold."""

    name = "agglomerative (average, cosine, threshold)"
    thresholds = tuple(np.round(np.arange(0.20, 0.96, 0.025), 3))

    def tune(self, features, labels):
        tree = linkage(features, method="average", metric="cosine")
        scores = [_score(labels, fcluster(tree, t, criterion="distance")) for t in self.thresholds]
        return float(self.thresholds[int(np.argmax(scores))])

    def run(self, features, parameter, n_classes):
        tree = linkage(features, method="average", metric="cosine")
        return fcluster(tree, parameter, criterion="distance")


class Hdbscan:
    """HDBSCAN (scikit-learn) on cosine distance; noise points count as singletons.

    Tuned over min_cluster_size and min_samples (None means equal to min_cluster_size).

    The cosine distance matrix is precomputed (N^2 float64, 1.8 GB at N = 15,000), because
    scikit-learn's tree-based neighbour search is slow in 384 dimensions.
    """

    name = "HDBSCAN (cosine, tuned)"
    grid = tuple((size, samples) for size in (5, 10, 20, 40, 80) for samples in (1, 5, None))

    def tune(self, features, labels):
        distances = _cosine_distances(features)
        scores = [_score(labels, self._cluster(distances, setting)) for setting in self.grid]
        return self.grid[int(np.argmax(scores))]

    def run(self, features, parameter, n_classes):
        return self._cluster(_cosine_distances(features), parameter)

    @staticmethod
    def _cluster(distances, setting):
        min_cluster_size, min_samples = setting
        model = HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=True
        )
        return noise_to_singletons(model.fit_predict(distances))


def _cosine_distances(features):
    features = features.astype(np.float64)
    distances = 1.0 - features @ features.T
    np.clip(distances, 0.0, 2.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


BASELINES = {"kmeans": KMeansOracle, "agglomerative": AverageLinkage, "hdbscan": Hdbscan}
