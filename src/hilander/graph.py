"""kNN graphs over L2-normalised features, built with faiss.

A kNN graph is kept as two dense arrays of shape (n, k): ``neighbors`` (int64 row indices) and
``similarities`` (float32 cosine similarities), one row per node, sorted by decreasing similarity.
Column 0 is always the node itself with similarity 1, so every node has exactly k - 1 real
neighbours. Edges run from neighbour j to centre i, which is how messages flow in the GNN.

Search is exact (``IndexFlatIP``) for small inputs. Past about a hundred thousand rows, exact
search costs minutes to hours on a CPU, so ``method="auto"`` switches to an approximate faiss
index (see :class:`KnnConfig`). The approximate indexes here return exact inner products for the
candidates they find, so only recall, never the stored similarities, is approximate; recall
against exact search is measured on a sample and logged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np
import scipy.sparse as sp

__all__ = [
    "KNN_METHODS",
    "KnnConfig",
    "choose_knn_method",
    "knn_graph",
    "knn_recall",
    "nearest_rows",
    "edge_arrays",
    "ground_truth_density",
    "same_label_mask",
    "shared_neighbor_share",
]

logger = logging.getLogger(__name__)

# Queries per faiss call: bounds the (batch, k) result buffers and keeps progress responsive.
_SEARCH_BATCH = 65536

KNN_METHODS = ("auto", "exact", "ivf", "ivfpq", "hnsw")

# "auto" searches exactly while n * n * d stays below this many multiply-adds: 100,000 rows at
# 256-d, about a minute on 2 cores (docs: BENCHMARKS.md, kNN section).
_EXACT_WORK_LIMIT = 100_000 * 100_000 * 256
# Rows an IVF search scans per query by default. On 256-d mixtures of 100,000 rows this kept
# the share of same-class neighbours at the exact search's level (BENCHMARKS.md, kNN section).
_IVF_CANDIDATES = 2048


@dataclass(frozen=True)
class KnnConfig:
    """How :func:`knn_graph` searches.

    Attributes:
        method: ``"exact"`` (``IndexFlatIP``), ``"ivf"`` (``IndexIVFFlat``: an inverted file of
            ``nlist`` k-means cells, ``nprobe`` of them scanned per query), ``"ivfpq"``
            (``IndexIVFPQ`` with product-quantised codes, whose ``refine_factor`` * k candidates
            are re-scored with exact inner products by ``IndexRefineFlat``), ``"hnsw"``
            (``IndexHNSWFlat`` graph search), or ``"auto"``: exact when n * n * d is below about
            2.6e12, else ``"ivf"``.
        nlist: IVF cells; ``None`` uses 4 * sqrt(n), at least 16.
        nprobe: IVF cells scanned per query. ``None`` scans about 2,000 candidates per query
            (at least 8 cells), so the search time grows linearly with n.
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW candidate list sizes when building and searching;
            ``ef_search=None`` uses max(128, 2 * k).
        refine_factor: for ``"ivfpq"``, candidates re-scored per query, as a multiple of k.
        train_size: rows sampled to train IVF centroids; ``None`` uses 40 * nlist.
        recall_sample: rows whose neighbours are also found exactly, to measure and log the
            recall of an approximate search; 0 skips the check.
        seed: seed for the training and recall samples.
        gpu: search on the first GPU with faiss-gpu (``"exact"`` and ``"ivf"`` only), when the
            installed faiss has GPU support and finds a GPU; otherwise the CPU is used, with a
            log line.
    """

    method: str = "auto"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int | None = None
    refine_factor: int = 4
    train_size: int | None = None
    recall_sample: int = 1000
    seed: int = 0
    gpu: bool = False

    def __post_init__(self) -> None:
        if self.method not in KNN_METHODS:
            raise ValueError(f"knn method {self.method!r} is not supported; use one of {KNN_METHODS}")
        for name in ("nlist", "nprobe", "ef_search", "train_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"knn {name}={value!r} is invalid; use a positive integer or None")
        for name in ("hnsw_m", "ef_construction", "refine_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"knn {name}={value!r} is invalid; use a positive integer")
        if not isinstance(self.recall_sample, int) or self.recall_sample < 0:
            raise ValueError(f"knn recall_sample={self.recall_sample!r} is invalid; use an integer >= 0")

    @classmethod
    def from_options(cls, method: str = "auto", options: dict | None = None) -> "KnnConfig":
        """Build a config from a method name and a dict of the other attributes, checking the names."""
        options = dict(options or {})
        known = set(cls.__dataclass_fields__) - {"method"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown knn option(s) {unknown}; use some of {sorted(known)}")
        return cls(method=method, **options)


def choose_knn_method(n: int, dim: int) -> str:
    """Return the method that ``"auto"`` uses for n rows of dimension dim: exact or ivf."""
    return "exact" if float(n) * n * dim <= _EXACT_WORK_LIMIT else "ivf"


def knn_graph(
    features: np.ndarray, k: int, config: KnnConfig | None = None, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Find the k nearest neighbours of every row by cosine similarity.

    Args:
        features: (n, d) float32 array of L2-normalised rows.
        k: neighbours per node, the node itself included; 2 <= k <= n.
        config: search method and its parameters; ``None`` uses ``KnnConfig()`` (``"auto"``).
        stats: optional dict that receives ``method`` (the one used), ``seconds`` and, for an
            approximate search with ``recall_sample`` > 0, ``recall`` (see :func:`knn_recall`).

    Returns:
        ``(neighbors, similarities)``, of shapes (n, k), int64 and float32. Row i starts with i
        itself (similarity 1.0), then its k - 1 nearest other rows by decreasing similarity.
        Exact duplicates of row i may come before other rows, since ties keep faiss's order.
        An approximate search that finds fewer than k - 1 other rows for a node fills the rest
        of its row with the node itself at similarity 0. Such a slot adds nothing to the GNN's
        weighted mean or to density, and it is never a denser neighbour in decoding.

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
    config = config or KnnConfig()
    method = choose_knn_method(n, dim) if config.method == "auto" else config.method
    started = time.perf_counter()
    data = np.ascontiguousarray(features, dtype=np.float32)
    index, parameters = _build_index(data, k, method, config)
    if config.gpu:
        index, parameters["gpu"] = _to_gpu(index, method)

    neighbors = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, _SEARCH_BATCH):
        stop = min(start + _SEARCH_BATCH, n)
        sims, ids = index.search(data[start:stop], k)
        neighbors[start:stop], similarities[start:stop] = _put_self_first(
            np.arange(start, stop, dtype=np.int64), ids, sims
        )
    del index
    seconds = time.perf_counter() - started
    if stats is not None:
        stats.update(method=method, seconds=seconds, **parameters)
    if method != "exact":
        message = f"kNN graph of {n} rows, k={k}, {method} {parameters}: {seconds:.1f} s"
        if config.recall_sample > 0:
            recall = knn_recall(data, neighbors, config.recall_sample, config.seed)
            if stats is not None:
                stats["recall"] = recall
            message += f", recall@{k - 1} {recall:.3f} on {min(config.recall_sample, n)} sampled rows"
        logger.info(message)
    return neighbors, similarities


def _build_index(data: np.ndarray, k: int, method: str, config: KnnConfig):
    """Build and fill the faiss index of ``method``; return it with the parameters it used."""
    n, dim = data.shape
    if method == "exact":
        index = faiss.IndexFlatIP(dim)
        index.add(data)
        return index, {}
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.add(data)
        index.hnsw.efSearch = config.ef_search or max(128, 2 * k)
        return index, {"hnsw_m": config.hnsw_m, "ef_search": index.hnsw.efSearch}
    nlist = config.nlist or max(16, int(4 * math.sqrt(n)))
    nlist = min(nlist, max(1, n // 4))
    nprobe = min(config.nprobe or max(8, round(_IVF_CANDIDATES * nlist / n)), nlist)
    quantizer = faiss.IndexFlatIP(dim)
    if method == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, _pq_subquantizers(dim), 8, faiss.METRIC_INNER_PRODUCT)
    # faiss warns below 39 training rows per cell; the small-n case trains on every row anyway.
    index.cp.min_points_per_centroid = 1
    train_size = min(n, config.train_size or 40 * nlist)
    sample = np.random.default_rng(config.seed).choice(n, size=train_size, replace=False) if train_size < n else slice(None)
    index.train(np.ascontiguousarray(data[sample]))
    index.nprobe = nprobe
    parameters = {"nlist": nlist, "nprobe": nprobe, "train_size": int(train_size)}
    if method == "ivfpq":
        index = faiss.IndexRefineFlat(index)
        index.k_factor = float(config.refine_factor)
        parameters["refine_factor"] = config.refine_factor
    index.add(data)
    # IndexRefineFlat keeps a reference to the IVF index, so the wrapper owns nothing to free.
    return index, parameters


def _to_gpu(index, method: str):
    """Move ``index`` to GPU 0 when faiss-gpu and a GPU are present; return (index, moved)."""
    # NOTE: this path has not run here; the development machine has faiss-cpu and no GPU.
    if method not in ("exact", "ivf") or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        logger.info("kNN search stays on the CPU: %s on GPU needs faiss-gpu and a visible GPU", method)
        return index, False
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keeps the resources alive as long as the index
    return gpu_index, True


def _pq_subquantizers(dim: int) -> int:
    """Return the largest number of PQ sub-vectors, at most dim / 4, that divides dim."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def knn_recall(features: np.ndarray, neighbors: np.ndarray, sample: int = 1000, seed: int = 0) -> float:
    """Measure the recall of a kNN graph against exact search on a random sample of rows.

    For each sampled row, recall is the share of its k - 1 exact nearest other rows that appear
    among its k - 1 listed neighbours; the mean over the sample is returned. Ties at the k-th
    similarity can make an exact graph score slightly below 1.

    Args:
        features: (n, d) float32 L2-normalised rows the graph was built on.
        neighbors: (n, k) neighbour lists from :func:`knn_graph`.
        sample: number of rows to check (all rows when n is smaller).
        seed: seed of the sample.

    Returns:
        Recall in [0, 1].
    """
    n, k = neighbors.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(np.ascontiguousarray(features, dtype=np.float32))
    sims, ids = index.search(np.ascontiguousarray(features[rows], dtype=np.float32), k)
    exact_ids, _ = _put_self_first(rows.astype(np.int64), ids, sims)
    found = neighbors[rows, 1:]
    hits = (found[:, :, None] == exact_ids[:, None, 1:]).any(axis=2)
    return float(hits.mean())


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
    first k - 1 other results in faiss's order. Slots that faiss left empty (id -1, which an
    approximate index returns when it finds too few candidates) hold the node itself at
    similarity 0.
    """
    k = ids.shape[1]
    extended_ids = np.concatenate([rows[:, None], ids], axis=1)
    extended_sims = np.concatenate([np.ones((len(rows), 1), dtype=np.float32), sims], axis=1)
    drop = np.zeros_like(extended_ids, dtype=bool)
    drop[:, 1:] = (ids == rows[:, None]) | (ids < 0)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(extended_ids, order, axis=1)
    out_sims = np.take_along_axis(extended_sims, order, axis=1)
    empty = np.take_along_axis(drop, order, axis=1)
    if empty.any():
        out_ids = np.where(empty, rows[:, None], out_ids)
        out_sims = np.where(empty, np.float32(0.0), out_sims)
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


# Entries of the (rows, n) sparse count matrix per block of shared_neighbor_share. A block has
# at most rows * k * k entries, so its memory does not grow with n.
_SHARED_BLOCK_ENTRIES = 1 << 22


def shared_neighbor_share(neighbors: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Return, for every edge of a kNN graph, the share of neighbours its two ends have in common.

    For centre i and its neighbour j (both lists including the node itself), the share is
    ``|N(i) & N(j)| / k``. Two samples of one class tend to share most of their neighbours even
    when their own similarity is modest, while two samples on either side of a class border share
    few. Unlike a learned function of the features, this count does not depend on where the
    classes lie in the embedding space, so it carries over to classes that training never saw.

    The counts are the entries of ``A @ A.T`` at the graph's edges, where ``A`` is the (n, n)
    0/1 membership matrix of the lists; SciPy computes them for one block of centres at a time.
    A list padded with repeats of the node itself (an approximate search that found too few
    rows) counts each member once.

    Args:
        neighbors: (n, k) int64 kNN lists of the whole graph, column 0 being the node itself.
        start, stop: the centres to compute, rows ``start`` to ``stop`` (default: all rows).

    Returns:
        (stop - start, k - 1) float32 array in [0, 1], aligned with ``neighbors[start:stop, 1:]``.
    """
    n, k = neighbors.shape
    stop = n if stop is None else min(stop, n)
    out = np.empty((max(stop - start, 0), k - 1), dtype=np.float32)
    if k < 2 or stop <= start:
        return out
    membership = sp.csr_matrix(
        (np.ones(n * k, dtype=np.float32), neighbors.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
    )
    membership.sum_duplicates()
    membership.data[:] = 1.0
    transposed = membership.T.tocsr()
    rows = max(1, _SHARED_BLOCK_ENTRIES // (k * k))
    for first in range(start, stop, rows):
        last = min(first + rows, stop)
        counts = (membership[first:last] @ transposed).tocsr()
        centre = np.repeat(np.arange(last - first), k - 1)
        common = np.asarray(counts[centre, neighbors[first:last, 1:].ravel()]).reshape(last - first, k - 1)
        out[first - start : last - start] = common / np.float32(k)
    return out


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
