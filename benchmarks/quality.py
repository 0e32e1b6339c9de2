"""Clustering quality of hilander against tuned baselines on unseen classes, side by side.

For each dataset, every method gets the same embeddings. Its free parameter is tuned on the
meta-train classes only, and then it clusters the test classes, which no method was tuned on.

Usage (from the repository root)::

    python -m benchmarks.quality --datasets clinc150 banking77 --seeds 0 1 2 \
        --output benchmarks/results/quality.json

Methods that depend on the seed (hilander, k-means, Infomap) run once per seed and the table
shows the median of each metric with the range of the F-scores; the others run once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from hilander import HiLander, __version__
from hilander._files import atomic_path
from hilander.datasets import DATASETS, load_open_set_split
from hilander.metrics import evaluate

from .baselines import BASELINES

logger = logging.getLogger("benchmarks.quality")

COLUMNS = ("pairwise_f", "bcubed_f", "nmi", "pairwise_precision", "pairwise_recall", "n_clusters")


def run_hilander(split, seed: int) -> tuple[dict, str, float]:
    started = time.perf_counter()
    model = HiLander(random_state=seed).fit(split.train_features, split.train_labels)
    predicted = model.predict(split.test_features)
    seconds = time.perf_counter() - started
    setting = (
        f"k={model.k_}, tau={model.tau_:.2f}, levels={model.n_levels_}, "
        f"min_cluster_size={model.min_cluster_size_}, epoch={model.best_epoch_}"
    )
    return evaluate(split.test_labels, predicted), setting, seconds


def run_baseline(name: str, split, seed: int) -> tuple[dict, str, float]:
    method = BASELINES[name](seed=seed) if name in SEEDED else BASELINES[name]()
    started = time.perf_counter()
    parameter = method.tune(split.train_features, split.train_labels)
    n_classes = int(np.unique(split.test_labels).shape[0])
    predicted = method.run(split.test_features, parameter, n_classes)
    seconds = time.perf_counter() - started
    return evaluate(split.test_labels, predicted), method.describe(parameter), seconds


SEEDED = {"hilander", "kmeans", "infomap"}


def summarize(runs: list[dict]) -> dict:
    """Return the median of every metric over runs, and the (min, max) of the two F-scores."""
    summary = {key: float(np.median([run["metrics"][key] for run in runs])) for key in runs[0]["metrics"]}
    for key in ("n_clusters", "n_classes"):
        summary[key] = int(round(summary[key]))
    for key in ("pairwise_f", "bcubed_f"):
        values = [run["metrics"][key] for run in runs]
        summary[f"{key}_range"] = [min(values), max(values)]
    return summary


def _with_range(metrics: dict, key: str, runs: int) -> str:
    low, high = metrics[f"{key}_range"]
    return f"{metrics[key]:.3f}" + (f" ({low:.3f}-{high:.3f})" if runs > 1 else "")


def markdown_table(rows: list[dict]) -> str:
    header = (
        "| dataset | method | setting | runs | pairwise F | BCubed F | NMI | pairwise P | pairwise R "
        "| clusters (true) | time (s) |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        m, runs = row["metrics"], len(row["runs"])
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['setting']} | {runs} | "
            f"{_with_range(m, 'pairwise_f', runs)} | {_with_range(m, 'bcubed_f', runs)} | {m['nmi']:.3f} | "
            f"{m['pairwise_precision']:.3f} | {m['pairwise_recall']:.3f} | {m['n_clusters']} ({m['n_classes']}) | "
            f"{row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=["hilander", *BASELINES], choices=["hilander", *BASELINES])
    parser.add_argument("--data-dir", default=None, help="Folder that contains the dataset folders.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Seeds for hilander, k-means and Infomap.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    rows = []
    for dataset in args.datasets:
        split = load_open_set_split(dataset, args.data_dir)
        for method in args.methods:
            name = "hilander" if method == "hilander" else BASELINES[method].name
            runs = []
            for seed in args.seeds if method in SEEDED else args.seeds[:1]:
                logger.info("%s: running %s, seed %d", dataset, method, seed)
                run = run_hilander if method == "hilander" else lambda split, seed: run_baseline(method, split, seed)
                metrics, setting, seconds = run(split, seed)
                runs.append({"seed": seed, "setting": setting, "metrics": metrics, "seconds": seconds})
                logger.info("%s %s seed %d: %s", dataset, name, seed, {c: metrics[c] for c in COLUMNS})
            settings = list(dict.fromkeys(run["setting"] for run in runs))
            rows.append({
                "dataset": dataset,
                "method": name,
                "setting": "; ".join(settings),
                "metrics": summarize(runs),
                "seconds": float(np.median([run["seconds"] for run in runs])),
                "runs": runs,
            })

    table = markdown_table(rows)
    print(table)
    if args.output is not None:
        report = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "versions": {"hilander": __version__, "torch": torch.__version__, "numpy": np.__version__},
            "rows": rows,
        }
        with atomic_path(args.output) as temporary:
            temporary.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
