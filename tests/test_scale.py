"""Approximate kNN, block-wise GNN scoring and the memory estimate for large inputs."""

import logging

import numpy as np
import pytest
import torch

from hilander import HiLander
from hilander.data import l2_normalize
from hilander.graph import KnnConfig, _put_self_first, choose_knn_method, knn_graph, knn_recall
from hilander.inference import cluster_hierarchy, decode_level, node_inputs, score_level
from hilander.model import Lander, normalized_edge_weights
from hilander.resources import (
    check_memory,
    estimate_memory,
    peak_memory_bytes,
    process_peak_memory_bytes,
    reset_peak_memory,
)

from conftest import blobs


@pytest.fixture(scope="module")
def clustered():
    """4,000 unit vectors in 32-d, in 80 classes of 50: the kind of data kNN search meets."""
    features, labels = blobs(num_classes=80, per_class=50, dim=32, spread=0.35, seed=4)
    return l2_normalize(features), labels


@pytest.mark.parametrize("method, minimum", [("ivf", 0.9), ("ivfpq", 0.85), ("hnsw", 0.95)])
def test_approximate_knn_agrees_with_exact(clustered, method, minimum):
    features, _ = clustered
    k = 10
    exact_neighbors, _ = knn_graph(features, k, KnnConfig(method="exact"))
    stats = {}
    neighbors, similarities = knn_graph(features, k, KnnConfig(method=method), stats)

    assert stats["method"] == method
    assert neighbors.shape == (4000, k)
    assert neighbors.dtype == np.int64
    assert np.array_equal(neighbors[:, 0], np.arange(4000))
    assert neighbors.min() >= 0
    # Recall over every row, computed here from the exact graph, not by the library.
    hits = (neighbors[:, 1:, None] == exact_neighbors[:, None, 1:]).any(axis=2)
    assert hits.mean() >= minimum, (method, hits.mean())
    # The logged recall on a sample agrees with the full count.
    assert abs(stats["recall"] - hits.mean()) < 0.05
    # Candidates are re-scored exactly: each similarity is the true inner product.
    true = np.einsum("nd,nkd->nk", features, features[neighbors])
    assert np.allclose(similarities[:, 1:], true[:, 1:], atol=1e-4)
    assert np.all(np.diff(similarities[:, 1:], axis=1) <= 1e-6)


def test_knn_recall_of_exact_graph_is_one(clustered):
    features, _ = clustered
    neighbors, _ = knn_graph(features, 8, KnnConfig(method="exact"))
    assert knn_recall(features, neighbors, sample=300) == pytest.approx(1.0, abs=1e-3)
    # A graph with its neighbours shuffled between rows has a recall near zero.
    shuffled = neighbors.copy()
    shuffled[:, 1:] = neighbors[np.random.default_rng(0).permutation(4000), 1:]
    assert knn_recall(features, shuffled, sample=300) < 0.1


def test_auto_switches_to_ivf_for_large_inputs():
    assert choose_knn_method(20_000, 384) == "exact"
    assert choose_knn_method(100_000, 256) == "exact"
    assert choose_knn_method(1_000_000, 256) == "ivf"
    assert choose_knn_method(300_000, 64) == "ivf"


def test_empty_result_slots_hold_the_node_itself():
    rows = np.array([0, 1])
    ids = np.array([[0, 5, -1, -1], [7, 1, 3, -1]])
    sims = np.array([[1.0, 0.9, -3e38, -3e38], [0.95, 1.0, 0.5, -3e38]], dtype=np.float32)
    out_ids, out_sims = _put_self_first(rows, ids, sims)
    assert out_ids.tolist() == [[0, 5, 0, 0], [1, 7, 3, 1]]
    assert np.allclose(out_sims, [[1.0, 0.9, 0.0, 0.0], [1.0, 0.95, 0.5, 0.0]])


def test_knn_config_rejects_bad_options():
    with pytest.raises(ValueError, match="'annoy'"):
        KnnConfig(method="annoy")
    with pytest.raises(ValueError, match="nprobe=0"):
        KnnConfig(method="ivf", nprobe=0)
    with pytest.raises(ValueError, match=r"unknown knn option\(s\) \['n_probe'\]"):
        KnnConfig.from_options("ivf", {"n_probe": 8})
    with pytest.raises(ValueError, match="knn_method='faiss'"):
        HiLander(knn_method="faiss").fit(np.eye(4, dtype=np.float32), [0, 0, 1, 1])


def _reference_scores(model, inputs, neighbors, similarities):
    """Whole-graph scores through the training path (Lander.embed over every edge at once)."""
    n, k = neighbors.shape
    source = torch.from_numpy(neighbors[:, 1:].reshape(-1))
    target = torch.from_numpy(np.repeat(np.arange(n), k - 1))
    similarity = torch.from_numpy(similarities[:, 1:].reshape(-1).copy())
    weight = normalized_edge_weights(similarity, target, n)
    with torch.no_grad():
        h = model.embed(torch.from_numpy(inputs), source, target, weight)
        prob = model.link_probabilities(h, source, target, similarity)
    return prob.reshape(n, k - 1).numpy()


@pytest.mark.parametrize("num_layers, conv", [(1, "graphconv"), (2, "graphconv"), (3, "gat")])
def test_blockwise_scoring_matches_whole_graph(clustered, num_layers, conv):
    features, _ = clustered
    features = features[:600]
    neighbors, similarities = knn_graph(features, 6)
    inputs = node_inputs(features, features, True)
    torch.manual_seed(1)
    model = Lander(in_dim=64, hidden=32, num_layers=num_layers, conv=conv).eval()

    reference = _reference_scores(model, inputs, neighbors, similarities)
    whole, whole_density = score_level(model, inputs, neighbors, similarities, chunk_size=None)
    blocks, block_density = score_level(model, lambda rows: inputs[rows], neighbors, similarities, chunk_size=37)

    assert np.allclose(whole, reference, atol=1e-5)
    assert np.allclose(blocks, whole, atol=1e-5)
    assert np.allclose(block_density, whole_density, atol=1e-5)
    for tau in (0.3, 0.5, 0.7):
        assert np.array_equal(
            decode_level(neighbors, blocks, block_density, tau)[1],
            decode_level(neighbors, whole, whole_density, tau)[1],
        )


def test_blockwise_hierarchy_gives_identical_cluster_ids(clustered):
    features, _ = clustered
    torch.manual_seed(2)
    model = Lander(in_dim=64, hidden=32).eval()
    runs = [
        cluster_hierarchy(model, features, k=8, tau=0.5, max_levels=3, chunk_size=chunk)
        for chunk in (None, 500, 4096)
    ]
    for result in runs[1:]:
        assert np.array_equal(result.labels, runs[0].labels)
        assert all(np.array_equal(a, b) for a, b in zip(result.level_labels, runs[0].level_labels))
    stats = runs[1].level_stats
    assert stats
    assert stats[0]["nodes"] == 4000
    assert stats[0]["knn"]["method"] == "exact"
    assert all(s["gnn_seconds"] >= 0 and s["peak_memory"] > 0 for s in stats)


def test_memory_estimate_grows_linearly_and_with_chunk():
    def total(n):
        return estimate_memory(n, 256, 10, chunk_size=16384, knn_method="ivf").total

    # Past one block, every 500,000 rows add the same amount: growth is linear in n.
    first, second = total(1_000_000) - total(500_000), total(1_500_000) - total(1_000_000)
    assert first == second > 0
    large = estimate_memory(1_000_000, 256, 10, chunk_size=16384, knn_method="ivf")
    whole = estimate_memory(1_000_000, 256, 10, chunk_size=None, knn_method="ivf")
    assert whole.gnn > 2 * large.gnn
    # 1M x 256 with the default model and blocks fits in 8 GB.
    assert large.total < 8 * 1024**3


def test_memory_check_rejects_what_cannot_fit():
    estimate = estimate_memory(50_000_000, 512, 30, chunk_size=None, knn_method="hnsw")
    with pytest.raises(MemoryError, match=r"needs about .* GiB .* only 8\.00 GiB is available; lower chunk_size"):
        check_memory(estimate, "clustering 50000000 x 512", available=8 * 1024**3)
    check_memory(estimate_memory(1000, 16, 5), "a small job", available=8 * 1024**3)


def test_predict_refuses_before_work_when_memory_is_short(monkeypatch, caplog):
    features, labels = blobs(num_classes=6, per_class=20, dim=8, seed=1)
    model = HiLander(epochs=1, hidden=16, train_knn=((5, 1),), validation_fraction=0.0, tau=0.5,
                     min_cluster_size=0, refit=False).fit(features, labels)
    import hilander.resources as resources

    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 1024)
    calls = []
    monkeypatch.setattr("hilander.estimator.cluster_hierarchy", lambda *a, **kw: calls.append(a))
    with pytest.raises(MemoryError, match="clustering 120 x 8 embeddings with k=5 needs about"):
        model.predict(features)
    assert calls == []


def test_predict_logs_each_level(caplog):
    features, labels = blobs(num_classes=6, per_class=20, dim=8, seed=1)
    model = HiLander(epochs=1, hidden=16, train_knn=((5, 2),), validation_fraction=0.0, tau=0.5,
                     min_cluster_size=0, refit=False).fit(features, labels)
    with caplog.at_level(logging.INFO, logger="hilander.estimator"):
        result = model.predict_hierarchy(features)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("level ")]
    assert len(lines) == len(result.level_stats) >= 1
    assert "kNN (exact, k=5)" in lines[0]
    assert "peak memory" in lines[0]


def test_set_params_changes_inference_and_rolls_back_bad_values():
    features, labels = blobs(num_classes=6, per_class=20, dim=8, seed=1)
    model = HiLander(epochs=1, hidden=16, train_knn=((5, 1),), validation_fraction=0.0, tau=0.5,
                     min_cluster_size=0, refit=False).fit(features, labels)
    before = model.predict(features)
    model.set_params(knn_method="hnsw", chunk_size=7)
    assert np.array_equal(model.predict(features), before)
    with pytest.raises(ValueError, match="chunk_size=0"):
        model.set_params(chunk_size=0, knn_method="ivf")
    assert model.chunk_size == 7
    assert model.knn_method == "hnsw"
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_neighbors'\]"):
        model.set_params(n_neighbors=5)


def test_peak_memory_reset_keeps_process_peak():
    before = process_peak_memory_bytes()
    block = np.ones(64 * 1024**2 // 8)  # 64 MiB, touched
    grown = peak_memory_bytes()
    del block
    reset_peak_memory()
    # RSS counters are per-thread caches, so allow a few MiB of slack.
    assert process_peak_memory_bytes() >= grown - 4 * 1024**2
    assert process_peak_memory_bytes() >= before
    assert peak_memory_bytes() <= process_peak_memory_bytes()
