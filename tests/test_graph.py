import numpy as np
import pytest

from hilander.data import l2_normalize
from hilander.graph import edge_arrays, ground_truth_density, knn_graph, shared_neighbor_share


def test_knn_self_first_and_sorted():
    rng = np.random.default_rng(1)
    features = l2_normalize(rng.normal(size=(50, 8)).astype(np.float32))
    neighbors, similarities = knn_graph(features, 5)
    assert neighbors.shape == (50, 5)
    assert np.array_equal(neighbors[:, 0], np.arange(50))
    assert np.allclose(similarities[:, 0], 1.0)
    assert np.all(np.diff(similarities[:, 1:], axis=1) <= 1e-6)
    exact = features @ features.T
    np.fill_diagonal(exact, -np.inf)
    expected = np.argsort(-exact, axis=1)[:, :4]
    assert np.array_equal(np.sort(neighbors[:, 1:], axis=1), np.sort(expected, axis=1))
    assert np.allclose(similarities[:, 1:], np.take_along_axis(exact, neighbors[:, 1:], 1), atol=1e-5)


def test_knn_exact_duplicates_keep_self_once():
    base = l2_normalize(np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32))
    features = np.repeat(base, 6, axis=0)  # 6 identical copies of each of 3 vectors
    neighbors, _ = knn_graph(features, 4)
    assert np.array_equal(neighbors[:, 0], np.arange(18))
    for row in range(18):
        assert np.sum(neighbors[row] == row) == 1
        assert np.all(neighbors[row] // 6 == row // 6)


def test_knn_rejects_k_above_n():
    features = l2_normalize(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="k=5 is larger than the number of samples"):
        knn_graph(features, 5)


def test_edge_arrays_blocks_per_centre():
    neighbors = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    similarities = np.array([[1, 0.9, 0.1], [1, 0.9, 0.5], [1, 0.5, 0.1]], dtype=np.float32)
    source, target, similarity = edge_arrays(neighbors, similarities)
    assert source.tolist() == [1, 2, 0, 2, 1, 0]
    assert target.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.allclose(similarity, [0.9, 0.1, 0.9, 0.5, 0.5, 0.1])


def test_ground_truth_density_formula():
    neighbors = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    similarities = np.array([[1, 0.8, 0.4], [1, 0.8, 0.6], [1, 0.4, 0.6]], dtype=np.float32)
    labels = np.array([7, 7, 3])
    density = ground_truth_density(neighbors, similarities, labels)
    # Node 0: (+0.8 - 0.4) / 2; node 1: (+0.8 - 0.6) / 2; node 2: (-0.4 - 0.6) / 2.
    assert density == pytest.approx([0.2, 0.1, -0.5])


def test_shared_neighbor_share_counts():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(6, 12))
    features = l2_normalize((np.repeat(centres, 30, axis=0) + 0.6 * rng.normal(size=(180, 12))).astype(np.float32))
    neighbors, _ = knn_graph(features, 8)
    share = shared_neighbor_share(neighbors)
    assert share.shape == (180, 7)
    assert share.dtype == np.float32
    expected = np.array(
        [[len(set(neighbors[i]) & set(neighbors[j])) / 8 for j in neighbors[i, 1:]] for i in range(180)]
    )
    assert np.array_equal(share, expected.astype(np.float32))
    # A row range gives the same rows as the whole graph.
    assert np.array_equal(shared_neighbor_share(neighbors, 50, 95), share[50:95])


def test_shared_neighbor_share_padded_lists():
    # Node 2 found only one neighbour, so its list is padded with itself, as knn_graph pads.
    neighbors = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 2]], dtype=np.int64)
    share = shared_neighbor_share(neighbors)
    assert share.max() <= 1.0
    assert share.min() >= 0.0
    assert share[0, 0] == pytest.approx(1.0)  # lists {0, 1, 2} and {1, 0, 2}
    assert share[0, 1] == pytest.approx(2 / 3)  # {0, 1, 2} and {2, 0}: the repeat counts once
    assert share[2, 0] == pytest.approx(2 / 3)  # {2, 0} and {0, 1, 2}
