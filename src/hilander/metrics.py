"""Clustering metrics of the face-clustering literature: pairwise F, BCubed F and NMI.

All scores are computed from one sparse contingency matrix (true class x predicted cluster), so
the cost is O(N) plus the number of non-empty cells, and millions of samples take seconds.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

__all__ = ["pairwise", "bcubed", "nmi", "evaluate"]


def _check_label_pair(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    labels_true = np.asarray(labels_true)
    labels_pred = np.asarray(labels_pred)
    if labels_true.ndim != 1 or labels_pred.ndim != 1:
        raise ValueError(
            f"labels must be 1-D arrays, got shapes {labels_true.shape} and {labels_pred.shape}"
        )
    if labels_true.shape[0] != labels_pred.shape[0]:
        raise ValueError(
            f"labels_true has {labels_true.shape[0]} entries but labels_pred has "
            f"{labels_pred.shape[0]}; pass one predicted cluster id per labelled sample"
        )
    if labels_true.shape[0] == 0:
        raise ValueError("labels are empty; pass at least one sample")
    return labels_true, labels_pred


def _harmonic_mean(precision: float, recall: float) -> float:
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _contingency_counts(labels_true, labels_pred):
    """Return the non-zero cells, row sums and column sums of the contingency matrix as float64."""
    table = contingency_matrix(labels_true, labels_pred, sparse=True).tocsr()
    cells = table.data.astype(np.float64)
    class_sizes = np.asarray(table.sum(axis=1), dtype=np.float64).ravel()
    cluster_sizes = np.asarray(table.sum(axis=0), dtype=np.float64).ravel()
    return table, cells, class_sizes, cluster_sizes


def pairwise(labels_true, labels_pred) -> tuple[float, float, float]:
    """Compute pairwise precision, recall and F-score over ordered pairs of distinct samples.

    A pair is a true positive when both samples share a class and a predicted cluster.
    Precision is 1.0 when no pair is predicted (all singletons), because no pair is wrong;
    recall is 1.0 when no pair exists in the truth.

    Returns:
        ``(precision, recall, f_score)``, each in [0, 1].
    """
    labels_true, labels_pred = _check_label_pair(labels_true, labels_pred)
    n = float(labels_true.shape[0])
    _, cells, class_sizes, cluster_sizes = _contingency_counts(labels_true, labels_pred)
    true_positives = float(np.sum(cells**2)) - n
    predicted_pairs = float(np.sum(cluster_sizes**2)) - n
    true_pairs = float(np.sum(class_sizes**2)) - n
    precision = true_positives / predicted_pairs if predicted_pairs > 0 else 1.0
    recall = true_positives / true_pairs if true_pairs > 0 else 1.0
    return precision, recall, _harmonic_mean(precision, recall)


def bcubed(labels_true, labels_pred) -> tuple[float, float, float]:
    """Compute BCubed precision, recall and F-score (Bagga and Baldwin, 1998).

    For each sample, precision is the share of its predicted cluster that has its class, and
    recall is the share of its class that is in its predicted cluster. Both are averaged over
    samples.

    Returns:
        ``(precision, recall, f_score)``, each in [0, 1].
    """
    labels_true, labels_pred = _check_label_pair(labels_true, labels_pred)
    n = float(labels_true.shape[0])
    table, cells, class_sizes, cluster_sizes = _contingency_counts(labels_true, labels_pred)
    coo = table.tocoo()
    precision = float(np.sum(cells**2 / cluster_sizes[coo.col])) / n
    recall = float(np.sum(cells**2 / class_sizes[coo.row])) / n
    return precision, recall, _harmonic_mean(precision, recall)


def nmi(labels_true, labels_pred) -> float:
    """Compute normalised mutual information with arithmetic-mean normalisation (scikit-learn's)."""
    labels_true, labels_pred = _check_label_pair(labels_true, labels_pred)
    return float(normalized_mutual_info_score(labels_true, labels_pred))


def evaluate(labels_true, labels_pred) -> dict[str, float]:
    """Compute every metric of this module and return them by name.

    Keys: ``pairwise_precision``, ``pairwise_recall``, ``pairwise_f``, ``bcubed_precision``,
    ``bcubed_recall``, ``bcubed_f``, ``nmi``, ``n_clusters`` and ``n_classes``.
    """
    labels_true, labels_pred = _check_label_pair(labels_true, labels_pred)
    pp, pr, pf = pairwise(labels_true, labels_pred)
    bp, br, bf = bcubed(labels_true, labels_pred)
    return {
        "pairwise_precision": pp,
        "pairwise_recall": pr,
        "pairwise_f": pf,
        "bcubed_precision": bp,
        "bcubed_recall": br,
        "bcubed_f": bf,
        "nmi": nmi(labels_true, labels_pred),
        "n_clusters": int(np.unique(labels_pred).shape[0]),
        "n_classes": int(np.unique(labels_true).shape[0]),
    }
