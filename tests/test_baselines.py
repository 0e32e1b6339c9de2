import numpy as np
import pytest

from benchmarks import baselines
from benchmarks.baselines import BASELINES, Dbscan, Finch, FinchOracle, InfomapKnn
from hilander.metrics import evaluate

from conftest import blobs


@pytest.fixture(scope="module")
def blob_split():
    """Well-separated blobs: 12 meta-train classes, 6 unseen test classes, plus one outlier."""
    train_features, train_labels = blobs(num_classes=12, per_class=30, seed=0)
    test_features, test_labels = blobs(num_classes=6, per_class=30, seed=1)
    outlier = np.zeros((1, test_features.shape[1]), dtype=np.float32)
    outlier[0, 0] = 1.0
    test_features = np.vstack([test_features, outlier])
    test_labels = np.append(test_labels, test_labels.max() + 1)
    return train_features, train_labels, test_features, test_labels


def tune_and_run(method, split):
    train_features, train_labels, test_features, test_labels = split
    parameter = method.tune(train_features, train_labels)
    predicted = method.run(test_features, parameter, int(np.unique(test_labels).shape[0]))
    return parameter, predicted


def check_separates(predicted, test_labels):
    assert predicted.shape == test_labels.shape
    scores = evaluate(test_labels, predicted)
    assert scores["pairwise_f"] > 0.9
    assert scores["bcubed_f"] > 0.9


def test_dbscan_separates_blobs(blob_split):
    parameter, predicted = tune_and_run(Dbscan(), blob_split)
    eps, min_samples = parameter
    assert eps in Dbscan.eps_grid
    assert min_samples in Dbscan.min_samples_grid
    check_separates(predicted, blob_split[3])
    assert Dbscan().describe(parameter) == f"tuned: eps={eps}, min_samples={min_samples}"


def test_dbscan_noise_becomes_singletons():
    features, _ = blobs(num_classes=2, per_class=20, seed=3)
    far = np.eye(features.shape[1], dtype=np.float32)[:3]
    labels = Dbscan._cluster(baselines._radius_graph(np.vstack([features, far]), 0.3), (0.3, 5))
    assert labels.min() >= 0
    # Each far point is alone in its cluster.
    assert np.all(np.bincount(labels)[labels[-3:]] == 1)


def test_finch_separates_blobs(blob_split):
    pytest.importorskip("finch")
    parameter, predicted = tune_and_run(Finch(), blob_split)
    assert isinstance(parameter, int) and parameter >= 0
    check_separates(predicted, blob_split[3])


def test_finch_level_clamped_to_coarsest(blob_split):
    pytest.importorskip("finch")
    test_features = blob_split[2]
    partitions = baselines._finch_partitions(test_features, None)[0]
    predicted = Finch().run(test_features, 50, n_classes=7)
    assert np.array_equal(predicted, partitions[:, -1])


def test_finch_oracle_gets_true_k(blob_split):
    pytest.importorskip("finch")
    _, predicted = tune_and_run(FinchOracle(), blob_split)
    assert np.unique(predicted).shape[0] == 7


def test_infomap_separates_blobs(blob_split):
    pytest.importorskip("infomap")
    parameter, predicted = tune_and_run(InfomapKnn(), blob_split)
    k, threshold = parameter
    assert k in InfomapKnn.k_grid
    assert threshold in InfomapKnn.threshold_grid
    check_separates(predicted, blob_split[3])


def test_infomap_unlinked_nodes_are_singletons():
    pytest.importorskip("infomap")
    from hilander.graph import knn_graph

    features, _ = blobs(num_classes=3, per_class=10, seed=4)
    # No link passes a threshold of 1, so every node is its own module.
    labels = InfomapKnn()._cluster(knn_graph(features, 5), 1.0)
    assert np.unique(labels).shape[0] == features.shape[0]


def test_missing_package_names_install_command(monkeypatch):
    def fail(module):
        raise ModuleNotFoundError(f"No module named {module!r}")

    monkeypatch.setattr(baselines.importlib, "import_module", fail)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[bench\]"'):
        baselines._import_optional("infomap", "infomap", "Infomap")


def test_registry_entries_have_interface():
    for key, baseline in BASELINES.items():
        assert isinstance(baseline.name, str) and baseline.name, key
        for attribute in ("tune", "run", "describe"):
            assert callable(getattr(baseline, attribute)), (key, attribute)


def test_cosine_distances_in_blocks_match_one_product():
    rows = np.random.default_rng(0).normal(size=(50, 8))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected = np.clip(1.0 - rows @ rows.T, 0.0, 2.0)
    np.fill_diagonal(expected, 0.0)
    # A block of 7 rows leaves a last, partial block of 1 row.
    distances = baselines._cosine_distances(rows, block=7)
    assert distances.dtype == np.float64
    np.testing.assert_allclose(distances, expected, atol=1e-12)
    assert np.all(np.diag(distances) == 0.0)
