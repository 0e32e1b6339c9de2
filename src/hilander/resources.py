"""Memory of the running process, and a memory estimate for clustering before any work starts.

Peak memory is the resident set size high-water mark (``VmHWM`` on Linux). On Linux the mark
can be reset between stages, so each stage reports its own peak; elsewhere the peak since the
process started is reported.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from dataclasses import dataclass

__all__ = [
    "peak_memory_bytes",
    "process_peak_memory_bytes",
    "reset_peak_memory",
    "available_memory_bytes",
    "MemoryEstimate",
    "estimate_memory",
    "check_memory",
]

logger = logging.getLogger(__name__)

_GIB = 1024**3

# The highest peak seen before any reset, so that the peak of the whole process stays known.
_peak_before_resets = 0


def peak_memory_bytes() -> int:
    """Return the peak resident memory of this process in bytes (since start or the last reset)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def process_peak_memory_bytes() -> int:
    """Return the peak resident memory since the process started, across resets."""
    return max(_peak_before_resets, peak_memory_bytes())


def reset_peak_memory() -> bool:
    """Reset the peak-memory mark to the current usage, where the OS allows it (Linux).

    :func:`process_peak_memory_bytes` still reports the peak of the whole process.

    Returns:
        True if the mark was reset, False if :func:`peak_memory_bytes` keeps counting from the
        start of the process.
    """
    global _peak_before_resets
    _peak_before_resets = process_peak_memory_bytes()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def available_memory_bytes() -> int | None:
    """Return the memory that a new allocation can use without swapping, or None if unknown.

    Reads ``MemAvailable`` from ``/proc/meminfo`` and, inside a container, the cgroup limit
    minus current usage, whichever is smaller.
    """
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit_file:
            limit_text = limit_file.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as current_file:
            current = int(current_file.read().strip())
        if limit_text != "max":
            in_cgroup = int(limit_text) - current
            available = in_cgroup if available is None else min(available, in_cgroup)
    except (OSError, ValueError):
        pass
    return available


@dataclass
class MemoryEstimate:
    """Bytes that clustering n samples will hold at its peak, by part.

    Attributes:
        input: the caller's input array, which stays alive during ``predict``.
        features: the L2-normalised copy of the input that clustering works on.
        knn_index: the faiss index while the level-0 graph is searched (a copy of the rows,
            plus the HNSW links for ``"hnsw"``).
        graph: the level-0 neighbour lists, similarities and link probabilities.
        gnn: node projections kept for link scoring, plus one block of node inputs and
            embeddings.
        total: the peak: the runtime's own memory plus 15% slack on the input, the rows, the
            neighbour lists and the larger of the search stage and the scoring stage.
    """

    input: int
    features: int
    knn_index: int
    graph: int
    gnn: int
    total: int

    def describe(self) -> str:
        """Return the estimate as one line in GiB."""
        parts = ", ".join(
            f"{name} {getattr(self, name) / _GIB:.2f}" for name in ("input", "features", "knn_index", "graph", "gnn")
        )
        return f"{self.total / _GIB:.2f} GiB at peak ({parts} GiB, plus the runtime and slack)"


def estimate_memory(
    n: int,
    dim: int,
    k: int,
    hidden: int = 512,
    num_layers: int = 1,
    use_cluster_features: bool = True,
    chunk_size: int | None = None,
    knn_method: str = "exact",
    hnsw_m: int = 32,
) -> MemoryEstimate:
    """Estimate the peak memory of clustering n samples of dimension dim, without allocating it.

    Level 0 is the largest level, so its two stages bound the whole run: the kNN search holds the
    rows and the index; GNN scoring holds the rows, the graph, the per-node projections and one
    block of ``chunk_size`` centres with their neighbours. Python, torch and faiss themselves take
    about 0.75 GiB, and 15% is added to the arrays for allocator slack and temporaries. With
    those two terms the estimate was 5% to 25% above the peaks measured by the scaling benchmark
    (13,000 to 1,000,000 rows); it is an estimate, not a bound.

    Args:
        n: samples to cluster.
        dim: feature dimension.
        k: neighbours per node at level 0, the node itself included.
        hidden, num_layers, use_cluster_features: the model's settings.
        chunk_size: centres scored per block; ``None`` scores all n at once.
        knn_method: ``"exact"``, ``"ivf"``, ``"ivfpq"`` or ``"hnsw"`` (resolve ``"auto"`` first
            with :func:`hilander.graph.choose_knn_method`).
        hnsw_m: HNSW links per node, for ``"hnsw"``.

    Returns:
        :class:`MemoryEstimate` in bytes.
    """
    floats = 4
    features = n * dim * floats
    if knn_method == "hnsw":
        knn_index = features + n * hnsw_m * 2 * 4
    elif knn_method == "ivfpq":
        # PQ codes plus the exact copy that IndexRefineFlat re-scores with.
        knn_index = features + n * (dim // 4 + 8)
    elif knn_method == "ivf":
        knn_index = features + n * 8
    else:
        knn_index = features
    # Neighbour ids (int64), similarities, link probabilities, and the edge arrays built from them.
    graph = n * k * (8 + 4 + 4) + n * (k - 1) * (8 + 8 + 4 + 4)
    # Shared-neighbour shares, one float32 per edge.
    graph += n * (k - 1) * 4
    in_dim = dim * (2 if use_cluster_features else 1)
    block = n if chunk_size is None else min(n, chunk_size)
    block_nodes = min(n, block * k)
    # Layers before the last keep their (n, hidden) output for the next layer to read.
    stored_layers = max(0, num_layers - 1) * n * hidden * floats
    projections = 3 * n * (hidden // 2) * floats
    # One block: inputs and embeddings of its nodes, then the concatenated edge features.
    block_work = block_nodes * (in_dim + hidden) * floats + block * (k - 1) * (3 * hidden // 2 + 1) * floats
    # Computing the shares needs the sparse membership matrix and its transpose (float32 values,
    # int32 column ids) while the projections are kept, before the blocks are scored.
    membership = 2 * n * k * (4 + 4)
    gnn = projections + stored_layers + max(block_work, membership)
    runtime = 3 * _GIB // 4
    arrays = 2 * features + graph + max(knn_index, gnn)
    total = runtime + int(1.15 * arrays)
    return MemoryEstimate(input=features, features=features, knn_index=knn_index, graph=graph, gnn=gnn, total=total)


def check_memory(estimate: MemoryEstimate, job: str, available: int | None = None) -> None:
    """Raise MemoryError before any work starts when ``estimate`` exceeds the available memory.

    Args:
        estimate: from :func:`estimate_memory`.
        job: the work being checked, for the message (for example "clustering 1000000 x 256
            with k=10").
        available: bytes available; ``None`` reads them from the OS, and an unknown amount
            passes with a log line.

    Raises:
        MemoryError: naming the estimate, the available memory and the settings that lower it.
    """
    available = available_memory_bytes() if available is None else available
    if available is None:
        logger.info("%s needs about %s; available memory is unknown here", job, estimate.describe())
        return
    logger.info("%s needs about %s; %.2f GiB available", job, estimate.describe(), available / _GIB)
    if estimate.total > available:
        raise MemoryError(
            f"{job} needs about {estimate.total / _GIB:.2f} GiB ({estimate.describe()}), but only "
            f"{available / _GIB:.2f} GiB is available; lower chunk_size (--chunk-size), use the 'ivfpq' "
            "kNN method, reduce k, or cluster on a machine with more memory"
        )
