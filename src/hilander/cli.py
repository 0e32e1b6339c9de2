"""Command-line interface: ``hilander train | cluster | evaluate | demo``."""

from __future__ import annotations

import inspect
import json
import logging
import signal
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from safetensors import safe_open
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from ._runtime import runtime_versions
from .checkpoint import checkpoint_epoch
from .data import load_features, load_labels, metadata_path, save_labels
from .datasets import DATASETS, load_open_set_split
from .encoder import ENCODER_LOSSES, EncoderSpec
from .estimator import HiLander
from .features import extract_features_from_paths
from .graph import KNN_METHODS
from .images import list_images, load_image_folder, load_omniglot
from .pipeline import ImageHiLander
from .resources import check_memory
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


class LinkHead(str, Enum):
    cosine = "cosine"
    product = "product"
    additive = "additive"


# The library's defaults, so that the CLI's cannot drift from them.
_DEFAULT = {name: parameter.default for name, parameter in inspect.signature(HiLander).parameters.items()}


KnnMethod = Enum("KnnMethod", {name: name for name in KNN_METHODS}, type=str)


# Derived from DATASETS so that a dataset added to the loader appears in --dataset too. omniglot
# is the image dataset, which the demo runs through the encoder first.
Dataset = Enum("Dataset", {name: name for name in (*DATASETS, "omniglot")}, type=str)
EncoderLoss = Enum("EncoderLoss", {name: name for name in ENCODER_LOSSES}, type=str)


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


def _plural(count: int, noun: str) -> str:
    """Return ``"1 level"`` or ``"2 levels"``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fail(message: str) -> None:
    # Text() keeps brackets in the message from being read as rich markup.
    console.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)
    raise typer.Exit(code=2)


def _check_output(path: Path, overwrite: bool, companions: tuple[Path, ...] = ()) -> None:
    """Reject an output path before any work starts: existing without --overwrite, or unwritable.

    ``companions`` are files written beside the output, such as its metadata file.
    """
    for target in (path, *companions):
        if target.is_dir():
            _fail(f"{target} is a folder; pass a file path")
        if target.exists() and not overwrite:
            _fail(f"{target} already exists; pass --overwrite to replace it")
    _check_writable_folder(path.parent)


def _check_writable_folder(folder: Path) -> None:
    """Fail unless ``folder`` exists and a file can be created in it.

    Creating a file is the reliable test, because os.access can report success where the write
    then fails, for example for root on an NFS mount with root squashing.
    """
    if folder.exists() and not folder.is_dir():
        _fail(f"{folder} is a file, not a folder; choose an output path inside a folder")
    if not folder.is_dir():
        _fail(f"folder {folder} does not exist; create it first")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        _fail(f"folder {folder} is not writable ({error.strerror}); choose another output path")


class _Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler, so that a terminated run cleans up as after Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


@contextmanager
def _stop_on_interrupt(describe_state):
    """Turn Ctrl-C (SIGINT) or SIGTERM into a one-line message and exit code 130 or 143.

    ``describe_state()`` returns what the interruption left behind, for the message. Outputs are
    written atomically, so an interrupted run leaves the previous file or none.
    """
    try:
        yield
    except KeyboardInterrupt as interrupt:
        code = 128 + (signal.SIGTERM if isinstance(interrupt, _Terminated) else signal.SIGINT)
        console.print(Text("interrupted: ", style="bold red") + Text(describe_state()), soft_wrap=True)
        raise typer.Exit(code=int(code)) from None


def _unwritten(path: Path, existed: bool) -> str:
    return f"{path} was not replaced" if existed else f"{path} was not written"


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

        def update(stage: str, completed: int, total: int | None, status: str | None = None) -> None:
            if stage not in tasks:
                for other in tasks.values():
                    task = progress.tasks[other]
                    progress.update(other, total=task.total or 1, completed=task.total or 1)
                tasks[stage] = progress.add_task(stage, total=total)
            description = f"{stage}: {status}" if status else stage
            progress.update(tasks[stage], completed=completed, total=total, description=description)

        yield update
        for task_id in tasks.values():
            task = progress.tasks[task_id]
            # A stage of unknown length is finished too once the work returns.
            progress.update(task_id, total=task.total or 1, completed=task.total or 1)


def _read_inputs(
    features: Path, labels: Optional[Path], dim: Optional[int], allow_pickle: bool, allow_nonfinite: bool = False
):
    if features.is_dir():
        _fail(
            f"{features} is a folder, but this model reads feature files; to cluster images, use a model "
            "trained on an image tree ('hilander train IMAGE_TREE -o model.safetensors')"
        )
    if labels is not None and labels.is_dir():
        _fail(f"{labels} is a folder; --labels takes a label file with one label per sample")
    try:
        X, y = load_features(features, dim=dim, allow_pickle=allow_pickle, allow_nonfinite=allow_nonfinite)
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


def _parse_knn_params(items: list[str]) -> dict | None:
    """Turn repeated KEY=VALUE options into a dict of integers."""
    if not items:
        return None
    params = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value.strip().isdigit():
            _fail(f"--knn-param {item!r} is invalid; use KEY=INTEGER such as nprobe=64 or ef_search=256")
        params[key.strip()] = int(value)
    return params


def _peek_shape(features: Path, dim: Optional[int], allow_pickle: bool) -> tuple[int, int]:
    """Return (rows, dimension) of a feature file, reading only its header where the format allows."""
    suffix = features.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(features, mmap_mode="r", allow_pickle=False)
            if array.ndim == 2:
                return int(array.shape[0]), int(array.shape[1])
        if suffix == ".bin" and dim:
            return features.stat().st_size // (4 * dim), int(dim)
    except (OSError, ValueError) as error:
        _fail(f"could not read {features} ({error})")
    X, _ = _read_inputs(features, None, dim, allow_pickle, True)
    return int(X.shape[0]), int(X.shape[1])


FEATURES_HELP = "Feature file: .npy, .npz, .csv, .tsv, .bin (needs --dim) or .pkl (needs --allow-pickle)."
KNN_METHOD_HELP = (
    "kNN search: exact, ivf (faiss inverted file), ivfpq (IVF with compressed codes, re-scored "
    "exactly), hnsw, or auto (exact up to about 100,000 rows at 256-d, then ivf)."
)
KNN_PARAM_HELP = "kNN search setting as KEY=INTEGER, repeatable: nlist, nprobe, hnsw_m, ef_construction, ef_search, refine_factor, train_size, recall_sample."
DIM_HELP = "Feature dimension of a raw float32 .bin file."
PICKLE_HELP = "Allow reading a .pkl feature file. Unpickling can run code: use only for files you trust."
DROP_HELP = "Leave out rows with NaN or infinite values instead of stopping with an error."


@app.command()
def train(
    features: Path = typer.Argument(..., help=FEATURES_HELP + " Or a folder of images with one subfolder per class, to train an image encoder first."),
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (.safetensors)."),
    labels: Optional[Path] = typer.Option(None, help="Label file (.meta/.txt, one integer per line, .csv or .npy); needed unless the feature file stores labels."),
    dim: Optional[int] = typer.Option(None, help=DIM_HELP),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help=DROP_HELP),
    k: Optional[int] = typer.Option(None, help="Neighbours per node at inference, self included. Default: chosen by validation."),
    tau: Optional[float] = typer.Option(None, help="Link threshold on P(same class), in [0, 1). Default: chosen by validation."),
    max_levels: int = typer.Option(10, help="Maximum hierarchy levels at inference."),
    min_cluster_size: Optional[int] = typer.Option(None, help="Clusters with fewer samples join the nearest larger cluster; 0 keeps all. Default: chosen by validation."),
    refine: Optional[bool] = typer.Option(None, "--refine/--no-refine", help="After the last level, move each sample to the cluster with the closest mean (up to 3 passes). Default: chosen by validation."),
    train_knn: str = typer.Option(",".join(f"{k}:{levels}" for k, levels in _DEFAULT["train_knn"]), help="Training hierarchies as k:levels pairs; k values are also the candidates for inference."),
    epochs: int = typer.Option(_DEFAULT["epochs"], help="Training epochs over all training graphs."),
    lr: float = typer.Option(_DEFAULT["lr"], help="Initial SGD learning rate (cosine-annealed)."),
    hidden: int = typer.Option(_DEFAULT["hidden"], help="Width of the GNN layer."),
    link_head: LinkHead = typer.Option(LinkHead(_DEFAULT["link_head"]), help="How an edge is scored: cosine of learned projections of its two ends, a classifier on their sum and product, or on their sum only (the reference implementation)."),
    shared_neighbors: bool = typer.Option(_DEFAULT["shared_neighbors"], "--shared-neighbors/--no-shared-neighbors", help="Let the link head read each edge's shared-neighbour share: the members of the two ends' kNN lists they have in common, divided by k. On Omniglot it ranked the links of unseen classes far better than the features did (BENCHMARKS.md)."),
    conv: Conv = typer.Option(Conv.graphconv, help="Graph layer: similarity-weighted mean or attention."),
    validation_fraction: float = typer.Option(0.5, help="Share of classes held out to choose the model, k, tau, levels and minimum cluster size (the model is then trained again on all classes, see --refit)."),
    validation_folds: int = typer.Option(2, help="Disjoint held-out class sets, each of --validation-fraction; a model is trained per set and the settings with the best mean score win. --no-refit needs 1."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="After the choice on held-out classes, train again on all classes for the chosen number of epochs; this adds that many epochs over all classes to the fit time."),
    knn_method: KnnMethod = typer.Option(KnnMethod.auto, help=KNN_METHOD_HELP),
    knn_param: list[str] = typer.Option([], help=KNN_PARAM_HELP),
    device: str = typer.Option("cpu", help="Torch device, such as cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed for the class split, sampling and initialisation."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="Folder for a training checkpoint, written after every epoch, so that --resume can continue an interrupted run."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint in --checkpoint-dir; pass the same data and options as the interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    image_size: int = typer.Option(28, help="Images: side of the square they are resized to, in pixels."),
    channels: int = typer.Option(1, help="Images: 1 to read them as grayscale, 3 as RGB."),
    encoder_loss: EncoderLoss = typer.Option(EncoderLoss.softmax, help="Images: classification loss of the encoder."),
    encoder_epochs: int = typer.Option(25, help="Images: encoder training epochs."),
    encoder_fraction: float = typer.Option(0.7, help="Images: share of the classes that train the encoder; LANDER trains on the features of the other classes. 1.0 uses all classes for both."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Images: leave out files that cannot be decoded, with a warning, instead of stopping."),
) -> None:
    """Learn to cluster from labelled embeddings, or from a labelled image tree, and save the model.

    Given a folder with one subfolder of images per class, it trains an image encoder on those
    classes, extracts features with it and trains LANDER on them. The model file contains both.
    """
    existed = output.exists()
    _check_output(output, overwrite)
    _check_checkpoint_dir(checkpoint_dir, resume)
    if features.is_dir() and (labels is not None or dim is not None or allow_pickle):
        _fail(f"{features} is an image folder, whose classes are its subfolders; --labels, --dim and --allow-pickle apply to feature files only")

    def describe_state() -> str:
        state = _unwritten(output, existed)
        if checkpoint_dir is None:
            return f"{state}; pass --checkpoint-dir to make a long run resumable"
        if features.is_dir():
            # Image training keeps the encoder's and LANDER's checkpoints in two subfolders.
            found = [
                f"{stage} epoch {epoch} in {checkpoint_dir / stage}"
                for stage in ("encoder", "lander")
                if (epoch := checkpoint_epoch(checkpoint_dir / stage)) is not None
            ]
            if not found:
                return f"{state}; no epoch had finished, so {checkpoint_dir} contains no checkpoint yet"
            return f"{state}; checkpoints of {' and '.join(found)}, so rerun the same command with --resume to continue"
        epoch = checkpoint_epoch(checkpoint_dir)
        if epoch is None:
            return f"{state}; no epoch had finished, so {checkpoint_dir} contains no checkpoint yet"
        return f"{state}; the checkpoint of epoch {epoch} is in {checkpoint_dir}, so rerun the same command with --resume to continue"

    lander_params = dict(
        k=k, tau=tau, max_levels=max_levels, min_cluster_size=min_cluster_size, refine=refine,
        train_knn=_parse_train_knn(train_knn), epochs=epochs, lr=lr, hidden=hidden, link_head=link_head.value,
        shared_neighbors=shared_neighbors, conv=conv.value,
        validation_fraction=validation_fraction, validation_folds=validation_folds, refit=refit, knn_method=knn_method.value,
        knn_params=_parse_knn_params(knn_param),
    )
    if features.is_dir():
        if channels not in (1, 3):
            _fail(f"--channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        with _stop_on_interrupt(describe_state):
            pipeline = ImageHiLander(
                spec=EncoderSpec(in_channels=channels, image_size=image_size),
                encoder_loss=encoder_loss.value, encoder_epochs=encoder_epochs, encoder_fraction=encoder_fraction,
                lander=lander_params,
                device=device, random_state=seed,
            )
            _train_images(pipeline, features, output, skip_bad_images, checkpoint_dir, resume)
        return

    with _stop_on_interrupt(describe_state):
        X, y = _read_inputs(features, labels, dim, allow_pickle, drop_nonfinite)
        if y is None:
            _fail(f"{features} contains no labels; pass --labels with one class label per row")
        if y.shape[0] != X.shape[0]:
            source = labels if labels is not None else features
            _fail(f"{source} has {y.shape[0]} labels but {features} has {X.shape[0]} rows; pass one label per row")
        estimator = HiLander(**lander_params, device=device, random_state=seed)
        started = time.perf_counter()
        try:
            with _progress_display() as progress:
                estimator.fit(
                    X, y, progress=progress, drop_nonfinite=drop_nonfinite,
                    checkpoint_dir=checkpoint_dir, resume=resume,
                )
        except (ValueError, OSError) as error:
            _fail(str(error))
        _write_or_fail(output, lambda: estimator.save(output))
    validation = estimator.validation_
    console.print(
        f"trained in {time.perf_counter() - started:.1f} s; {estimator.chosen_settings()}; validation "
        f"pairwise F {validation['pairwise_f']:.3f}, BCubed F {validation['bcubed_f']:.3f}"
    )
    console.print(f"model written to {output}")


def _train_images(
    pipeline: ImageHiLander, folder: Path, output: Path, skip_bad_images: bool, checkpoint_dir: Optional[Path], resume: bool
) -> None:
    """Read an image tree, fit encoder and LANDER on it and write the model."""
    spec = pipeline.spec
    started = time.perf_counter()
    try:
        with _progress_display() as progress:
            data = load_image_folder(
                folder, spec.image_size, spec.in_channels, "skip" if skip_bad_images else "raise", progress=progress
            )
            console.print(f"read {data.images.shape[0]} images of {len(data.class_names)} classes from {folder}")
            pipeline.fit(data.images, data.labels, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume)
    except (ValueError, OSError) as error:
        _fail(str(error))
    _write_or_fail(output, lambda: pipeline.save(output))
    lander = pipeline.lander_
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in pipeline.timings_.items())
    console.print(
        f"trained in {time.perf_counter() - started:.1f} s ({timings}); {lander.chosen_settings()}; "
        f"validation pairwise F {lander.validation_['pairwise_f']:.3f}, BCubed F {lander.validation_['bcubed_f']:.3f}"
    )
    console.print(f"model written to {output}")


def _check_checkpoint_dir(checkpoint_dir: Optional[Path], resume: bool) -> None:
    if checkpoint_dir is None:
        if resume:
            _fail("--resume needs --checkpoint-dir, the folder of the interrupted run's checkpoint")
        return
    if not checkpoint_dir.exists():
        try:
            checkpoint_dir.mkdir(parents=True)
        except OSError as error:
            _fail(f"could not create the checkpoint folder {checkpoint_dir} ({error.strerror}); choose another --checkpoint-dir")
    _check_writable_folder(checkpoint_dir)
    epoch = checkpoint_epoch(checkpoint_dir)
    if epoch is not None and not resume:
        _fail(
            f"{checkpoint_dir} already contains a checkpoint of epoch {epoch}; pass --resume to "
            "continue that run, or delete it to start over"
        )


def _write_or_fail(path: Path, write) -> None:
    """Run ``write()``, turning an OSError (disk full, permissions) into a one-line error."""
    try:
        write()
    except OSError as error:
        _fail(f"could not write {path} ({error}); the previous file, if any, is unchanged")


@app.command()
def cluster(
    model: Path = typer.Argument(..., help="Model file written by 'hilander train'."),
    features: Path = typer.Argument(..., help=FEATURES_HELP + " With an image model: a folder of images or a text file with one image path per line."),
    output: Path = typer.Option(..., "--output", "-o", help="Output: one cluster id per input row (.txt/.meta text, or .npy), plus run details in OUTPUT.json. For images, .csv or .tsv writes each image's path beside its id."),
    dim: Optional[int] = typer.Option(None, help="Feature dimension of a raw float32 .bin file. Default: the model's."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help=PICKLE_HELP),
    drop_nonfinite: bool = typer.Option(False, "--drop-nonfinite", help=DROP_HELP + " Their cluster id is -1."),
    knn_method: Optional[KnnMethod] = typer.Option(None, help=KNN_METHOD_HELP + " Default: the model's setting (auto unless set in training)."),
    knn_param: list[str] = typer.Option([], help=KNN_PARAM_HELP),
    chunk_size: Optional[int] = typer.Option(None, help="Nodes the GNN scores per block; peak memory grows with it, not with the number of rows. Default: the model's (16384)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the memory estimate for this input and exit without clustering; exit 2 if it will not fit."),
    device: str = typer.Option("cpu", help="Torch device, such as cpu or cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file and its .json metadata."),
    skip_bad_images: bool = typer.Option(False, "--skip-bad-images", help="Images: give files that cannot be decoded the id -1, with a warning, instead of stopping."),
) -> None:
    """Cluster embeddings, or images with an image model, and write one cluster id per row or image.

    With a model trained on an image tree, FEATURES is a folder of images (ids follow the sorted
    file names) or a text file with one image path per line (ids follow its lines).
    """
    existed = output.exists()
    if not dry_run:
        _check_output(output, overwrite, companions=(metadata_path(output),))
    if _is_image_model(model):
        if dim is not None or allow_pickle or drop_nonfinite:
            _fail(f"{model} is an image model, which reads images; --dim, --allow-pickle and --drop-nonfinite apply to feature files only")
        settings = _inference_settings(knn_method, knn_param, chunk_size)
        with _stop_on_interrupt(lambda: _unwritten(output, existed)):
            _cluster_images(model, features, output, skip_bad_images, device, overwrite, dry_run, settings)
        return
    with _stop_on_interrupt(lambda: _unwritten(output, existed)):
        try:
            estimator = HiLander.load(model, device=device)
            estimator.set_params(**_inference_settings(knn_method, knn_param, chunk_size))
        except (OSError, ValueError) as error:
            _fail(str(error))
        if dim is None and features.suffix.lower() == ".bin":
            dim = estimator.n_features_in_
        if dry_run:
            rows, columns = _peek_shape(features, dim, allow_pickle)
            estimate = estimator.estimate_memory(rows, columns)
            console.print(f"clustering {rows} x {columns} with k={estimator.k_} needs about {estimate.describe()}")
            try:
                check_memory(estimate, f"clustering {rows} x {columns} with k={estimator.k_}")
            except MemoryError as error:
                _fail(str(error))
            console.print("it fits in the memory available now; nothing was clustered (--dry-run)")
            return
        X, _ = _read_inputs(features, None, dim, allow_pickle, drop_nonfinite)
        started = time.perf_counter()
        with _progress_display() as progress:

            def on_level(level: int, num_nodes: int, edges_added: int) -> None:
                progress("clustering levels", level + 1, estimator.n_levels_)

            try:
                result = estimator.predict_hierarchy(X, on_level, drop_nonfinite=drop_nonfinite)
            except (ValueError, MemoryError) as error:
                # The library calls the input X, so name the file it came from.
                _fail(f"{features}: {error}")
        clustered = result.labels[result.labels >= 0]
        num_clusters = int(np.unique(clustered).shape[0])
        num_dropped = int(result.labels.shape[0] - clustered.shape[0])
        metadata = _cluster_metadata(estimator, model, features, result, num_clusters, num_dropped)
        _write_or_fail(output, lambda: save_labels(result.labels, output, overwrite=overwrite, metadata=metadata))
    dropped = f" ({num_dropped} rows with NaN or inf dropped, id -1)" if num_dropped else ""
    console.print(
        f"{X.shape[0]} samples -> {num_clusters} clusters{dropped} in "
        f"{time.perf_counter() - started:.1f} s over {_plural(len(result.level_labels), 'level')}; written to {output}"
    )


def _inference_settings(knn_method, knn_param: list[str], chunk_size: Optional[int]) -> dict:
    """Return the HiLander parameters that the cluster options override, for ``set_params``."""
    settings = {}
    if knn_method is not None:
        settings["knn_method"] = knn_method.value
    if knn_param:
        settings["knn_params"] = _parse_knn_params(knn_param)
    if chunk_size is not None:
        settings["chunk_size"] = chunk_size
    return settings


def _is_image_model(model: Path) -> bool:
    """Tell an image model (encoder and LANDER) from an embedding model by its header."""
    try:
        with safe_open(str(model), framework="pt", device="cpu") as handle:
            return (handle.metadata() or {}).get("format") == "hilander-image-model"
    except Exception:  # Unreadable files get HiLander.load's error message.
        return False


def _cluster_images(
    model: Path, source: Path, output: Path, skip_bad_images: bool, device: str, overwrite: bool, dry_run: bool, settings: dict
) -> None:
    """Embed the images of a folder or list file with the model's encoder and cluster them.

    A ``.csv`` or ``.tsv`` output gets each image's path beside its cluster id.
    """
    try:
        pipeline = ImageHiLander.load(model, device=device)
        pipeline.lander_.set_params(**settings)
    except (OSError, ValueError) as error:
        _fail(str(error))
    spec = pipeline.spec_
    try:
        paths = list_images(source)
    except (OSError, ValueError) as error:
        _fail(str(error))
    if dry_run:
        estimate = pipeline.lander_.estimate_memory(len(paths), spec.embedding_dim)
        console.print(f"clustering {len(paths)} images needs about {estimate.describe()} after feature extraction")
        try:
            check_memory(estimate, f"clustering {len(paths)} images")
        except MemoryError as error:
            _fail(str(error))
        console.print("it fits in the memory available now; nothing was clustered (--dry-run)")
        return

    started = time.perf_counter()
    on_error = "skip" if skip_bad_images else "raise"
    with _progress_display() as progress:
        try:
            # Images are decoded batch by batch, so only the features of all images are in memory.
            features, positions = extract_features_from_paths(
                pipeline.encoder_, spec, paths, pipeline.batch_size, on_error, progress=progress
            )
            result = pipeline.lander_.predict_hierarchy(features)
        except (OSError, ValueError, MemoryError) as error:
            _fail(str(error))

    # Skipped files keep their row, with id -1, so that row i is always the i-th listed image.
    labels = np.full(len(paths), -1, dtype=np.int64)
    labels[positions] = result.labels
    skipped = sorted(set(str(path) for path in paths) - {str(paths[i]) for i in positions})

    num_clusters = int(np.unique(result.labels).shape[0])
    metadata = _cluster_metadata(pipeline.lander_, model, source, result, num_clusters, len(skipped))
    metadata["n_samples"] = len(paths)
    metadata["images"] = {
        "order": "sorted file names" if source.is_dir() else "lines of the list file",
        "skipped": skipped,
        "image_size": spec.image_size,
        "channels": spec.in_channels,
        "embedding_dim": spec.embedding_dim,
    }
    names = [str(path) for path in paths]
    _write_or_fail(output, lambda: save_labels(labels, output, overwrite=overwrite, metadata=metadata, row_names=names))
    dropped = f" ({_plural(len(skipped), 'undecodable file')}, id -1)" if skipped else ""
    console.print(
        f"{positions.shape[0]} images -> {num_clusters} clusters{dropped} in {time.perf_counter() - started:.1f} s; "
        f"written to {output}"
    )


def _cluster_metadata(estimator: HiLander, model: Path, features: Path, result, num_clusters: int, num_dropped: int) -> dict:
    """Describe a clustering run for the JSON file beside its output."""
    return {
        "format": "hilander-clusters",
        "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": runtime_versions(),
        "model": {
            "path": str(model.resolve()),
            "versions": estimator.versions_,
            "k": estimator.k_,
            "tau": estimator.tau_,
            "n_levels": estimator.n_levels_,
            "min_cluster_size": estimator.min_cluster_size_,
            "refine": estimator.refine_,
            "link_head": estimator.link_head,
            "shared_neighbors": estimator.shared_neighbors,
            "hidden": estimator.hidden,
            "random_state": estimator.random_state,
        },
        "features": str(features.resolve()),
        "n_samples": int(result.labels.shape[0]),
        "n_clusters": num_clusters,
        "n_dropped_rows": num_dropped,
        "levels_decoded": len(result.level_labels),
        "knn_method": estimator.knn_method,
        "knn_params": estimator.knn_params,
        "chunk_size": estimator.chunk_size,
        # Time (seconds) and peak memory (bytes) of each level, with the kNN search's recall
        # where an approximate index measured it.
        "level_stats": _jsonable(result.level_stats),
    }


def _jsonable(value):
    """Convert numpy scalars inside nested dicts and lists to Python numbers for json."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --save-model file."),
) -> None:
    """Fit on the meta-train classes of a dataset and cluster its unseen test classes."""
    if save_model is not None:
        _check_output(save_model, overwrite)
    if dataset.value == "omniglot":
        _demo_omniglot(data_dir, epochs, seed, save_model)
        return
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
        _write_or_fail(save_model, lambda: estimator.save(save_model))
    out = Console()
    out.print(_metrics_table(f"{dataset.value}: unseen test classes", metrics))
    out.print(
        f"chosen on validation classes: {estimator.chosen_settings()}\n"
        f"Fp {metrics['pairwise_f']:.4f}  Fb {metrics['bcubed_f']:.4f}  NMI {metrics['nmi']:.4f}  "
        f"clusters {metrics['n_clusters']} (true {metrics['n_classes']})\n"
        f"time: fit {fit_seconds:.1f} s, cluster {cluster_seconds:.1f} s, total {time.perf_counter() - started:.1f} s"
    )


def _demo_omniglot(data_dir: Optional[Path], epochs: int, seed: int, save_model: Optional[Path]) -> None:
    """Train encoder and LANDER on Omniglot's background classes; cluster the evaluation classes."""
    started = time.perf_counter()
    try:
        background = load_omniglot("background", data_dir)
        evaluation = load_omniglot("evaluation", data_dir)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    read_seconds = time.perf_counter() - started
    console.print(
        f"omniglot: training the encoder and LANDER on {background.images.shape[0]} images of "
        f"{len(background.class_names)} background classes, clustering {evaluation.images.shape[0]} "
        f"images of {len(evaluation.class_names)} evaluation classes (alphabets never seen)"
    )

    pipeline = ImageHiLander(lander=dict(epochs=epochs), random_state=seed)
    fitted = time.perf_counter()
    with _progress_display() as progress:
        pipeline.fit(background.images, background.labels, progress=progress, groups=background.groups)
    fit_seconds = time.perf_counter() - fitted
    clustered = time.perf_counter()
    predicted = pipeline.predict(evaluation.images)
    cluster_seconds = time.perf_counter() - clustered
    metrics = evaluate_metrics(evaluation.labels, predicted)
    if save_model is not None:
        _write_or_fail(save_model, lambda: pipeline.save(save_model))

    lander = pipeline.lander_
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in pipeline.timings_.items())
    out = Console()
    out.print(_metrics_table("omniglot: unseen evaluation classes, from pixels", metrics))
    out.print(
        f"chosen on validation classes: {lander.chosen_settings()}\n"
        f"Fp {metrics['pairwise_f']:.4f}  Fb {metrics['bcubed_f']:.4f}  NMI {metrics['nmi']:.4f}  "
        f"clusters {metrics['n_clusters']} (true {metrics['n_classes']})\n"
        f"time: read {read_seconds:.1f} s, fit {fit_seconds:.1f} s ({timings}), cluster "
        f"{cluster_seconds:.1f} s, total {time.perf_counter() - started:.1f} s"
    )


def main() -> None:
    """Run the command-line interface, which stops on SIGTERM as cleanly as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    app()
