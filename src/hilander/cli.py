"""Command-line interface: ``hilander train | cluster | evaluate | demo``."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .data import load_features, load_labels, save_labels
from .datasets import DATASETS, load_open_set_split
from .estimator import HiLander
from .metrics import evaluate as evaluate_metrics

app = typer.Typer(
    name="hilander",
    help="Learned hierarchical clustering of embeddings (Hi-LANDER).",
    add_completion=False,
    no_args_is_help=True,
)
console = Console(stderr=True)


class Conv(str, Enum):
    graphconv = "graphconv"
    gat = "gat"


# Derived from DATASETS so that a dataset added to the loader appears in --dataset too.
Dataset = Enum("Dataset", {name: name for name in DATASETS}, type=str)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hilander {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each stage's details (INFO level)."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


def _fail(message: str) -> None:
    # Text() keeps brackets in the message from being read as rich markup.
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code=2)


def _check_output(path: Path, overwrite: bool) -> None:
    """Reject an output path before any work starts: existing without --overwrite, or unwritable."""
    if path.exists() and not overwrite:
        _fail(f"{path} already exists; pass --overwrite to replace it")
    if path.is_dir():
        _fail(f"{path} is a folder; pass a file path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        _fail(f"folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        _fail(f"folder {folder} is not writable; choose another output path")


@contextmanager
def _progress_display():
    """Yield a ``progress(stage, completed, total)`` callback that draws rich progress bars."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, completed: int, total: int | None) -> None:
            if stage not in tasks:
                for other in tasks.values():
                    task = progress.tasks[other]
                    progress.update(other, completed=task.total if task.total else task.completed)
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=completed, total=total)

        yield update
        for task_id in tasks.values():
            task = progress.tasks[task_id]
            if task.total:
                progress.update(task_id, completed=task.total)


def _read_inputs(features: Path, labels: Optional[Path], dim: Optional[int], allow_pickle: bool):
    try:
        X, y = load_features(features, dim=dim, allow_pickle=allow_pickle)
        if labels is not None:
            y = load_labels(labels)
    except (OSError, ValueError) as error:
        _fail(str(error))
    return X, y


_METRIC_NAMES = (
    ("pairwise_f", "pairwise F"),
    ("bcubed_f", "BCubed F"),
    ("nmi", "NMI"),
    ("pairwise_precision", "pairwise precision"),
    ("pairwise_recall", "pairwise recall"),
    ("bcubed_precision", "BCubed precision"),
    ("bcubed_recall", "BCubed recall"),
    ("n_clusters", "clusters"),
    ("n_classes", "classes"),
)


def _metrics_table(title: str, metrics: dict) -> Table:
    """Lay the metrics out one per row, so that the table fits an 80-column terminal."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in _METRIC_NAMES:
        value = metrics[key]
        table.add_row(label, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


def _parse_train_knn(text: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple(tuple(int(part) for part in item.split(":")) for item in text.split(","))
    except ValueError:
        pairs = ()
    if not pairs or any(len(pair) != 2 for pair in pairs):
        _fail(f"--train-knn {text!r} is invalid; use comma-separated k:levels pairs such as 10:2,5:3,3:4")
    return pairs


FEATURES_HELP = "Feature file: .npy, .npz, .bin (needs --dim) or .pkl (needs --allow-pickle)."
DIM_HELP = "Feature dimension of a raw float32 .bin file."
PICKLE_HELP = "Allow reading a .pkl feature file. Unpickling can run code: use only for files you trust."


@app.command()
def train(
    features: Path = typer.Argument(..., help=FEATURES_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (.safetensors)."),
    labels: Optional[Path] = typer.Option(None, help="Label file (.meta/.txt, one integer per line, or .npy); needed unless the feature file stores labels."),
    dim: Optional[int] = typer.Option(None, help=DIM_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
    k: Optional[int] = typer.Option(None, help="Neighbours per node at inference, self included. Default: chosen by validation."),
    tau: Optional[float] = typer.Option(None, help="Link threshold on P(same class), in [0, 1). Default: chosen by validation."),
    max_levels: int = typer.Option(10, help="Maximum hierarchy levels at inference."),
    min_cluster_size: Optional[int] = typer.Option(None, help="Clusters with fewer samples join the nearest larger cluster; 0 keeps all. Default: chosen by validation."),
    train_knn: str = typer.Option("10:2,5:3,3:4", help="Training hierarchies as k:levels pairs; k values are also the candidates for inference."),
    epochs: int = typer.Option(20, help="Training epochs over all training graphs."),
    lr: float = typer.Option(0.1, help="Initial SGD learning rate (cosine-annealed)."),
    hidden: int = typer.Option(512, help="Width of the GNN layer."),
    conv: Conv = typer.Option(Conv.graphconv, help="Graph layer: similarity-weighted mean or attention."),
    validation_fraction: float = typer.Option(0.2, help="Share of classes held out to choose the model, k and tau."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After the choice on held-out classes, train again on all classes (about twice the training time)."),
    device: str = typer.Option("cpu", help="Torch device, such as cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed for the class split, sampling and initialisation."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Learn to cluster from labelled embeddings and save the model."""
    _check_output(output, overwrite)
    X, y = _read_inputs(features, labels, dim, allow_pickle)
    if y is None:
        _fail(f"{features} contains no labels; pass --labels with one class label per row")
    if y.shape[0] != X.shape[0]:
        source = labels if labels is not None else features
        _fail(f"{source} has {y.shape[0]} labels but {features} has {X.shape[0]} rows; pass one label per row")
    estimator = HiLander(
        k=k, tau=tau, max_levels=max_levels, min_cluster_size=min_cluster_size,
        train_knn=_parse_train_knn(train_knn), epochs=epochs, lr=lr, hidden=hidden, conv=conv.value,
        validation_fraction=validation_fraction, refit=refit, device=device, random_state=seed,
    )
    started = time.perf_counter()
    try:
        with _progress_display() as progress:
            estimator.fit(X, y, progress=progress)
    except ValueError as error:
        _fail(str(error))
    estimator.save(output)
    validation = estimator.validation_
    console.print(
        f"trained in {time.perf_counter() - started:.1f} s; k={estimator.k_}, tau={estimator.tau_:.2f}, "
        f"levels={estimator.n_levels_}, min_cluster_size={estimator.min_cluster_size_}; validation pairwise F {validation['pairwise_f']:.3f}, "
        f"BCubed F {validation['bcubed_f']:.3f}"
    )
    console.print(f"model written to {output}")


@app.command()
def cluster(
    model: Path = typer.Argument(..., help="Model file written by 'hilander train'."),
    features: Path = typer.Argument(..., help=FEATURES_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Output: one cluster id per input row (.txt/.meta text, or .npy)."),
    dim: Optional[int] = typer.Option(None, help=DIM_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
    device: str = typer.Option("cpu", help="Torch device, such as cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Cluster embeddings with a trained model and write one cluster id per row."""
    _check_output(output, overwrite)
    try:
        estimator = HiLander.load(model, device=device)
    except (OSError, ValueError) as error:
        _fail(str(error))
    X, _ = _read_inputs(features, None, dim, allow_pickle)
    started = time.perf_counter()
    with _progress_display() as progress:

        def on_level(level: int, num_nodes: int, edges_added: int) -> None:
            progress("clustering levels", level + 1, estimator.n_levels_)

        try:
            result = estimator.predict_hierarchy(X, on_level)
        except ValueError as error:
            _fail(str(error))
    save_labels(result.labels, output, overwrite=overwrite)
    console.print(
        f"{X.shape[0]} samples -> {np.unique(result.labels).shape[0]} clusters in "
        f"{time.perf_counter() - started:.1f} s over {len(result.level_labels)} levels; written to {output}"
    )


@app.command()
def evaluate(
    gt: Path = typer.Option(..., "--gt", help="True labels (.meta/.txt or .npy)."),
    pred: Path = typer.Option(..., "--pred", help="Predicted cluster ids (.meta/.txt or .npy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
) -> None:
    """Score predicted clusters against true labels: pairwise F, BCubed F and NMI."""
    try:
        labels_true, labels_pred = load_labels(gt), load_labels(pred)
        if labels_true.shape[0] != labels_pred.shape[0]:
            _fail(f"{gt} has {labels_true.shape[0]} labels but {pred} has {labels_pred.shape[0]}; pass files of the same samples")
        metrics = evaluate_metrics(labels_true, labels_pred)
    except (OSError, ValueError) as error:
        _fail(str(error))
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        Console().print(_metrics_table("clustering metrics", metrics))


@app.command()
def demo(
    dataset: Dataset = typer.Option(Dataset.clinc150, help="Dataset to fit and cluster."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder that contains the dataset folder. Default: $HILANDER_DATA, ./shared/data or ../shared/data."),
    epochs: int = typer.Option(20, help="Training epochs."),
    seed: int = typer.Option(0, help="Random seed."),
    save_model: Optional[Path] = typer.Option(None, help="Also write the trained model to this file."),
) -> None:
    """Fit on the meta-train classes of a dataset and cluster its unseen test classes."""
    try:
        split = load_open_set_split(dataset.value, data_dir)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    console.print(
        f"{dataset.value}: fitting on {split.train_features.shape[0]} samples of "
        f"{np.unique(split.train_labels).shape[0]} classes, clustering {split.test_features.shape[0]} "
        f"samples of {np.unique(split.test_labels).shape[0]} unseen classes"
    )
    estimator = HiLander(epochs=epochs, random_state=seed)
    started = time.perf_counter()
    with _progress_display() as progress:
        estimator.fit(split.train_features, split.train_labels, progress=progress)
    fit_seconds = time.perf_counter() - started
    clustered = time.perf_counter()
    predicted = estimator.predict(split.test_features)
    cluster_seconds = time.perf_counter() - clustered
    metrics = evaluate_metrics(split.test_labels, predicted)
    if save_model is not None:
        estimator.save(save_model)
    out = Console()
    out.print(_metrics_table(f"{dataset.value}: unseen test classes", metrics))
    out.print(
        f"chosen on validation classes: epoch {estimator.best_epoch_}, k={estimator.k_}, tau={estimator.tau_:.2f}, "
        f"levels={estimator.n_levels_}, min_cluster_size={estimator.min_cluster_size_}\n"
        f"Fp {metrics['pairwise_f']:.4f}  Fb {metrics['bcubed_f']:.4f}  NMI {metrics['nmi']:.4f}  "
        f"clusters {metrics['n_clusters']} (true {metrics['n_classes']})\n"
        f"time: fit {fit_seconds:.1f} s, cluster {cluster_seconds:.1f} s, total {time.perf_counter() - started:.1f} s"
    )


def main() -> None:
    """Run the command-line interface."""
    app()
