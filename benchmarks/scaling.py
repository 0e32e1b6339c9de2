"""Time and peak memory against the number of samples, for hilander and the baselines that can follow.

Every run clusters a generated mixture (``benchmarks.synthetic``) of N unit vectors in 256
dimensions, one class per 50 samples on average with Zipf-like sizes. hilander's model is
trained once on a separate mixture (other classes, the same generator), and each baseline's
free parameter is tuned once on that mixture. Each (method, N) pair then runs in its own
process, so that its peak memory is its own, under a wall-clock budget: a run that does not
finish within it is recorded as over budget, not dropped.

Usage (from the repository root)::

    python -m benchmarks.scaling --sizes 10000 30000 100000 300000 1000000 \
        --methods hilander kmeans infomap --budget 900 \
        --output benchmarks/results/scaling.json --plot benchmarks/scaling.png

``--exact-check N`` also clusters the N-sample set with exact kNN and with the IVF index and
reports both pairwise F-scores, so that the cost of approximate search in quality is measured.
Peak memory is the resident set size high-water mark of the run's process, which includes the
generated input array (N x 256 x 4 bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from hilander import HiLander, __version__
from hilander._files import atomic_path
from hilander.metrics import evaluate
from hilander.resources import process_peak_memory_bytes

from .baselines import BASELINES, noise_to_singletons
from .synthetic import make_mixture

logger = logging.getLogger("benchmarks.scaling")

DIM = 256
SAMPLES_PER_CLASS = 50
# The generator's settings, shared by the meta-train and the test mixtures.
MIXTURE = {"zipf_exponent": 1.0, "min_size": 5, "spread_range": (0.8, 2.0), "centre_similarity": 0.5}
TRAIN_SAMPLES = 20_000
TRAIN_SEED = 1000
DEFAULT_CACHE = Path("benchmarks/.cache")


def clustering_mixture(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the n-sample test mixture; its classes are disjoint from the meta-train mixture's.

    Its class centres share the meta-train mixture's shared direction, as the embeddings of new
    classes from one encoder share the space of its training classes.
    """
    return make_mixture(n, max(2, n // SAMPLES_PER_CLASS), dim=DIM, seed=n, shared_seed=TRAIN_SEED, **MIXTURE)


def train_set(n: int = TRAIN_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Return the meta-train mixture of n samples."""
    return make_mixture(n, max(2, n // SAMPLES_PER_CLASS), dim=DIM, seed=TRAIN_SEED, **MIXTURE)


# ---------------------------------------------------------------------------- one run (child)


def run_one(job: dict) -> dict:
    """Cluster the job's test set with its method; return metrics, stage times and peak memory."""
    features, labels = clustering_mixture(job["n"])
    started = time.perf_counter()
    stages = {}
    if job["method"] == "hilander":
        model = HiLander.load(job["model"])
        model.set_params(knn_method=job.get("knn_method", "auto"))
        result = model.predict_hierarchy(features)
        predicted = result.labels
        stages = _hilander_stages(result.level_stats)
    else:
        method = BASELINES[job["method"]]()
        predicted = noise_to_singletons(np.asarray(method.run(features, job["parameter"], int(labels.max()) + 1)))
    seconds = time.perf_counter() - started
    return {
        "status": "done",
        "seconds": seconds,
        "peak_memory": process_peak_memory_bytes(),
        "input_bytes": int(features.nbytes),
        "metrics": evaluate(labels, predicted),
        "stages": stages,
    }


def _hilander_stages(level_stats: list[dict]) -> dict:
    """Sum kNN, GNN and decoding time over levels, and keep each level's figures."""
    return {
        "knn_seconds": sum(level["knn"].get("seconds", 0.0) for level in level_stats),
        "gnn_seconds": sum(level["gnn_seconds"] for level in level_stats),
        "decode_seconds": sum(level["decode_seconds"] for level in level_stats),
        "levels": [
            {
                "nodes": level["nodes"],
                "knn_method": level["knn"].get("method"),
                "knn_seconds": level["knn"].get("seconds", 0.0),
                "recall": level["knn"].get("recall"),
                "gnn_seconds": level["gnn_seconds"],
                "decode_seconds": level["decode_seconds"],
                "peak_memory": level["peak_memory"],
            }
            for level in level_stats
        ],
    }


# ---------------------------------------------------------------------------- driver (parent)


def prepare(methods: list[str], cache: Path, hilander_params: dict, train_samples: int = TRAIN_SAMPLES) -> dict:
    """Fit hilander and tune the baselines on the meta-train mixture; return per-method settings."""
    features, labels = train_set(train_samples)
    settings = {}
    for name in methods:
        started = time.perf_counter()
        if name == "hilander":
            # Keyed by every constructor argument, defaults included, so that a change of defaults
            # fits a new model instead of loading one fitted with the old ones.
            resolved = HiLander(**hilander_params).get_params()
            key = json.dumps([resolved, train_samples, TRAIN_SEED, MIXTURE, __version__], sort_keys=True, default=str)
            path = cache / f"scaling-model-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
            if not path.exists():
                cache.mkdir(parents=True, exist_ok=True)
                HiLander(**hilander_params).fit(features, labels).save(path)
                logger.info("fitted hilander on %d samples in %.0f s", features.shape[0], time.perf_counter() - started)
            model = HiLander.load(path)
            settings[name] = {
                "model": str(path), "fit_seconds": time.perf_counter() - started,
                "setting": model.chosen_settings(),
            }
        else:
            method = BASELINES[name]()
            parameter = method.tune(features, labels)
            settings[name] = {"parameter": parameter, "setting": method.describe(parameter), "fit_seconds": time.perf_counter() - started}
        logger.info("%s: %s", name, settings[name]["setting"])
    return settings


def launch(job: dict, budget: float) -> dict:
    """Run one job in a fresh process with a wall-clock budget."""
    command = [sys.executable, "-m", "benchmarks.scaling", "--child", json.dumps(job)]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=budget, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "over budget", "seconds": budget}
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-3:]
        return {"status": "failed", "seconds": time.perf_counter() - started, "error": " | ".join(tail)}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def scaling_table(runs: list[dict]) -> str:
    lines = [
        "| method | N | status | time (s) | kNN (s) | GNN (s) | decoding (s) | peak memory (GiB) | pairwise F | BCubed F | clusters (true) |",
        "|" + "---|" * 11,
    ]
    for run in runs:
        r = run["result"]
        if r["status"] != "done":
            reason = "not run: over budget at a smaller N" if r.get("skipped") else f"budget {r['seconds']:.0f} s"
            lines.append(f"| {run['method']} | {run['n']:,} | {r['status']} ({reason}) |" + " |" * 8)
            continue
        st, m = r["stages"], r["metrics"]
        stage = [f"{st[key]:.1f}" if st else "" for key in ("knn_seconds", "gnn_seconds", "decode_seconds")]
        lines.append(
            f"| {run['method']} | {run['n']:,} | done | {r['seconds']:.1f} | {' | '.join(stage)} | "
            f"{r['peak_memory'] / 1024**3:.2f} | {m['pairwise_f']:.3f} | {m['bcubed_f']:.3f} | "
            f"{m['n_clusters']:,} ({m['n_classes']:,}) |"
        )
    return "\n".join(lines)


def levels_table(runs: list[dict]) -> str:
    """Format each hilander level of the finished runs as a markdown table, one line per level.

    The recall is that of the level's approximate kNN lists against exact search on sampled rows.
    Exact search has none.
    """
    lines = [
        "| N | level | nodes | kNN method | kNN (s) | kNN recall | GNN (s) | decoding (s) | peak memory (GiB) |",
        "|" + "---|" * 9,
    ]
    for run in runs:
        result = run["result"]
        if run["method"] != "hilander" or result["status"] != "done":
            continue
        for level, stats in enumerate(result["stages"]["levels"]):
            recall = "(exact)" if stats["recall"] is None else f"{stats['recall']:.3f}"
            lines.append(
                f"| {run['n']:,} | {level} | {stats['nodes']:,} | {stats['knn_method']} | {stats['knn_seconds']:.1f} | "
                f"{recall} | {stats['gnn_seconds']:.1f} | {stats['decode_seconds']:.1f} | {stats['peak_memory'] / 1024**3:.2f} |"
            )
    return "\n".join(lines)


def exact_check_table(checks: list[dict]) -> str:
    """Format the ``--exact-check`` runs, one per kNN method at level 0, as a markdown table."""
    lines = ["| kNN at level 0 | N | pairwise F | BCubed F | clusters (true) | time (s) |", "|" + "---|" * 6]
    for check in checks:
        r = check["result"]
        if r["status"] != "done":
            lines.append(f"| {check['knn_method']} | {check['n']:,} | {r['status']} | | | {r['seconds']:.1f} |")
            continue
        m = r["metrics"]
        lines.append(
            f"| {check['knn_method']} | {check['n']:,} | {m['pairwise_f']:.3f} | {m['bcubed_f']:.3f} | "
            f"{m['n_clusters']:,} ({m['n_classes']:,}) | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], path: Path, budget: float) -> None:
    """Draw time and peak memory against N on log-log axes; over-budget runs are marked at the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(run["method"] for run in runs):
        done = [run for run in runs if run["method"] == method and run["result"]["status"] == "done"]
        over = [run for run in runs if run["method"] == method and run["result"]["status"] == "over budget"]
        if done:
            sizes = [run["n"] for run in done]
            line, = time_axis.plot(sizes, [run["result"]["seconds"] for run in done], marker="o", label=method)
            memory_axis.plot(sizes, [run["result"]["peak_memory"] / 1024**3 for run in done], marker="o", color=line.get_color(), label=method)
            color = line.get_color()
        else:
            color = None
        if over:
            time_axis.scatter([run["n"] for run in over], [budget] * len(over), marker="x", s=60, color=color,
                              label=f"{method}: over budget" if done else f"{method} (over budget)")
    time_axis.axhline(budget, color="grey", linewidth=0.8, linestyle=":")
    for axis, label in ((time_axis, "wall time (s)"), (memory_axis, "peak memory (GiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("samples N (256-d)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", linewidth=0.3)
    time_axis.legend(fontsize=8)
    figure.suptitle(f"Clustering N synthetic embeddings on {os.cpu_count()} CPU cores ({date.today().isoformat()})", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=["hilander", "kmeans", "infomap"], choices=["hilander", *BASELINES])
    parser.add_argument("--budget", type=float, default=900.0, help="Wall-clock seconds allowed per run (default 900).")
    parser.add_argument("--exact-check", type=int, default=None, metavar="N", help="Also cluster the N-sample set with exact and IVF kNN and compare.")
    parser.add_argument("--hilander-params", type=json.loads, default={}, help="HiLander arguments as JSON for the model fit.")
    parser.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES, help=f"Size of the meta-train mixture (default {TRAIN_SAMPLES}).")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="Folder for the fitted model (default benchmarks/.cache).")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument("--plot", type=Path, default=None, help="Write the time and memory plot (PNG) here.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_one(json.loads(args.child))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = prepare(args.methods, args.cache, args.hilander_params, args.train_samples)
    runs = []
    over_budget = set()
    for n in sorted(args.sizes):
        for method in args.methods:
            if method in over_budget:
                # A method that ran out of time at a smaller N would only use up the budget again.
                runs.append({"method": method, "n": n, "result": {"status": "over budget", "seconds": args.budget, "skipped": True}})
                continue
            job = {"method": method, "n": n, **{key: value for key, value in settings[method].items() if key in ("model", "parameter")}}
            result = launch(job, args.budget)
            if result["status"] == "over budget":
                over_budget.add(method)
            runs.append({"method": method, "n": n, "result": result})
            logger.info("%s N=%d: %s", method, n, {key: result.get(key) for key in ("status", "seconds", "peak_memory")})
    checks = []
    if args.exact_check and "hilander" in settings:
        for knn_method in ("exact", "ivf"):
            job = {"method": "hilander", "n": args.exact_check, "model": settings["hilander"]["model"], "knn_method": knn_method}
            result = launch(job, args.budget)
            checks.append({"knn_method": knn_method, "n": args.exact_check, "result": result})
            logger.info("exact check %s: %s", knn_method, result.get("metrics", result))
    print(scaling_table(runs))
    if checks:
        print()
        print(exact_check_table(checks))
    report = {
        "command": "python -m benchmarks.scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, hilander {__version__}",
        "budget_seconds": args.budget,
        "settings": settings,
        "runs": runs,
        "exact_check": checks,
    }
    if args.output:
        with atomic_path(args.output) as temporary:
            temporary.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(runs, args.plot, args.budget)


if __name__ == "__main__":
    main()
