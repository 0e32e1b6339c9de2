"""Hierarchical clustering with a trained LANDER model: decode a level, build super-nodes, repeat.

Every function here takes and returns arrays, so each level can run on one shard of a larger job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from .data import l2_normalize
from .graph import KnnConfig, knn_graph, nearest_rows, shared_neighbor_share
from .model import Lander, normalized_edge_weights, predicted_density
from .resources import peak_memory_bytes, reset_peak_memory

__all__ = [
    "density_order",
    "decode_level",
    "super_nodes",
    "cluster_means",
    "score_level",
    "absorb_small_clusters",
    "ScoredLevel",
    "score_first_level",
    "HierarchyResult",
    "cluster_hierarchy",
]

logger = logging.getLogger(__name__)


def density_order(density: np.ndarray) -> np.ndarray:
    """Rank nodes from densest (rank 0) to sparsest, breaking ties by lower index.

    The strict total order makes "j is denser than i" well defined for exact duplicates too, so
    the edges kept by decoding can never form a cycle.

    Returns:
        (n,) int64 rank of each node.
    """
    order = np.lexsort((np.arange(density.shape[0]), -density.astype(np.float64)))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return rank


def decode_level(
    neighbors: np.ndarray, prob_same: np.ndarray, density: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most one edge per node and return the resulting clusters.

    Node i keeps the edge to the neighbour j with the highest P(same class) among the neighbours
    that are denser than i and have P(same class) > tau. The kept edges form a forest whose roots
    (peaks) are the nodes that kept no edge; each tree is one cluster.

    Args:
        neighbors: (n, k) kNN lists, column 0 being the node itself.
        prob_same: (n, k - 1) P(same class) of the edges from ``neighbors[:, 1:]``.
        density: (n,) node density.
        tau: link threshold in [0, 1).

    Returns:
        ``(parent, cluster)``: (n,) int64 arrays. ``parent[i]`` is the kept neighbour or -1 for a
        peak; ``cluster[i]`` is a cluster id in [0, number of clusters).
    """
    n = neighbors.shape[0]
    rank = density_order(density)
    candidates = neighbors[:, 1:]
    allowed = (rank[candidates] < rank[:, None]) & (prob_same > tau)
    score = np.where(allowed, prob_same, -np.inf)
    best = np.argmax(score, axis=1)
    has_parent = allowed[np.arange(n), best]
    parent = np.where(has_parent, candidates[np.arange(n), best], -1).astype(np.int64)

    children = np.flatnonzero(has_parent)
    forest = sp.coo_matrix(
        (np.ones(children.shape[0], dtype=np.int8), (children, parent[children])), shape=(n, n)
    )
    _, cluster = connected_components(forest, directed=False)
    return parent, cluster.astype(np.int64)


def super_nodes(parent: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Return the peak (root) node of each cluster, indexed by cluster id.

    Returns:
        (number of clusters,) int64 array.
    """
    peaks = np.flatnonzero(parent < 0)
    peak_of_cluster = np.empty(peaks.shape[0], dtype=np.int64)
    peak_of_cluster[cluster[peaks]] = peaks
    return peak_of_cluster


def cluster_means(features: np.ndarray, assignment: np.ndarray, num_clusters: int) -> np.ndarray:
    """Average the original features of each cluster's members with one sparse product.

    Args:
        features: (N, d) original features.
        assignment: (N,) cluster id of each original sample.

    Returns:
        (num_clusters, d) float32 means.
    """
    n = assignment.shape[0]
    indicator = sp.csr_matrix(
        (np.ones(n, dtype=np.float32), (assignment, np.arange(n))), shape=(num_clusters, n)
    )
    sizes = np.asarray(indicator.sum(axis=1), dtype=np.float32).ravel()
    return (indicator @ features / sizes[:, None]).astype(np.float32)


def node_inputs(features: np.ndarray, means: np.ndarray, use_cluster_features: bool) -> np.ndarray:
    """Build the GNN input of each node: its feature, joined with its cluster mean if enabled."""
    if use_cluster_features:
        return np.concatenate([features, means], axis=1)
    return features


def absorb_small_clusters(features: np.ndarray, assignment: np.ndarray, min_size: int) -> np.ndarray:
    """Move the members of clusters with fewer than ``min_size`` samples into larger clusters.

    Each member of a small cluster joins the large cluster (at least ``min_size`` samples) whose
    L2-normalised mean is closest to it by cosine similarity. Decoding leaves such fragments
    where a sample's every link falls below tau, and most of them belong to a nearby class.

    Args:
        features: (N, d) float32 L2-normalised features.
        assignment: (N,) int cluster id of each sample.
        min_size: smallest cluster kept as it is; 0 or 1 returns the clusters unchanged.

    Returns:
        (N,) int64 cluster ids in [0, number of clusters). When no cluster reaches ``min_size``,
        the clusters are returned unchanged (renumbered).
    """
    _, assignment = np.unique(assignment, return_inverse=True)
    num_clusters = int(assignment.max()) + 1 if assignment.size else 0
    sizes = np.bincount(assignment, minlength=num_clusters)
    large = np.flatnonzero(sizes >= min_size)
    if min_size <= 1 or large.size == 0 or large.size == num_clusters:
        return assignment.astype(np.int64)
    centroids = l2_normalize(cluster_means(features, assignment, num_clusters)[large])
    moved = np.flatnonzero(sizes[assignment] < min_size)
    assignment = assignment.copy()
    assignment[moved] = large[nearest_rows(features[moved], centroids)]
    return np.unique(assignment, return_inverse=True)[1].astype(np.int64)


def refine_to_means(features: np.ndarray, assignment: np.ndarray, max_iterations: int = 10) -> np.ndarray:
    """Move each sample to the cluster whose mean is closest, and repeat (spherical k-means).

    The clusters of the hierarchy seed the iterations, so their number comes from the model.
    Only the boundaries between clusters move. A wrong link or a late merge can leave a sample
    in one cluster while it lies closer to the mean of another, and this moves it there.
    Clusters left empty disappear. Iteration stops when no sample moves or after ``max_iterations``.

    NOTE: each pass compares every sample with every cluster mean (exact faiss search), so a
    pass costs about N x clusters x d operations. Its time at a million samples and tens of
    thousands of clusters has not been measured.

    Args:
        features: (N, d) float32 L2-normalised features.
        assignment: (N,) int cluster id of each sample.
        max_iterations: most assignment passes; 0 returns the clusters unchanged (renumbered).

    Returns:
        (N,) int64 cluster ids in [0, number of clusters).
    """
    _, assignment = np.unique(assignment, return_inverse=True)
    assignment = assignment.astype(np.int64)
    for _ in range(max_iterations):
        num_clusters = int(assignment.max()) + 1 if assignment.size else 0
        if num_clusters < 2:
            break
        centroids = l2_normalize(cluster_means(features, assignment, num_clusters))
        moved = nearest_rows(features, centroids)
        if np.array_equal(moved, assignment):
            break
        assignment = np.unique(moved, return_inverse=True)[1].astype(np.int64)
    return assignment


# Centres scored per block by default: with k = 10 and 512-wide inputs a block holds at most
# about 0.7 GB of node inputs and embeddings, whatever the number of nodes.
DEFAULT_CHUNK_SIZE = 16384


@torch.no_grad()
def score_level(
    model: Lander,
    inputs,
    neighbors: np.ndarray,
    similarities: np.ndarray,
    device: torch.device | str = "cpu",
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on a whole kNN graph, one block of centre nodes at a time.

    Each conv layer is computed for a block of ``chunk_size`` centres from the inputs of those
    centres and their neighbours only, so memory depends on the block size and not on n. The
    output of every layer but the last is kept for all nodes (n x hidden floats). The last
    layer's output is projected straight away, so only its three (n, hidden / 2) projections,
    which the link scores read, are kept. Blocks give the same cluster ids as one whole-graph
    pass. The probabilities can differ in the last bits, because matrix products of other shapes
    may sum in another order.

    Args:
        model: trained LANDER model.
        inputs: (n, in_dim) float32 node inputs, or a callable that returns the input rows of
            an int64 array of node ids, so that a large input array need not exist at once.
        neighbors: (n, k) int64 kNN lists, column 0 being the node itself.
        similarities: (n, k) float32 cosine similarities.
        device: torch device.
        chunk_size: centres per block; ``None`` scores the whole graph in one block.

    Returns:
        ``(prob_same, density)``: (n, k - 1) float32 P(same class) of each edge and (n,) float32
        predicted density.
    """
    model.eval()
    n, k = neighbors.shape
    chunk = n if chunk_size is None else max(1, int(chunk_size))
    blocks = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    read_inputs = inputs if callable(inputs) else (lambda rows: inputs[rows])

    def read_layer_input(layer: int, previous: torch.Tensor | None, rows: np.ndarray) -> torch.Tensor:
        if layer == 0:
            block = np.ascontiguousarray(read_inputs(rows), dtype=np.float32)
            return torch.from_numpy(block).to(device)
        return previous[torch.from_numpy(rows).to(previous.device)].to(device)

    previous, projected = None, None
    for layer in range(len(model.convs)):
        last = layer == len(model.convs) - 1
        output = None
        for start, stop in blocks:
            centres = np.arange(start, stop, dtype=np.int64)
            sources = neighbors[start:stop, 1:].reshape(-1)
            nodes = np.unique(np.concatenate([centres, sources]))
            h_nodes = read_layer_input(layer, previous, nodes)
            source = torch.from_numpy(np.searchsorted(nodes, sources)).to(device)
            target = torch.from_numpy(np.repeat(np.arange(stop - start, dtype=np.int64), k - 1)).to(device)
            similarity = torch.from_numpy(np.ascontiguousarray(similarities[start:stop, 1:]).reshape(-1)).to(device)
            weight = normalized_edge_weights(similarity, target, stop - start)
            h_centres = h_nodes[torch.from_numpy(np.searchsorted(nodes, centres)).to(device)]
            h = model.conv_layer(layer, h_nodes, h_centres, source, target, weight)
            if last:
                parts = model.project(h)
                if projected is None:
                    projected = tuple(torch.empty((n, part.shape[1]), dtype=part.dtype, device=device) for part in parts)
                for store, part in zip(projected, parts):
                    store[start:stop] = part
            else:
                if output is None:
                    output = torch.empty((n, h.shape[1]), dtype=h.dtype, device=device)
                output[start:stop] = h
        previous = output

    prob_same = np.empty((n, k - 1), dtype=np.float32)
    density = np.empty(n, dtype=np.float32)
    # Computed once for the whole graph, because each call builds the sparse (n, n) membership matrix.
    shares = shared_neighbor_share(neighbors) if model.shared_neighbors else None
    for start, stop in blocks:
        source = torch.from_numpy(np.ascontiguousarray(neighbors[start:stop, 1:]).reshape(-1)).to(device)
        target = torch.from_numpy(np.repeat(np.arange(start, stop, dtype=np.int64), k - 1)).to(device)
        similarity = torch.from_numpy(np.ascontiguousarray(similarities[start:stop, 1:])).to(device)
        shared = None
        if shares is not None:
            shared = torch.from_numpy(np.ascontiguousarray(shares[start:stop]).reshape(-1)).to(device)
        logits = model.score(projected, source, target, similarity.reshape(-1), shared)
        prob = torch.softmax(logits, dim=1)[:, 1].reshape(stop - start, k - 1)
        prob_same[start:stop] = prob.cpu().numpy()
        density[start:stop] = predicted_density(prob, similarity).cpu().numpy()
    return prob_same, density


@dataclass
class ScoredLevel:
    """A level-0 kNN graph with the model's scores, reusable for several thresholds.

    Level 0 does not depend on tau, so choosing tau can build and score it once per k.

    Attributes:
        neighbors: (n, k) int64 kNN lists, column 0 being the node itself.
        similarities: (n, k) float32 cosine similarities.
        prob_same: (n, k - 1) float32 P(same class) of each edge.
        density: (n,) float32 predicted density.
        knn_stats: the kNN search's stats (see :func:`hilander.graph.knn_graph`).
        gnn_seconds: time spent scoring.
    """

    neighbors: np.ndarray
    similarities: np.ndarray
    prob_same: np.ndarray
    density: np.ndarray
    knn_stats: dict = field(default_factory=dict)
    gnn_seconds: float = 0.0


def score_first_level(
    model: Lander,
    features: np.ndarray,
    k: int,
    use_cluster_features: bool = True,
    device: torch.device | str = "cpu",
    knn: KnnConfig | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> ScoredLevel:
    """Build and score the level-0 graph of :func:`cluster_hierarchy` (k lowered to n if larger)."""
    k = min(k, features.shape[0])
    return _score_graph(model, features, features, features, k, use_cluster_features, device, knn, chunk_size)


def _score_graph(
    model, knn_features, node_features, means, k, use_cluster_features, device, knn, chunk_size
) -> ScoredLevel:
    """Build the kNN graph of ``knn_features`` and score it with inputs from features and means."""
    knn_stats: dict = {}
    neighbors, similarities = knn_graph(knn_features, k, knn, knn_stats)
    started = time.perf_counter()

    def inputs(rows: np.ndarray) -> np.ndarray:
        return node_inputs(node_features[rows], means[rows], use_cluster_features)

    prob_same, density = score_level(model, inputs, neighbors, similarities, device, chunk_size)
    return ScoredLevel(neighbors, similarities, prob_same, density, knn_stats, time.perf_counter() - started)


@dataclass
class HierarchyResult:
    """Output of :func:`cluster_hierarchy`.

    Attributes:
        labels: (N,) final cluster id of each sample, in [0, number of clusters).
        level_labels: one (N,) array per decoded level that added at least one edge; entry l is the
            assignment after level l.
        edges_added: number of kept edges at each decoded level.
        level_stats: one dict per level run (including a last level that added no edge) with
            ``nodes``, ``k``, ``edges_added``, the kNN search's ``knn`` stats (method, seconds,
            recall when measured), ``gnn_seconds``, ``decode_seconds`` and ``peak_memory``
            (bytes; the level's own peak where the OS can reset the mark, else the process's).
    """

    labels: np.ndarray
    level_labels: list[np.ndarray] = field(default_factory=list)
    edges_added: list[int] = field(default_factory=list)
    level_stats: list[dict] = field(default_factory=list)


def cluster_hierarchy(
    model: Lander,
    features: np.ndarray,
    k: int,
    tau: float,
    max_levels: int = 10,
    use_cluster_features: bool = True,
    knn_on_means: bool = False,
    min_merge_fraction: float = 0.0,
    device: torch.device | str = "cpu",
    on_level=None,
    knn: KnnConfig | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    first_level: ScoredLevel | None = None,
) -> HierarchyResult:
    """Cluster L2-normalised features level by level until merging stops.

    Each level builds a kNN graph over the current nodes (the samples at level 0, then one
    super-node per cluster, whose feature is its peak's feature), scores it with ``model``, decodes it and
    merges the clusters. Iteration stops when a level adds no edge, after ``max_levels`` levels,
    when fewer than 2 nodes remain, or when a level merges fewer than ``min_merge_fraction`` of its
    nodes. Levels with fewer nodes than k use k = number of nodes.

    Args:
        model: trained LANDER model.
        features: (N, d) float32 L2-normalised features.
        k: neighbours per node, the node itself included.
        tau: link threshold on P(same class).
        max_levels: maximum number of levels to decode.
        use_cluster_features: append each node's cluster mean to its feature (as in training).
        knn_on_means: above level 0, build the kNN graph on the L2-normalised cluster means
            instead of the peak features.
        min_merge_fraction: stall threshold; 0 disables it.
        device: torch device for the model.
        on_level: optional callable ``(level, num_nodes, edges_added)`` run after each level.
        knn: how each level's kNN graph is searched; ``None`` uses ``KnnConfig()``, which is
            exact for small levels and approximate for large ones.
        chunk_size: centres scored per block by the GNN (see :func:`score_level`).
        first_level: level 0 as :func:`score_first_level` returned it for these features and
            k, to decode instead of building and scoring it again.

    Returns:
        :class:`HierarchyResult`, with time and memory of each level in ``level_stats``.
    """
    n_samples = features.shape[0]
    assignment = np.arange(n_samples, dtype=np.int64)
    node_features = features
    means = features
    result = HierarchyResult(labels=assignment.copy())
    for level in range(max_levels):
        num_nodes = node_features.shape[0]
        if num_nodes < 2:
            break
        reset_peak_memory()
        level_k = min(k, num_nodes)
        if level == 0 and first_level is not None:
            scored = first_level
        else:
            knn_features = l2_normalize(means) if (knn_on_means and level > 0) else node_features
            scored = _score_graph(
                model, knn_features, node_features, means, level_k, use_cluster_features, device, knn, chunk_size
            )
            del knn_features
        neighbors, similarities = scored.neighbors, scored.similarities
        prob_same, density = scored.prob_same, scored.density
        knn_stats, gnn_seconds = dict(scored.knn_stats), scored.gnn_seconds
        del scored
        started = time.perf_counter()
        parent, cluster = decode_level(neighbors, prob_same, density, tau)
        del prob_same, density, neighbors, similarities
        edges_added = int(np.count_nonzero(parent >= 0))
        decode_seconds = time.perf_counter() - started
        stats = {
            "level": level, "nodes": num_nodes, "k": level_k, "edges_added": edges_added, "knn": knn_stats,
            "gnn_seconds": gnn_seconds, "decode_seconds": decode_seconds,
        }
        if edges_added > 0:
            assignment = cluster[assignment]
            result.level_labels.append(assignment.copy())
            result.edges_added.append(edges_added)
            peaks = super_nodes(parent, cluster)
            node_features = node_features[peaks]
            means = cluster_means(features, assignment, peaks.shape[0])
            stats["decode_seconds"] = time.perf_counter() - started
        stats["peak_memory"] = peak_memory_bytes()
        result.level_stats.append(stats)
        logger.debug(
            "level %d: %d nodes, k=%d, %d edges added; kNN %.1f s (%s), GNN %.1f s, decoding %.1f s, "
            "peak memory %.2f GiB",
            level, num_nodes, level_k, edges_added, knn_stats.get("seconds", 0.0), knn_stats.get("method"),
            gnn_seconds, stats["decode_seconds"], stats["peak_memory"] / 1024**3,
        )
        if on_level is not None:
            on_level(level, num_nodes, edges_added)
        if edges_added == 0 or edges_added < min_merge_fraction * num_nodes:
            break
    result.labels = assignment
    return result
