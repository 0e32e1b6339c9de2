"""kNN graphs over L2-normalised features, built with faiss.

A kNN graph is kept as two dense arrays of shape (n, k): ``neighbors`` (int64 row indices) and
``similarities`` (float32 cosine similarities), one row per node, sorted by decreasing similarity.
Column 0 is always the node itself with similarity 1, so every node has exactly k - 1 real
neighbours. Edges run from neighbour j to centre i, which is how messages flow in the GNN.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

__all__ = ["knn_graph", "nearest_rows", "edge_arrays", "ground_truth_density", "same_label_mask"]

logger = logging.getLogger(__name__)

# Queries per faiss call: bounds the (batch, k) result buffers and keeps progress responsive.
_SEARCH_BATCH = 65536


def knn_graph(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Find the k nearest neighbours of every row by cosine similarity (exact faiss search).

    Args:
        features: (n, d) float32 array of L2-normalised rows.
        k: neighbours per node, the node itself included; 2 <= k <= n.

    Returns:
        ``(neighbors, similarities)``, of shapes (n, k), int64 and float32. Row i starts with i
        itself (similarity 1.0), then its k - 1 nearest other rows by decreasing similarity.
        Exact duplicates of row i may come before other rows, since ties keep faiss's order.

    Raises:
        ValueError: if k < 2 or k > n.
    """
    n, dim = features.shape
    if k < 2:
        raise ValueError(f"k={k} is too small; a kNN graph needs k >= 2 (the node and one neighbour)")
    if k > n:
        raise ValueError(
            f"k={k} is larger than the number of samples ({n}); pass at least k samples or a smaller k"
        )
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(features, dtype=np.float32))

    neighbors = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _SEARCH_BATCH):
        stop = min(start + _SEARCH_BATCH, n)
        sims, ids = index.search(np.ascontiguousarray(features[start:stop], dtype=np.float32), k)
        neighbors[start:stop], similarities[start:stop] = _put_self_first(
            np.arange(start, stop, dtype=np.int64), ids, sims
        )
    return neighbors, similarities


def nearest_rows(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Find, for each query row, the database row of highest inner product (exact faiss search).

    Args:
        queries: (m, d) float32 array.
        database: (c, d) float32 array, c >= 1.

    Returns:
        (m,) int64 index into ``database``.
    """
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    nearest = np.empty(queries.shape[0], dtype=np.int64)
    for start in range(0, queries.shape[0], _SEARCH_BATCH):
        stop = min(start + _SEARCH_BATCH, queries.shape[0])
        _, ids = index.search(np.ascontiguousarray(queries[start:stop], dtype=np.float32), 1)
        nearest[start:stop] = ids[:, 0]
    return nearest


def _put_self_first(
    rows: np.ndarray, ids: np.ndarray, sims: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's own index to column 0, or insert it there when faiss left it out.

    faiss may omit a node from its own result list when more than k - 1 exact duplicates tie with it,
    and may place it after a duplicate. Either way the output has the node first and then the
    first k - 1 other results in faiss's order.
    """
    k = ids.shape[1]
    extended_ids = np.concatenate([rows[:, None], ids], axis=1)
    extended_sims = np.concatenate([np.ones((len(rows), 1), dtype=np.float32), sims], axis=1)
    drop = np.zeros_like(extended_ids, dtype=bool)
    drop[:, 1:] = (ids == rows[:, None]) | (ids < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(extended_ids, order, axis=1)
    out_sims = np.take_along_axis(extended_sims, order, axis=1)
    np.clip(out_sims, -1.0, 1.0, out=out_sims)
    return out_ids, out_sims


def edge_arrays(
    neighbors: np.ndarray, similarities: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten a kNN graph into directed edges neighbour -> centre, self-loops excluded.

    Returns:
        ``(source, target, similarity)``, each of length n * (k - 1); edges of centre i are the
        contiguous block ``[i * (k - 1), (i + 1) * (k - 1))`` in the order of its neighbour list.
    """
    n, k = neighbors.shape
    source = neighbors[:, 1:].reshape(-1)
    target = np.repeat(np.arange(n, dtype=np.int64), k - 1)
    similarity = similarities[:, 1:].reshape(-1)
    return source, target, similarity


def same_label_mask(neighbors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return an (n, k - 1) bool array: whether each real neighbour shares the centre's label."""
    return labels[neighbors[:, 1:]] == labels[:, None]


def ground_truth_density(
    neighbors: np.ndarray, similarities: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Compute the label-aware density of every node.

    density(i) = mean over the k - 1 real neighbours j of sim(i, j) * (+1 if label(j) == label(i)
    else -1). It lies in [-1, 1]: high for a node deep inside its class, low on a class border.

    Returns:
        (n,) float32 array.
    """
    signs = np.where(same_label_mask(neighbors, labels), 1.0, -1.0).astype(np.float32)
    return (similarities[:, 1:] * signs).mean(axis=1).astype(np.float32)
