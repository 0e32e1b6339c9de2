import numpy as np
import pytest

from hilander.inference import cluster_means, decode_level, density_order, super_nodes


def _chain_graph():
    # Two groups {0,1,2} and {3,4}; every node lists the others of the 5 in some order.
    neighbors = np.array([
        [0, 1, 2, 3, 4],
        [1, 0, 2, 3, 4],
        [2, 1, 0, 4, 3],
        [3, 4, 2, 0, 1],
        [4, 3, 2, 1, 0],
    ])
    prob_same = np.array([
        [0.9, 0.8, 0.1, 0.1],
        [0.9, 0.7, 0.1, 0.1],
        [0.6, 0.95, 0.2, 0.1],
        [0.9, 0.4, 0.1, 0.1],
        [0.9, 0.3, 0.2, 0.1],
    ])
    density = np.array([0.9, 0.5, 0.3, 0.6, 0.2])
    return neighbors, prob_same, density


def test_decode_links_to_best_denser_neighbor():
    neighbors, prob_same, density = _chain_graph()
    parent, cluster = decode_level(neighbors, prob_same, density, tau=0.5)
    # Node 2 prefers 0 (0.95) over 1 (0.6); node 3's denser neighbour 0 is below tau; 4 -> 3.
    assert parent.tolist() == [-1, 0, 0, -1, 3]
    assert cluster[0] == cluster[1] == cluster[2]
    assert cluster[3] == cluster[4]
    assert cluster[0] != cluster[3]


def test_decode_high_tau_keeps_no_edge():
    neighbors, prob_same, density = _chain_graph()
    parent, cluster = decode_level(neighbors, prob_same, density, tau=0.99)
    assert np.all(parent == -1)
    assert len(np.unique(cluster)) == 5


def test_decode_ties_in_density_form_no_cycle():
    neighbors = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    prob_same = np.full((3, 2), 0.9)
    density = np.zeros(3)
    parent, cluster = decode_level(neighbors, prob_same, density, tau=0.5)
    assert np.sum(parent == -1) == 1
    assert len(np.unique(cluster)) == 1


def test_density_order_breaks_ties_by_index():
    rank = density_order(np.array([0.5, 0.9, 0.5, 0.1]))
    assert rank.tolist() == [1, 0, 2, 3]


def test_super_nodes_are_peaks():
    neighbors, prob_same, density = _chain_graph()
    parent, cluster = decode_level(neighbors, prob_same, density, tau=0.5)
    peaks = super_nodes(parent, cluster)
    assert sorted(peaks.tolist()) == [0, 3]
    assert peaks[cluster[0]] == 0
    assert peaks[cluster[4]] == 3


def test_cluster_means():
    features = np.array([[1, 0], [0, 1], [2, 2], [4, 0]], dtype=np.float32)
    means = cluster_means(features, np.array([1, 0, 1, 1]), 2)
    assert means[0].tolist() == pytest.approx([0, 1])
    assert means[1].tolist() == pytest.approx([7 / 3, 2 / 3])


def test_absorb_moves_small_clusters_to_nearest_large_one():
    from hilander.inference import absorb_small_clusters

    features = np.array(
        [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0.8, 0.6], [0.6, 0.8]], dtype=np.float32
    )
    assignment = np.array([5, 5, 5, 9, 9, 9, 2, 7])
    absorbed = absorb_small_clusters(features, assignment, min_size=2)
    # Clusters 5 and 9 keep their members; the singletons join the closer of the two.
    assert absorbed.tolist() == [0, 0, 0, 1, 1, 1, 0, 1]
    assert absorb_small_clusters(features, assignment, min_size=0).tolist() == [1, 1, 1, 3, 3, 3, 0, 2]
    # When no cluster is large enough, nothing moves.
    assert absorb_small_clusters(features, assignment, min_size=4).tolist() == [1, 1, 1, 3, 3, 3, 0, 2]


def test_refine_moves_samples_to_closest_mean():
    from hilander.inference import refine_to_means

    x = [np.cos(np.radians(80)), np.sin(np.radians(80))]
    # Rows: a, a, x (put in cluster 0 by mistake), b, b, and cluster 2 made of one a and one b.
    features = np.array([[1, 0], [1, 0], x, [0, 1], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    assignment = np.array([0, 0, 0, 1, 1, 2, 2])
    refined = refine_to_means(features, assignment, max_iterations=3)
    # x goes to the b cluster; cluster 2's mean lies between, so its members leave it and it
    # disappears.
    assert refined.tolist() == [0, 0, 1, 1, 1, 0, 1]
    assert refine_to_means(features, assignment, max_iterations=0).tolist() == assignment.tolist()
    # Stable clusters do not move.
    assert refine_to_means(features, refined, max_iterations=3).tolist() == refined.tolist()


def test_hierarchy_stops_when_no_edge_kept():
    import torch

    from hilander.inference import cluster_hierarchy
    from hilander.model import Lander

    from conftest import blobs

    features, _ = blobs(num_classes=4, per_class=10, dim=8)
    torch.manual_seed(0)
    model = Lander(in_dim=16, hidden=8)
    # No probability exceeds a threshold just below 1, so level 0 keeps no edge and stops.
    result = cluster_hierarchy(model, features, k=5, tau=0.999999)
    assert result.level_labels == []
    assert np.array_equal(result.labels, np.arange(40))
