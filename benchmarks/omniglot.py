"""Omniglot from pixels: hilander's image pipeline against the baselines, side by side.

For each seed, ``ImageHiLander`` trains its encoder and LANDER on the 964 background classes and
clusters the 13,180 images of the 659 evaluation classes (alphabets it never saw). The baselines
run twice: on the features of that same encoder, and on raw 28 x 28 pixels (flattened, scaled
to unit L2 norm). Each baseline is tuned on background classes only, as in
``benchmarks.quality``. On learned features these are the classes that LANDER was fitted on,
which the encoder did not train on; on pixels all 964.

Usage (from the repository root)::

    python -m benchmarks.omniglot --seeds 0 1 2 --output benchmarks/results/omniglot.json

Each seed trains its own encoder, so every baseline on learned features runs once per seed, on
that seed's features. On raw pixels only k-means and Infomap depend on the seed. The table shows
medians with the range of the F-scores, as ``benchmarks.quality`` does.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from hilander._files import atomic_path
from hilander.images import ImageSet, load_omniglot
from hilander.metrics import evaluate
from hilander.pipeline import ImageHiLander

from .baselines import BASELINES
from .quality import SEEDED, markdown_table, summary_row, write_results

logger = logging.getLogger("benchmarks.omniglot")

DEFAULT_BASELINES = ("kmeans", "agglomerative", "hdbscan")


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Flatten (N, 1, H, W) uint8 images into (N, H * W) float32 rows of unit L2 norm."""
    rows = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def first_classes(data: ImageSet, num_classes: int) -> ImageSet:
    """Keep the images of the first ``num_classes`` classes."""
    keep = data.labels < num_classes
    return ImageSet(
        data.images[keep], data.labels[keep], [p for p, k in zip(data.paths, keep) if k],
        data.class_names[:num_classes], groups=None if data.groups is None else data.groups[keep],
    )


def save_features(path: Path, train, train_labels, test, test_labels) -> None:
    """Write one seed's features of the LANDER classes (train) and the evaluation classes (test)."""
    with atomic_path(path) as temporary, temporary.open("wb") as stream:
        np.savez(stream, train=train, train_labels=train_labels, test=test, test_labels=test_labels)


def run_baseline(name: str, seed: int, train, train_labels, test, test_labels) -> tuple[dict, str, float]:
    method = BASELINES[name](seed=seed) if name in SEEDED else BASELINES[name]()
    started = time.perf_counter()
    parameter = method.tune(train, train_labels)
    predicted = method.run(test, parameter, int(np.unique(test_labels).shape[0]))
    return evaluate(test_labels, predicted), method.describe(parameter), time.perf_counter() - started


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.omniglot", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Seeds of the image pipeline and the seeded baselines.")
    parser.add_argument("--baselines", nargs="+", default=list(DEFAULT_BASELINES), choices=list(BASELINES))
    parser.add_argument("--no-pixels", action="store_true", help="Skip the baselines on raw pixels.")
    parser.add_argument("--data-dir", default=None, help="Folder that contains omniglot/.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument(
        "--features-dir", type=Path, default=None, metavar="DIR",
        help="Also write each seed's learned features to DIR/seed<N>.npz (arrays train, train_labels, "
        "test, test_labels), so that other methods can run on them without training the encoder again.",
    )
    parser.add_argument(
        "--classes", type=int, default=None, metavar="N",
        help="Use only the first N classes of each split (default: all), for a quick check.",
    )
    parser.add_argument(
        "--pipeline-params", type=json.loads, default={}, metavar="JSON",
        help='ImageHiLander arguments as a JSON object, e.g. \'{"encoder_epochs": 2, "lander": {"epochs": 2}}\'.',
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("hilander").setLevel(logging.WARNING)
    background = load_omniglot("background", args.data_dir)
    evaluation = load_omniglot("evaluation", args.data_dir)
    if args.classes is not None:
        background, evaluation = first_classes(background, args.classes), first_classes(evaluation, args.classes)

    runs: dict[tuple[str, str], list[dict]] = {}

    def record(features: str, method: str, seed: int, result: tuple[dict, str, float]) -> None:
        metrics, setting, seconds = result
        runs.setdefault((features, method), []).append({"seed": seed, "setting": setting, "metrics": metrics, "seconds": seconds})
        logger.info("%s %s seed %d: pairwise F %.3f, BCubed F %.3f, %d clusters, %.0f s (%s)", features, method, seed,
                    metrics["pairwise_f"], metrics["bcubed_f"], metrics["n_clusters"], seconds, setting)
        # Written after every run, so that a crash or an interruption keeps the finished runs.
        _write_report(args, _rows(runs))

    for seed in args.seeds:
        started = time.perf_counter()
        pipeline = ImageHiLander(**args.pipeline_params, random_state=seed)
        pipeline.fit(background.images, background.labels, groups=background.groups)
        predicted = pipeline.predict(evaluation.images)
        seconds = time.perf_counter() - started
        lander = pipeline.lander_
        setting = lander.chosen_settings()
        metrics = evaluate(evaluation.labels, predicted)
        # As in benchmarks.quality: the chosen setting's fold means on the held-out LANDER classes.
        metrics["validation_pairwise_f"] = float(lander.validation_["pairwise_f"])
        metrics["validation_bcubed_f"] = float(lander.validation_["bcubed_f"])
        record("pixels to clusters", "hilander", seed, (metrics, setting, seconds))
        # The baselines are tuned on the classes LANDER was fitted on, whose features the encoder
        # never trained on, so that their settings suit new classes as LANDER's do.
        tuning = np.isin(background.labels, pipeline.lander_classes_)
        train = pipeline.transform(background.images[tuning])
        test = pipeline.transform(evaluation.images)
        if args.features_dir is not None:
            save_features(args.features_dir / f"seed{seed}.npz", train, background.labels[tuning], test, evaluation.labels)
        # Every baseline runs once per seed here, because each seed trains its own encoder.
        for name in args.baselines:
            result = run_baseline(name, seed, train, background.labels[tuning], test, evaluation.labels)
            record("learned features", name, seed, result)

    if not args.no_pixels:
        train, test = pixel_features(background.images), pixel_features(evaluation.images)
        for name in args.baselines:
            for seed in args.seeds if name in SEEDED else args.seeds[:1]:
                record("raw pixels", name, seed, run_baseline(name, seed, train, background.labels, test, evaluation.labels))

    rows = _rows(runs)
    print(markdown_table(rows))
    _write_report(args, rows)


def _rows(runs: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """Summarise the runs of each (features, method) pair into one table row."""
    return [
        summary_row(f"omniglot ({features})", method if method == "hilander" else BASELINES[method].name, method_runs)
        for (features, method), method_runs in runs.items()
    ]


def _write_report(args, rows: list[dict]) -> None:
    """Replace the --output file, if any, with the rows so far."""
    if args.output is not None:
        write_results(args.output, rows, pipeline_params=args.pipeline_params)


if __name__ == "__main__":
    main()
