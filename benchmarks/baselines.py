"""Unsupervised baselines, each with its free parameter tuned on labelled meta-train data.

Every baseline exposes ``tune(features, labels) -> parameter``, ``run(features, parameter,
n_classes) -> labels`` and ``describe(parameter) -> str``. Tuning maximises the mean of pairwise F
and BCubed F on the meta-train classes; the test classes are never looked at. Only the oracle
variants use ``n_classes``.

FINCH and Infomap need the packages of the ``bench`` extra (``pip install -e ".[bench]"``); they
are imported when such a baseline first runs, so this module imports without them.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.cluster import DBSCAN, HDBSCAN, KMeans
from sklearn.neighbors import NearestNeighbors

from hilander.graph import edge_arrays, knn_graph
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


def _import_optional(module: str, package: str, baseline: str):
    """Import ``module`` for ``baseline``, or raise ImportError naming the install command."""
    try:
        with warnings.catch_warnings():
            # finch-clust 0.2.3 warns on import when the optional pynndescent is missing.
            warnings.filterwarnings("ignore", message="pynndescent is not installed")
            return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the {baseline} baseline needs the package {package!r}, which is not installed. "
            f'Install the benchmark extras with: pip install -e ".[bench]"'
        ) from error


class KMeansOracle:
    """k-means given the true number of test classes, which no user has in practice."""

    name = "k-means (true k, oracle)"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def tune(self, features, labels):
        return None

    def run(self, features, parameter, n_classes):
        return KMeans(n_clusters=n_classes, n_init=3, random_state=self.seed).fit_predict(features)

    def describe(self, parameter):
        return "true k given"


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

    def describe(self, parameter):
        return f"tuned: threshold={parameter}"


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

    def describe(self, parameter):
        return f"tuned: min_cluster_size={parameter[0]}, min_samples={parameter[1]}"

    @staticmethod
    def _cluster(distances, setting):
        min_cluster_size, min_samples = setting
        model = HDBSCAN(
            min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=True
        )
        return noise_to_singletons(model.fit_predict(distances))


def _cosine_distances(features, block: int = 2048):
    """Return the (N, N) float64 cosine distances of unit rows, computed in blocks of rows.

    In one run, a single product of the whole matrix made numpy's OpenBLAS crash on 19,280
    rows of 784 pixels. Blocks of rows keep each product small.
    """
    features = features.astype(np.float64)
    distances = np.empty((features.shape[0], features.shape[0]), dtype=np.float64)
    for start in range(0, features.shape[0], block):
        rows = slice(start, start + block)
        np.matmul(features[rows], features.T, out=distances[rows])
    np.subtract(1.0, distances, out=distances)
    np.clip(distances, 0.0, 2.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


class Dbscan:
    """DBSCAN (scikit-learn) on cosine distance, with every noise point as a singleton cluster.

    Tuned over eps (cosine distance) and min_samples (the point itself included). The radius
    neighbourhoods are computed once, as a sparse graph at the largest eps of the grid, and every
    setting reuses them, so memory grows with the number of pairs closer than that eps.
    """

    name = "DBSCAN (cosine, tuned)"
    eps_grid = tuple(np.round(np.arange(0.05, 0.501, 0.025), 3))
    min_samples_grid = (2, 5, 10)

    def tune(self, features, labels):
        graph = _radius_graph(features, max(self.eps_grid))
        grid = [(float(eps), samples) for eps in self.eps_grid for samples in self.min_samples_grid]
        scores = [_score(labels, self._cluster(graph, setting)) for setting in grid]
        return grid[int(np.argmax(scores))]

    def run(self, features, parameter, n_classes):
        return self._cluster(_radius_graph(features, parameter[0]), parameter)

    def describe(self, parameter):
        return f"tuned: eps={parameter[0]}, min_samples={parameter[1]}"

    @staticmethod
    def _cluster(graph, setting):
        eps, min_samples = setting
        model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
        return noise_to_singletons(model.fit_predict(graph))


def _radius_graph(features, radius):
    """Return the sparse cosine-distance graph of all pairs within ``radius``, self-pairs included."""
    neighbors = NearestNeighbors(radius=radius, metric="cosine", algorithm="brute")
    neighbors.fit(features)
    return neighbors.radius_neighbors_graph(mode="distance", sort_results=True)


class Finch:
    """FINCH (Sarfraz et al., CVPR 2019, package finch-clust) on cosine distance.

    FINCH merges first-neighbour chains into a hierarchy of partitions without parameters. The
    tuned parameter is which partition to take, counted from the finest (0). When the test data
    has fewer partitions than that, the coarsest one is taken.
    """

    name = "FINCH (cosine, tuned level)"

    def tune(self, features, labels):
        partitions = _finch_partitions(features, None)[0]
        scores = [_score(labels, partitions[:, level]) for level in range(partitions.shape[1])]
        return int(np.argmax(scores))

    def run(self, features, parameter, n_classes):
        partitions = _finch_partitions(features, None)[0]
        return partitions[:, min(parameter, partitions.shape[1] - 1)]

    def describe(self, parameter):
        return f"tuned: level={parameter}"


class FinchOracle:
    """FINCH given the true number of test classes (its ``req_clust``), which no user has in practice."""

    name = "FINCH (true k, oracle)"

    def tune(self, features, labels):
        return None

    def run(self, features, parameter, n_classes):
        return _finch_partitions(features, n_classes)[1]

    def describe(self, parameter):
        return "true k given"


def _finch_partitions(features, n_classes):
    """Return FINCH's (n, levels) partitions and, when ``n_classes`` is given, the partition with that many clusters."""
    finch = _import_optional("finch", "finch-clust", "FINCH")
    # finch-clust computes exact 1-NN up to ann_threshold points, and above it needs pynndescent
    # unless n >= faiss_threshold. faiss_threshold=0 makes it use faiss (HNSW, approximate) instead.
    partitions, _, requested = finch.FINCH(
        np.ascontiguousarray(features, dtype=np.float32),
        req_clust=n_classes,
        distance="cosine",
        faiss_threshold=0,
        verbose=False,
        random_state=0,
    )
    return partitions, requested


class InfomapKnn:
    """Infomap (two-level, package infomap) on the cosine kNN graph.

    Every node links to its k - 1 nearest neighbours (faiss, exact), weighted by their cosine
    similarity. Links below a similarity threshold are dropped, so the tuned parameter is
    (k, threshold). Infomap treats the links as undirected.
    """

    name = "Infomap (cosine kNN graph, tuned)"
    # On 20 CLINC150 classes of 150 samples, the largest k of shorter grids (40, then 80) won, so
    # the grid reaches about one class size. NOTE: it may still be too small for larger classes.
    k_grid = (5, 10, 20, 40, 80, 160)
    threshold_grid = (0.0, 0.3, 0.5, 0.7)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def tune(self, features, labels):
        grid = [(k, threshold) for k in self.k_grid for threshold in self.threshold_grid]
        scores = []
        graphs = {}
        for k, threshold in grid:
            if k not in graphs:
                graphs[k] = knn_graph(features, min(k, features.shape[0]))
            scores.append(_score(labels, self._cluster(graphs[k], threshold)))
        return grid[int(np.argmax(scores))]

    def run(self, features, parameter, n_classes):
        k, threshold = parameter
        return self._cluster(knn_graph(features, min(k, features.shape[0])), threshold)

    def describe(self, parameter):
        return f"tuned: k={parameter[0]}, threshold={parameter[1]}"

    def _cluster(self, graph, threshold):
        infomap = _import_optional("infomap", "infomap", "Infomap")
        neighbors, similarities = graph
        n = neighbors.shape[0]
        source, target, similarity = edge_arrays(neighbors, similarities)
        keep = similarity > max(threshold, 0.0)
        links = np.column_stack([source[keep], target[keep], similarity[keep]]).astype(np.float64)

        # Infomap 2.16 rejects seed 0, so seeds are shifted by one.
        network = infomap.Infomap(two_level=True, silent=True, seed=self.seed + 1, num_trials=1)
        # Nodes without a kept link still need a module of their own.
        network.add_nodes(range(n))
        network.add_links(links)
        modules = network.run().modules()
        labels = np.empty(n, dtype=np.int64)
        labels[np.fromiter(modules.keys(), dtype=np.int64, count=n)] = np.fromiter(
            modules.values(), dtype=np.int64, count=n
        )
        return labels


BASELINES = {
    "kmeans": KMeansOracle,
    "agglomerative": AverageLinkage,
    "hdbscan": Hdbscan,
    "dbscan": Dbscan,
    "finch": Finch,
    "finch-oracle": FinchOracle,
    "infomap": InfomapKnn,
}
