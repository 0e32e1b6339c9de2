"""kNN search methods side by side: time, recall against exact search, and same-class share.

Runs each method of :func:`hilander.graph.knn_graph` on the same generated 256-d mixture as
``benchmarks.scaling`` (one class per 50 samples). Recall is measured on 1,000 sampled rows;
the same-class share is the fraction of all k - 1 listed neighbours that share the row's
class, over every row, which is what the clustering downstream depends on.

Usage (from the repository root)::

    python -m benchmarks.knn --n 100000 --output benchmarks/results/knn.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from hilander import __version__
from hilander._files import atomic_path
from hilander.graph import KnnConfig, knn_graph, knn_recall

from .scaling import clustering_mixture

# (label, method, options) in the order they run.
CONFIGS = (
    ("exact", "exact", {}),
    ("ivf (default nprobe)", "ivf", {}),
    ("ivf nprobe=32", "ivf", {"nprobe": 32}),
    ("ivf nprobe=64", "ivf", {"nprobe": 64}),
    ("ivfpq (default nprobe)", "ivfpq", {}),
    ("hnsw", "hnsw", {}),
)


def run(n: int, k: int, labels_filter: list[str] | None = None) -> list[dict]:
    """Time every configuration on the n-sample mixture; return one dict per configuration."""
    features, labels = clustering_mixture(n)
    rows = []
    for label, method, options in CONFIGS:
        if labels_filter and method not in labels_filter:
            continue
        stats: dict = {}
        started = time.perf_counter()
        neighbors, _ = knn_graph(features, k, KnnConfig(method=method, recall_sample=0, **options), stats)
        seconds = time.perf_counter() - started
        rows.append({
            "label": label,
            "method": method,
            "seconds": seconds,
            "parameters": {key: value for key, value in stats.items() if key not in ("method", "seconds")},
            "recall": knn_recall(features, neighbors, 1000, seed=1),
            "same_class_share": float((labels[neighbors[:, 1:]] == labels[:, None]).mean()),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def knn_table(rows: list[dict], k: int) -> str:
    """Format the rows of :func:`run` as a markdown table.

    Recall is over the k - 1 neighbours of each row other than the row itself.
    """
    lines = [f"| method | time (s) | recall@{k - 1} | same-class share | parameters |", "|---|---|---|---|---|"]
    for row in rows:
        parameters = ", ".join(f"{key}={value}" for key, value in row["parameters"].items())
        lines.append(
            f"| {row['label']} | {row['seconds']:.1f} | {row['recall']:.3f} | {row['same_class_share']:.3f} | {parameters} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.knn", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="Samples (default 100000).")
    parser.add_argument("--k", type=int, default=10, help="Neighbours per row, the row itself included (default 10).")
    parser.add_argument("--methods", nargs="+", default=None, choices=["exact", "ivf", "ivfpq", "hnsw"])
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    rows = run(args.n, args.k, args.methods)
    print(knn_table(rows, args.k))
    if args.output:
        report = {
            "command": "python -m benchmarks.knn " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, hilander {__version__}",
            "n": args.n,
            "k": args.k,
            "rows": rows,
        }
        with atomic_path(args.output) as temporary:
            temporary.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
