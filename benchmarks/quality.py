"""Clustering quality of hilander against tuned baselines on unseen classes, side by side.

For each dataset, every method gets the same embeddings. Its free parameter is tuned on the
meta-train classes only, and then it clusters the test classes, which no method was tuned on.

Usage (from the repository root)::

    python -m benchmarks.quality --datasets clinc150 banking77 --seeds 0 1 2 \
        --output benchmarks/results/quality.json

Methods that depend on the seed (hilander, k-means, Infomap) run once per seed and the table
shows the median of each metric with the range of the F-scores; the others run once.

``--synthetic N`` adds a generated open-set split of N samples (see ``benchmarks.synthetic``), so
the harness runs without the shared data. Without ``--datasets`` it runs that split alone.
``--hilander-params`` passes HiLander constructor arguments as JSON, for example
``'{"epochs": 2, "hidden": 32}'`` for a quick check. ``--update-markdown BENCHMARKS.md`` then
regenerates the tables of that file whose markers name the ``--output`` file (see
``benchmarks.report``). ``python -m benchmarks`` and ``python -m benchmarks quality`` run this module.
"""

from __future__ import annotations

import argparse
import hashlib
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
from hilander.datasets import DATASETS, OpenSetSplit, load_open_set_split
from hilander.metrics import evaluate

from .baselines import BASELINES, noise_to_singletons
from .synthetic import make_open_set_split

logger = logging.getLogger("benchmarks.quality")

COLUMNS = ("pairwise_f", "bcubed_f", "nmi", "pairwise_precision", "pairwise_recall", "n_clusters")


# Fitted models by (meta-train data, seed, parameters), so that datasets that share their
# meta-train set (clinc150 and its variants) fit once per seed. Values are (model, fit seconds).
_FITTED: dict[tuple, tuple[HiLander, float]] = {}


def _fitted_hilander(split, seed: int, params: dict) -> tuple[HiLander, float]:
    digest = hashlib.sha256(split.train_features.tobytes() + split.train_labels.tobytes()).hexdigest()
    key = (digest, seed, json.dumps(params, sort_keys=True))
    if key not in _FITTED:
        started = time.perf_counter()
        model = HiLander(**params, random_state=seed).fit(split.train_features, split.train_labels)
        _FITTED[key] = (model, time.perf_counter() - started)
    return _FITTED[key]


def run_hilander(split, seed: int, params: dict | None = None) -> tuple[dict, str, float]:
    """Fit (or reuse a fit on the same meta-train data) and cluster; the time is fit plus predict.

    The metrics gain ``validation_pairwise_f`` and ``validation_bcubed_f``: the fold means, on the
    held-out meta-train classes, of the setting that ``fit`` chose.
    """
    model, fit_seconds = _fitted_hilander(split, seed, params or {})
    started = time.perf_counter()
    predicted = model.predict(split.test_features)
    seconds = fit_seconds + time.perf_counter() - started
    setting = model.chosen_settings()
    metrics = evaluate(split.test_labels, predicted)
    metrics["validation_pairwise_f"] = float(model.validation_["pairwise_f"])
    metrics["validation_bcubed_f"] = float(model.validation_["bcubed_f"])
    return metrics, setting, seconds


def run_baseline(name: str, split, seed: int) -> tuple[dict, str, float]:
    method = BASELINES[name](seed=seed) if name in SEEDED else BASELINES[name]()
    started = time.perf_counter()
    parameter = method.tune(split.train_features, split.train_labels)
    n_classes = int(np.unique(split.test_labels).shape[0])
    predicted = method.run(split.test_features, parameter, n_classes)
    seconds = time.perf_counter() - started
    return evaluate(split.test_labels, predicted), method.describe(parameter), seconds


SEEDED = {"hilander", "kmeans", "infomap"}
SYNTHETIC = "synthetic"
# Variants of the shared datasets: out-of-scope queries added to the test set as noise, and
# meta-training on one dataset while clustering the test classes of another.
WITH_NOISE = "clinc150+oos"
CROSS = "clinc150-to-banking77"
VARIANTS = (WITH_NOISE, CROSS)


def load_benchmark_split(name: str, data_dir=None) -> OpenSetSplit:
    """Load a shared dataset or one of :data:`VARIANTS` as an open-set split.

    In ``clinc150+oos`` each out-of-scope query is its own true class, because it belongs to no
    intent, so a method scores best by leaving it alone. ``clinc150-to-banking77`` meta-trains on
    the CLINC150 meta-train intents and clusters the Banking77 test intents.
    """
    if name == WITH_NOISE:
        split = load_open_set_split("clinc150", data_dir, include_out_of_scope=True)
        return OpenSetSplit(
            name=WITH_NOISE,
            train_features=split.train_features,
            train_labels=split.train_labels,
            test_features=split.test_features,
            test_labels=noise_to_singletons(split.test_labels),
        )
    if name == CROSS:
        source = load_open_set_split("clinc150", data_dir)
        target = load_open_set_split("banking77", data_dir)
        return OpenSetSplit(
            name=CROSS,
            train_features=source.train_features,
            train_labels=source.train_labels,
            test_features=target.test_features,
            test_labels=target.test_labels,
        )
    return load_open_set_split(name, data_dir)


def summary_row(dataset: str, method: str, runs: list[dict]) -> dict:
    """Make one results row: the runs of a method on a dataset, their settings and medians."""
    return {
        "dataset": dataset,
        "method": method,
        "setting": "; ".join(dict.fromkeys(run["setting"] for run in runs)),
        "metrics": summarize(runs),
        "seconds": float(np.median([run["seconds"] for run in runs])),
        "runs": runs,
    }


def write_results(path, rows: list[dict], **parameters) -> None:
    """Replace the results file at ``path`` atomically with the rows, the date, machine and versions.

    ``parameters`` are stored beside the rows, such as ``hilander_params={...}``.
    """
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "versions": {"hilander": __version__, "torch": torch.__version__, "numpy": np.__version__},
        **parameters,
        "rows": rows,
    }
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(report, indent=2))


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


def runs_table(rows: list[dict]) -> str:
    """Make a markdown table with one line per run: its seed, setting, scores and time.

    The validation column shows the fold means of pairwise F / BCubed F on the held-out
    meta-train classes for runs that recorded them (hilander's), and is empty otherwise.
    """
    header = (
        "| dataset | method | seed | setting | pairwise F | BCubed F | NMI | clusters (true) "
        "| validation pairwise F / BCubed F | time (s) |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        for run in row["runs"]:
            m = run["metrics"]
            validation = ""
            if "validation_pairwise_f" in m:
                validation = f"{m['validation_pairwise_f']:.3f} / {m['validation_bcubed_f']:.3f}"
            lines.append(
                f"| {row['dataset']} | {row['method']} | {run['seed']} | {run['setting']} | "
                f"{m['pairwise_f']:.3f} | {m['bcubed_f']:.3f} | {m['nmi']:.3f} | "
                f"{m['n_clusters']} ({m['n_classes']}) | {validation} | {run['seconds']:.0f} |"
            )
    return "\n".join(lines)


def _hilander_params(text: str) -> dict:
    """Parse --hilander-params: a JSON object of HiLander constructor arguments."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"invalid JSON ({error}): {text!r}") from None
    if not isinstance(params, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"epochs\": 2}}', got {text!r}")
    if "random_state" in params:
        raise argparse.ArgumentTypeError("random_state is set from --seeds, so remove it from --hilander-params")
    unknown = sorted(set(params) - set(HiLander().get_params()))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown HiLander parameters: {', '.join(unknown)}. Use the argument names of HiLander()")
    return params


def build_parser(prog: str | None = None, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=epilog)
    parser.add_argument(
        "--datasets", nargs="+", default=None, choices=[*DATASETS, *VARIANTS, SYNTHETIC],
        help=f"Datasets to run (default: {' '.join(DATASETS)}, or only {SYNTHETIC} with --synthetic).",
    )
    parser.add_argument("--methods", nargs="+", default=["hilander", *BASELINES], choices=["hilander", *BASELINES])
    parser.add_argument("--data-dir", default=None, help="Folder that contains the dataset folders.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Seeds for hilander, k-means and Infomap.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument(
        "--update-markdown", type=Path, default=None, metavar="MARKDOWN",
        help="After writing --output, regenerate the tables of this markdown file (e.g. BENCHMARKS.md) "
        "whose results markers name the --output file.",
    )
    parser.add_argument("--verbose", action="store_true", help="Also log hilander's training progress (each epoch).")
    parser.add_argument(
        "--synthetic", type=int, default=None, metavar="N",
        help=f"Add the generated dataset '{SYNTHETIC}' with N samples (default 2000 when it is "
        "named in --datasets). It is generated with seed 0 whatever --seeds is.",
    )
    parser.add_argument("--synthetic-classes", type=int, default=None, help="Classes of the generated dataset (default N / 50, at least 6).")
    parser.add_argument("--synthetic-dim", type=int, default=64, help="Feature dimension of the generated dataset.")
    parser.add_argument(
        "--hilander-params", type=_hilander_params, default={}, metavar="JSON",
        help='HiLander constructor arguments as a JSON object, e.g. \'{"epochs": 2, "hidden": 32}\'.',
    )
    return parser


def main(argv: list[str] | None = None, prog: str | None = None, epilog: str | None = None) -> None:
    """Run the benchmark with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser(prog, epilog)
    args = parser.parse_args(argv)
    if args.update_markdown is not None:
        # Checked before the benchmark runs, which can take many minutes.
        if args.output is None:
            parser.error("--update-markdown needs --output, the results file whose tables it regenerates")
        if not args.update_markdown.is_file():
            parser.error(f"markdown file not found: {args.update_markdown}")
    if args.datasets is None:
        args.datasets = [SYNTHETIC] if args.synthetic is not None else list(DATASETS)
    elif args.synthetic is not None and SYNTHETIC not in args.datasets:
        args.datasets.append(SYNTHETIC)
    synthetic_split = None
    if SYNTHETIC in args.datasets:
        try:
            synthetic_split = make_open_set_split(
                args.synthetic or 2000, args.synthetic_classes, dim=args.synthetic_dim
            )
        except ValueError as error:
            parser.error(f"invalid synthetic dataset: {error}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        # Per-epoch training logs would bury the table; the per-run results stay at INFO.
        logging.getLogger("hilander").setLevel(logging.WARNING)

    rows = []
    for dataset in args.datasets:
        split = synthetic_split if dataset == SYNTHETIC else load_benchmark_split(dataset, args.data_dir)
        dataset = split.name
        for method in args.methods:
            name = "hilander" if method == "hilander" else BASELINES[method].name
            runs = []
            for seed in args.seeds if method in SEEDED else args.seeds[:1]:
                logger.info("%s: running %s, seed %d", dataset, method, seed)
                if method == "hilander":
                    metrics, setting, seconds = run_hilander(split, seed, args.hilander_params)
                else:
                    metrics, setting, seconds = run_baseline(method, split, seed)
                runs.append({"seed": seed, "setting": setting, "metrics": metrics, "seconds": seconds})
                logger.info("%s %s seed %d: %s", dataset, name, seed, {c: metrics[c] for c in COLUMNS})
            rows.append(summary_row(dataset, name, runs))

    table = markdown_table(rows)
    print(table)
    if args.output is not None:
        write_results(args.output, rows, hilander_params=args.hilander_params)
    if args.update_markdown is not None:
        _update_markdown(parser, args.update_markdown, args.output)


def _update_markdown(parser: argparse.ArgumentParser, markdown: Path, results: Path) -> None:
    """Regenerate the tables of ``markdown`` that cite ``results``, or exit with status 1 on a bad marker."""
    # Imported here because benchmarks.report imports this module.
    from .report import ReportError, update_markdown

    try:
        regions = update_markdown(markdown, only=[results])
    except ReportError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n{markdown} was not changed, but {results} was written.\n")
    if not regions:
        logger.warning("%s has no results marker that names %s, so no table was regenerated", markdown, results)
    for region in regions:
        logger.info("%s:%d: table %s", markdown, region.line, "changed" if region.changed else "unchanged")


if __name__ == "__main__":
    main()
