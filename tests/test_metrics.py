import numpy as np
import pytest

from hilander import metrics


def test_pairwise_hand_computed():
    # Classes {0,1,2},{3,4}; clusters {0,1},{2,3,4}.
    # Ordered same-cluster pairs: 2 + 6 = 8; same-class pairs: 6 + 2 = 8; both: (0,1) and (3,4) -> 4.
    truth = [0, 0, 0, 1, 1]
    predicted = [5, 5, 7, 7, 7]
    precision, recall, f_score = metrics.pairwise(truth, predicted)
    assert precision == pytest.approx(4 / 8)
    assert recall == pytest.approx(4 / 8)
    assert f_score == pytest.approx(0.5)


def test_bcubed_hand_computed():
    truth = [0, 0, 0, 1, 1]
    predicted = [5, 5, 7, 7, 7]
    # Per-sample precision: 1, 1, 1/3, 2/3, 2/3; recall: 2/3, 2/3, 1/3, 1, 1.
    precision, recall, f_score = metrics.bcubed(truth, predicted)
    assert precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert f_score == pytest.approx(2 * precision * recall / (precision + recall))


def test_perfect_clustering_scores_one():
    truth = np.array([3, 3, 1, 1, 1, 9])
    predicted = np.array([0, 0, 4, 4, 4, 2])
    scores = metrics.evaluate(truth, predicted)
    for name in ("pairwise_precision", "pairwise_recall", "pairwise_f", "bcubed_f", "nmi"):
        assert scores[name] == pytest.approx(1.0), name
    assert scores["n_clusters"] == 3
    assert scores["n_classes"] == 3


def test_all_singletons_pairwise():
    truth = [0, 0, 1, 1]
    precision, recall, f_score = metrics.pairwise(truth, [0, 1, 2, 3])
    assert precision == 1.0
    assert recall == 0.0
    assert f_score == 0.0


def test_one_big_cluster_bcubed():
    truth = [0, 0, 1, 1]
    precision, recall, _ = metrics.bcubed(truth, [0, 0, 0, 0])
    assert precision == pytest.approx(0.5)
    assert recall == pytest.approx(1.0)


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, size=200)
    predicted = rng.integers(0, 9, size=200)
    same_true = truth[:, None] == truth[None, :]
    same_pred = predicted[:, None] == predicted[None, :]
    off_diagonal = ~np.eye(200, dtype=bool)
    true_positives = np.sum(same_true & same_pred & off_diagonal)
    precision, recall, _ = metrics.pairwise(truth, predicted)
    assert precision == pytest.approx(true_positives / np.sum(same_pred & off_diagonal))
    assert recall == pytest.approx(true_positives / np.sum(same_true & off_diagonal))
    bcubed_precision = np.mean(np.sum(same_true & same_pred, 1) / np.sum(same_pred, 1))
    bcubed_recall = np.mean(np.sum(same_true & same_pred, 1) / np.sum(same_true, 1))
    precision, recall, _ = metrics.bcubed(truth, predicted)
    assert precision == pytest.approx(bcubed_precision)
    assert recall == pytest.approx(bcubed_recall)


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="labels_true has 3 entries but labels_pred has 2"):
        metrics.evaluate([0, 1, 1], [0, 1])
