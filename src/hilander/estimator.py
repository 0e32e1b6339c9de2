"""The ``HiLander`` estimator: fit on labelled embeddings, cluster embeddings of unseen classes."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from ._files import atomic_path
from ._runtime import runtime_versions
from .checkpoint import CHECKPOINT_FILE, TrainingCheckpoint, training_fingerprint
from .data import check_features, check_labels, l2_normalize, screen_rows
from .graph import KNN_METHODS, KnnConfig, choose_knn_method
from .inference import (
    DEFAULT_CHUNK_SIZE,
    HierarchyResult,
    absorb_small_clusters,
    refine_to_means,
    cluster_hierarchy,
    score_first_level,
)
from .metrics import bcubed, pairwise
from .model import CONV_TYPES, LINK_HEADS, Lander
from .resources import MemoryEstimate, check_memory, estimate_memory
from .training import NeighborhoodSampler, build_training_levels, epoch_steps, train_epoch

__all__ = ["HiLander", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FORMAT_NAME = "hilander-model"

# Called as progress(stage, completed, total) during fit; total is None when unknown.
ProgressCallback = Callable[[str, int, "int | None"], None]

_DEFAULT_TRAIN_KNN = ((40, 2), (10, 3), (5, 4))
_DEFAULT_TAU_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Candidate min_cluster_size values, as shares of the median validation class size.
_MIN_CLUSTER_SHARES = (0.0, 0.05, 0.1, 0.2, 0.3)
# Grid steps on each side of a tau whose validation scores are averaged to rank it. Near its
# best, the score is flat in tau on held-out classes, but on unseen classes it can fall by 0.05
# to 0.1 one step past the top. Ranking by the window's mean picks thresholds away from that edge.
_TAU_WINDOW = 2
# Passes of the refinement that moves samples to the closest cluster mean. On CLINC150 the
# first pass gave most of the gain and the third almost nothing more.
_REFINE_ITERATIONS = 3


def check_device(device: str) -> torch.device:
    """Return ``torch.device(device)``, or raise ValueError when torch cannot use it here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} is not available: this torch build ({torch.__version__}) finds no CUDA "
            "GPU; use device 'cpu' (--device cpu)"
        )
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'")
    return parsed


@contextmanager
def _deterministic_torch():
    """Run torch with deterministic algorithms, then restore the caller's setting.

    Without it, two CPU runs with the same seed differ by about 1e-5 in the weights after a few
    epochs (from parallel scatter-adds), and the difference can change cluster ids.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # warn_only: an op without a deterministic kernel (some CUDA ones) warns instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn_only)


def _restore_rows(result: HierarchyResult, usable: np.ndarray, zero: np.ndarray) -> HierarchyResult:
    """Map a result over the usable rows back to all rows.

    Dropped rows get -1, and each all-zero row gets a new id after the clustered ones.
    """

    def expand(assignment: np.ndarray) -> np.ndarray:
        full = np.full(usable.shape[0], -1, dtype=np.int64)
        full[usable] = assignment
        num_clusters = int(assignment.max()) + 1 if assignment.shape[0] else 0
        full[zero] = num_clusters + np.arange(np.count_nonzero(zero))
        return full

    return HierarchyResult(
        labels=expand(result.labels),
        level_labels=[expand(level) for level in result.level_labels],
        edges_added=list(result.edges_added),
        level_stats=list(result.level_stats),
    )


def read_model_file(path: Path, device: str) -> tuple[dict, dict]:
    """Return the header metadata and the tensors of a safetensors model file, without running code.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an invalid ``device`` or a file that safetensors cannot read.
    """
    check_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for malformed headers.
        raise ValueError(
            f"{path} is not a hilander model file (safetensors could not read it: {error}); "
            "pass a file written by a model's save method or 'hilander train'"
        ) from None
    return metadata, tensors


@dataclass
class _Choice:
    score: float
    k: int
    tau: float
    levels: int
    min_cluster_size: int
    refine: bool
    metrics: dict


def _smooth_over_tau(scores: dict[tuple, float]) -> dict[tuple, float]:
    """Average each setting's score with its neighbours on the tau grid.

    Args:
        scores: score by key ``(epoch, k, tau, levels, min_size, refine)``.

    Returns:
        For each key, the mean score of the keys that differ from it only in tau and lie at most
        ``_TAU_WINDOW`` steps away on the sorted grid of the taus present for that setting.
    """
    by_setting: dict[tuple, list[tuple[float, tuple]]] = {}
    for key in scores:
        epoch, k, tau, *rest = key
        by_setting.setdefault((epoch, k, *rest), []).append((tau, key))
    smoothed = {}
    for members in by_setting.values():
        members.sort()
        values = np.array([scores[key] for _, key in members])
        for index, (_, key) in enumerate(members):
            low, high = max(0, index - _TAU_WINDOW), min(len(members), index + _TAU_WINDOW + 1)
            smoothed[key] = float(values[low:high].mean())
    return smoothed


class HiLander:
    """Learned hierarchical clustering (Hi-LANDER) of embeddings.

    ``fit`` learns, from labelled embeddings of some classes, which kNN edges join samples of the
    same class. ``predict`` then clusters embeddings of other, unseen classes without labels.
    Settings left as ``None`` (k, tau) are chosen inside ``fit`` by clustering held-out classes
    of the training data and keeping the setting with the best mean of pairwise and BCubed F.

    Args:
        k: neighbours per node at inference, the node itself included; ``None`` chooses among the
            k values of ``train_knn`` by validation.
        tau: threshold on P(same class) for keeping an edge, in [0, 1); ``None`` chooses it from
            ``tau_grid`` by validation.
        max_levels: maximum number of hierarchy levels at inference. Validation may choose fewer.
        min_merge_fraction: stop when a level keeps edges for fewer than this share of its
            nodes (merging has stalled); 0 stops only when a level keeps no edge.
        min_cluster_size: after the last level, members of clusters with fewer samples than
            this join the nearest larger cluster (by cosine similarity to its mean); 0 keeps
            every cluster. ``None`` chooses it by validation among shares of 0 to 0.3 of the
            median validation class size, so it assumes unseen classes of similar sizes.
        refine: after the small clusters have joined larger ones, move each sample to the
            cluster with the closest mean, for up to 3 passes (k-means seeded with the
            hierarchy's clusters, whose number stays the model's choice). ``None`` chooses by
            validation whether to.
        train_knn: (k, levels) pairs; each builds a ground-truth hierarchy of that many levels
            whose graphs are all used for training.
        train_link_drop: link-drop probabilities. One ground-truth hierarchy is built per
            (k, levels) pair and per value, dropping each same-class link with that probability.
            Values above 0 add upper-level training graphs of clusters cut into more pieces.
        hidden: width of the GNN's first layer.
        num_layers: graph conv layers, 1 to 4.
        conv: ``"graphconv"`` (similarity-weighted mean) or ``"gat"`` (graph attention).
        heads: attention heads of the ``"gat"`` layer.
        dropout: dropout after each conv layer during training.
        link_head: ``"product"`` feeds a small classifier the sum and the elementwise product
            of the ends' projections plus their cosine similarity. ``"cosine"`` scores an edge by
            the cosine of learned projections of its two ends' embeddings, scaled and shifted,
            plus a learned multiple of their cosine similarity. ``"additive"`` uses the sum
            alone, as the reference implementation does. See :class:`hilander.model.Lander`.
        shared_neighbors: give the link head each edge's shared-neighbour share, the fraction
            of kNN lists the two ends have in common (see
            :func:`hilander.graph.shared_neighbor_share`). It does not depend on where classes
            lie in the feature space, so it helps most on classes unlike the training ones: on
            Omniglot it ranks the test links far better than the features alone
            (BENCHMARKS.md).
        use_cluster_features: append each node's cluster mean feature to its input.
        knn_on_means: above level 0, build the kNN graph on cluster means instead of peak features.
        epochs: training epochs; each epoch visits every node of every training graph once.
        lr: initial SGD learning rate, annealed to 1e-5 by a cosine schedule.
        batch_size: seed nodes per mini-batch.
        balance_graphs: give every training graph the same number of steps per epoch, cycling
            the small upper-level graphs, instead of one pass over each graph.
        validation_fraction: share of the training classes held out, per fold, for model and
            setting selection. With fewer than 4 classes, or 0, the training data is used instead.
        validation_folds: number of disjoint held-out class sets. A model is trained for each
            with its classes left out, and the epoch and settings are chosen by the mean score
            over the folds, which depends less on which classes happen to be held out than one
            split does. Each fold adds the time of one training on the remaining classes. No
            class is held out twice, so at most 1 / ``validation_fraction`` folds are used.
            Values above 1 need ``refit=True``.
        eval_every: epochs between validation runs that select the best model.
        refit: after choosing the epoch and the settings on the held-out classes, train a new
            model on all training classes for the chosen number of epochs, which adds that many
            epochs of training time. Without held-out classes there is nothing to refit.
        tau_grid: candidate thresholds for the final choice of tau.
        knn_method: how kNN graphs are searched, in training and in ``predict``: ``"auto"``
            (exact up to about 100,000 rows at 256-d, then approximate), ``"exact"``,
            ``"ivf"``, ``"ivfpq"`` or ``"hnsw"``; see :class:`hilander.graph.KnnConfig`.
        knn_params: other :class:`~hilander.graph.KnnConfig` fields by name, such as
            ``{"nprobe": 64}``; ``None`` keeps their defaults.
        chunk_size: centres that ``predict`` scores per block; peak memory grows with it, not
            with the number of samples. ``None`` scores each level in one block.
        device: torch device, such as ``"cpu"`` or ``"cuda"``.
        random_state: seed for the class split, sampling and weight initialisation.

    Attributes:
        model_: the trained :class:`~hilander.model.Lander`.
        k_, tau_, n_levels_, min_cluster_size_, refine_: the settings used by ``predict``.
        best_epoch_: the epoch whose weights scored best on the validation classes.
        n_features_in_: feature dimension seen in ``fit``.
        validation_: pairwise F, BCubed F and their mean (``score``) of the chosen setting on the
            held-out classes, averaged over the ``folds``.
        history_: one dict per epoch with losses and, where measured, the validation score.
        versions_: versions of hilander, torch, faiss and numpy that fitted the model, or that
            wrote the file it was loaded from.
    """

    def __init__(
        self,
        k: int | None = None,
        tau: float | None = None,
        max_levels: int = 10,
        min_merge_fraction: float = 0.001,
        min_cluster_size: int | None = None,
        refine: bool | None = None,
        train_knn: tuple[tuple[int, int], ...] = _DEFAULT_TRAIN_KNN,
        train_link_drop: tuple[float, ...] = (0.0, 0.5),
        hidden: int = 64,
        num_layers: int = 1,
        conv: str = "graphconv",
        heads: int = 1,
        dropout: float = 0.0,
        link_head: str = "product",
        shared_neighbors: bool = True,
        use_cluster_features: bool = True,
        knn_on_means: bool = True,
        epochs: int = 20,
        lr: float = 0.1,
        batch_size: int = 4096,
        balance_graphs: bool = True,
        validation_fraction: float = 0.5,
        validation_folds: int = 2,
        eval_every: int = 5,
        refit: bool = True,
        tau_grid: tuple[float, ...] = _DEFAULT_TAU_GRID,
        knn_method: str = "auto",
        knn_params: dict | None = None,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        device: str = "cpu",
        random_state: int = 0,
    ) -> None:
        self.k = k
        self.tau = tau
        self.max_levels = max_levels
        self.min_merge_fraction = min_merge_fraction
        self.min_cluster_size = min_cluster_size
        self.refine = refine
        self.train_knn = train_knn
        self.train_link_drop = train_link_drop
        self.hidden = hidden
        self.num_layers = num_layers
        self.conv = conv
        self.heads = heads
        self.dropout = dropout
        self.link_head = link_head
        self.shared_neighbors = shared_neighbors
        self.use_cluster_features = use_cluster_features
        self.knn_on_means = knn_on_means
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.balance_graphs = balance_graphs
        self.validation_fraction = validation_fraction
        self.validation_folds = validation_folds
        self.eval_every = eval_every
        self.refit = refit
        self.tau_grid = tau_grid
        self.knn_method = knn_method
        self.knn_params = knn_params
        self.chunk_size = chunk_size
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters

    def get_params(self) -> dict:
        """Return the constructor parameters by name."""
        return {
            "k": self.k,
            "tau": self.tau,
            "max_levels": self.max_levels,
            "min_merge_fraction": self.min_merge_fraction,
            "min_cluster_size": self.min_cluster_size,
            "refine": self.refine,
            "train_knn": [list(pair) for pair in self.train_knn],
            "train_link_drop": list(self.train_link_drop),
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "conv": self.conv,
            "heads": self.heads,
            "dropout": self.dropout,
            "link_head": self.link_head,
            "shared_neighbors": self.shared_neighbors,
            "use_cluster_features": self.use_cluster_features,
            "knn_on_means": self.knn_on_means,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "balance_graphs": self.balance_graphs,
            "validation_fraction": self.validation_fraction,
            "validation_folds": self.validation_folds,
            "eval_every": self.eval_every,
            "refit": self.refit,
            "tau_grid": list(self.tau_grid),
            "knn_method": self.knn_method,
            "knn_params": None if self.knn_params is None else dict(self.knn_params),
            "chunk_size": self.chunk_size,
            "device": self.device,
            "random_state": self.random_state,
        }

    def set_params(self, **params) -> "HiLander":
        """Set constructor parameters by name and return self, as scikit-learn estimators do.

        On a fitted model, the inference settings (``knn_method``, ``knn_params``,
        ``chunk_size``, ``device``) take effect at the next ``predict``; the others take
        effect at the next ``fit``.

        Raises:
            ValueError: for an unknown name or an invalid value; nothing is changed then.
        """
        known = set(self.get_params())
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; HiLander takes {sorted(known)}")
        previous = {name: getattr(self, name) for name in params}
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._validate_params()
        except ValueError:
            for name, value in previous.items():
                setattr(self, name, value)
            raise
        if "device" in params and hasattr(self, "model_"):
            self.model_ = self.model_.to(torch.device(self.device))
        return self

    def _knn_config(self) -> KnnConfig:
        options = dict(self.knn_params or {})
        options.setdefault("seed", self.random_state)
        options.setdefault("gpu", torch.device(self.device).type == "cuda")
        return KnnConfig.from_options(self.knn_method, options)

    def _validate_params(self) -> None:
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(message)

        require(self.k is None or (isinstance(self.k, int) and self.k >= 2), f"k={self.k!r} is invalid; use an integer >= 2 or None")
        require(
            self.min_cluster_size is None or (isinstance(self.min_cluster_size, int) and self.min_cluster_size >= 0),
            f"min_cluster_size={self.min_cluster_size!r} is invalid; use an integer >= 0 (0 keeps every cluster) or None",
        )
        require(
            self.refine is None or isinstance(self.refine, bool),
            f"refine={self.refine!r} is invalid; use True, False or None (chosen by validation)",
        )
        require(0.0 <= self.min_merge_fraction < 1.0, f"min_merge_fraction={self.min_merge_fraction!r} is invalid; use a value in [0, 1)")
        check_device(self.device)
        require(self.knn_method in KNN_METHODS, f"knn_method={self.knn_method!r} is invalid; use one of {KNN_METHODS}")
        require(
            self.knn_params is None or isinstance(self.knn_params, dict),
            f"knn_params={self.knn_params!r} is invalid; use a dict such as {{'nprobe': 64}} or None",
        )
        self._knn_config()  # raises ValueError naming a bad knn_params entry
        require(
            self.chunk_size is None or (isinstance(self.chunk_size, int) and self.chunk_size >= 1),
            f"chunk_size={self.chunk_size!r} is invalid; use a positive integer or None",
        )
        require(self.tau is None or 0.0 <= self.tau < 1.0, f"tau={self.tau!r} is invalid; use a value in [0, 1) or None")
        require(isinstance(self.max_levels, int) and self.max_levels >= 1, f"max_levels={self.max_levels!r} is invalid; use an integer >= 1")
        require(
            len(self.train_knn) > 0 and all(len(p) == 2 and int(p[0]) >= 2 and int(p[1]) >= 1 for p in self.train_knn),
            f"train_knn={self.train_knn!r} is invalid; use (k, levels) pairs with k >= 2 and levels >= 1",
        )
        require(self.link_head in LINK_HEADS, f"link_head={self.link_head!r} is invalid; use one of {LINK_HEADS}")
        require(
            isinstance(self.shared_neighbors, bool),
            f"shared_neighbors={self.shared_neighbors!r} is invalid; use True or False",
        )
        require(
            len(self.train_link_drop) > 0 and all(0.0 <= d < 1.0 for d in self.train_link_drop),
            f"train_link_drop={self.train_link_drop!r} is invalid; use values in [0, 1)",
        )
        require(self.conv in CONV_TYPES, f"conv={self.conv!r} is invalid; use one of {CONV_TYPES}")
        require(1 <= self.num_layers <= 4, f"num_layers={self.num_layers!r} is invalid; use 1 to 4")
        require(self.hidden >= 2, f"hidden={self.hidden!r} is invalid; use an integer >= 2")
        require(self.epochs >= 1, f"epochs={self.epochs!r} is invalid; use an integer >= 1")
        require(self.lr > 0, f"lr={self.lr!r} is invalid; use a positive learning rate")
        require(self.batch_size >= 1, f"batch_size={self.batch_size!r} is invalid; use an integer >= 1")
        require(0.0 <= self.validation_fraction < 1.0, f"validation_fraction={self.validation_fraction!r} is invalid; use a value in [0, 1)")
        require(
            isinstance(self.validation_folds, int) and self.validation_folds >= 1,
            f"validation_folds={self.validation_folds!r} is invalid; use an integer >= 1",
        )
        require(
            self.refit or self.validation_folds == 1 or self.validation_fraction == 0,
            f"refit=False needs validation_folds=1 (got {self.validation_folds}), since with several folds "
            "no single trained model has seen the classes of the others",
        )
        require(self.eval_every >= 1, f"eval_every={self.eval_every!r} is invalid; use an integer >= 1")
        require(len(self.tau_grid) > 0 and all(0.0 <= t < 1.0 for t in self.tau_grid), f"tau_grid={self.tau_grid!r} is invalid; use values in [0, 1)")

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        X,
        y,
        progress: ProgressCallback | None = None,
        *,
        drop_nonfinite: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> "HiLander":
        """Train the model on labelled embeddings and choose the inference settings.

        Args:
            X: (n_samples, n_features) embeddings; rows are L2-normalised internally. All-zero
                rows are left out of training with a warning, since they have no direction.
            y: (n_samples,) class labels: integers, or any sortable values such as class
                names. The classes should be disjoint from those that ``predict`` will see.
            progress: optional callback ``(stage, completed, total)`` for progress display.
            drop_nonfinite: leave out rows with NaN or infinite values, with a warning,
                instead of raising.
            checkpoint_dir: folder for a training checkpoint, written after every epoch and
                kept after fit returns (see :mod:`hilander.checkpoint`). Only the validated
                training is checkpointed; a resumed run repeats the refit (``refit``) whole.
            resume: continue from the checkpoint in ``checkpoint_dir``, which must have been
                written for the same data and parameters. On CPU the result is the same as that
                of an uninterrupted fit.

        Returns:
            self. With fewer samples than a k of ``k`` or ``train_knn``, that k is lowered to
            the number of samples, with a warning.

        Raises:
            ValueError: for invalid parameters, NaN features (unless ``drop_nonfinite``), a
                wrong number of labels, fewer than 2 classes, or a checkpoint of another run.
            FileExistsError: if ``checkpoint_dir`` contains a checkpoint and ``resume`` is false.
        """
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoint to continue")
        with _deterministic_torch():
            return self._fit(X, y, progress, drop_nonfinite, checkpoint_dir, resume)

    def _fit(
        self, X, y, progress: ProgressCallback | None, drop_nonfinite: bool = False,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
    ) -> "HiLander":
        self._validate_params()
        features = check_features(X, allow_nonfinite=drop_nonfinite)
        labels = check_labels(y, features.shape[0], allow_categorical=True)
        nonfinite, zero = screen_rows(features, "X", drop_nonfinite)
        if nonfinite.any() or zero.any():
            features, labels = features[~nonfinite & ~zero], labels[~nonfinite & ~zero]
            if features.shape[0] == 0:
                raise ValueError(
                    "every row of X is all zeros or non-finite, so no row is left to train on; "
                    "check the step that produced the embeddings"
                )
        features = l2_normalize(features)
        classes = np.unique(labels)
        if classes.shape[0] < 2:
            raise ValueError(
                f"y has {classes.shape[0]} class ({classes[:1].tolist()}) among the rows used; fit learns "
                "where one class ends and the next begins, so pass labelled samples of at least 2 classes"
            )
        largest_k = max([int(k) for k, _ in self.train_knn] + ([self.k] if self.k else []))
        if features.shape[0] < largest_k:
            logger.warning(
                "X has %d samples, fewer than k=%d neighbours; fitting with k=%d instead",
                features.shape[0], largest_k, features.shape[0],
            )
        fingerprint = None
        if checkpoint_dir is not None:
            # chunk_size only changes how predict splits its work, so a resume may change it.
            params = {name: value for name, value in self.get_params().items() if name != "chunk_size"}
            fingerprint = training_fingerprint(features, labels, params)

        started = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        generator = torch.Generator().manual_seed(self.random_state)
        folds = self._class_folds(labels, classes, rng)
        self.n_features_in_ = features.shape[1]
        k_candidates = [self.k] if self.k else sorted({int(k) for k, _ in self.train_knn}, reverse=True)
        k_candidates = sorted({min(k, features.shape[0]) for k in k_candidates}, reverse=True)
        held_out = np.zeros(labels.shape[0], dtype=bool)
        for _, validation_mask in folds:
            held_out |= validation_mask
        size_candidates = self._min_size_candidates(labels[held_out])
        if self.refine and self.min_cluster_size is not None and self.min_cluster_size <= 1:
            logger.warning(
                "refine=True with min_cluster_size=%d: refinement cannot move a one-sample cluster, "
                "whose mean is the sample itself, so fragments stay; leave min_cluster_size to "
                "validation or set it above 1", self.min_cluster_size,
            )
        taus = [self.tau] if self.tau is not None else list(self.tau_grid)
        self.history_ = []
        checkpoints = [None] * len(folds)
        if checkpoint_dir is not None:
            checkpoints = self._fold_checkpoints(Path(checkpoint_dir), fingerprint, len(folds), resume)
        for fold, (fit_mask, validation_mask) in enumerate(folds):
            checkpoint = checkpoints[fold]
            graphs = self._build_graphs(features[fit_mask], labels[fit_mask], rng, progress)
            torch.manual_seed(self.random_state + fold)
            self.model_ = self._new_model()
            validation = (features[validation_mask], labels[validation_mask])
            self._train(
                graphs, validation, k_candidates, taus, size_candidates, rng, generator, progress,
                checkpoint=checkpoint, fold=fold, num_folds=len(folds),
            )

        final, self.best_epoch_ = self._choose(len(folds))
        self.k_, self.tau_, self.n_levels_ = final.k, final.tau, final.levels
        self.min_cluster_size_ = final.min_cluster_size
        self.refine_ = final.refine
        self.validation_ = final.metrics
        self.versions_ = runtime_versions()
        logger.info(
            "chose epoch %d, k=%d, tau=%.2f, levels=%d, min_cluster_size=%d, refine=%s; validation "
            "pairwise F %.3f, BCubed F %.3f (mean over %d fold(s))",
            self.best_epoch_, self.k_, self.tau_, self.n_levels_, self.min_cluster_size_, self.refine_,
            final.metrics["pairwise_f"], final.metrics["bcubed_f"], len(folds),
        )
        if self.refit and not folds[0][1].all():
            # The held-out classes have chosen the epoch and the settings, so they can now join training.
            graphs = self._build_graphs(features, labels, rng, progress)
            torch.manual_seed(self.random_state)
            self.model_ = self._new_model()
            self._train(graphs, None, k_candidates, taus, size_candidates, rng, generator, progress, stop_after=self.best_epoch_)
            logger.info("refitted on all %d classes for %d epochs", classes.shape[0], self.best_epoch_)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @staticmethod
    def _fold_checkpoints(folder: Path, fingerprint: str, num_folds: int, resume: bool) -> list[TrainingCheckpoint]:
        """Open one checkpoint per fold (subfolders ``fold-1``, ... when there are several).

        All are opened before training starts, so an existing or foreign checkpoint in any fold
        is an error before any work is done.
        """
        if num_folds == 1:
            return [TrainingCheckpoint(folder, fingerprint, resume)]
        single = folder / CHECKPOINT_FILE
        if single.is_file():
            raise ValueError(
                f"{single} is the checkpoint of a fit with one validation fold, but this fit uses "
                f"{num_folds}; resume with validation_folds=1, or delete it to start over"
            )
        return [
            TrainingCheckpoint(folder / f"fold-{fold + 1}", f"{fingerprint}:{fold}" if fold else fingerprint, resume)
            for fold in range(num_folds)
        ]

    def _new_model(self) -> Lander:
        in_dim = self.n_features_in_ * (2 if self.use_cluster_features else 1)
        return Lander(
            in_dim, self.hidden, self.num_layers, self.conv, self.heads, self.dropout, self.link_head,
            self.shared_neighbors,
        ).to(torch.device(self.device))

    def _min_size_candidates(self, validation_labels: np.ndarray) -> list[int]:
        """Return the min_cluster_size values to try: the user's, or shares of a typical class size."""
        if self.min_cluster_size is not None:
            return [self.min_cluster_size]
        median_size = float(np.median(np.unique(validation_labels, return_counts=True)[1]))
        return sorted({int(round(share * median_size)) for share in _MIN_CLUSTER_SHARES})

    def _build_graphs(self, features, labels, rng, progress) -> list:
        """Build the ground-truth training hierarchies of every (k, levels, link drop) recipe.

        Link drop acts only when a level is decoded, so recipes that share k share their level-0
        graph. That graph is kept once, which cut a CLINC150 epoch from 21 s to 14 s on 2 cores.
        """
        graphs = []
        level0_ks = set()
        recipes = [(int(k), int(levels), float(drop)) for k, levels in self.train_knn for drop in self.train_link_drop]
        for index, (k, levels, drop) in enumerate(recipes):
            hierarchy = build_training_levels(
                features, labels, k, levels,
                use_cluster_features=self.use_cluster_features, knn_on_means=self.knn_on_means,
                link_drop=drop, rng=rng, knn=self._knn_config(),
            )
            graphs += hierarchy[1:] if k in level0_ks else hierarchy
            level0_ks.add(k)
            if progress:
                progress("training graphs", index + 1, len(recipes))
        logger.info("built %d training graphs with %s nodes", len(graphs), [g.num_nodes for g in graphs])
        return graphs

    def _train(
        self, graphs, validation, k_candidates, taus, size_candidates, rng, generator, progress,
        checkpoint=None, stop_after=None, fold=0, num_folds=1,
    ) -> int:
        """Train ``self.model_`` and keep the weights of the epoch with the best validation score.

        Every ``eval_every`` epochs the held-out classes are clustered with every candidate
        setting, and the scores go into the epoch's history record (``validation_table``), from
        which :meth:`_choose` picks the epoch and the settings over all folds. With
        ``checkpoint``, save the training state after every epoch and resume from the saved
        one. With ``stop_after`` (an epoch number), train without validation on the same
        learning-rate schedule, stop after that epoch and keep its weights. Returns the epoch whose
        weights are kept.
        """
        samplers = [NeighborhoodSampler(g, self.num_layers, self.batch_size, self.device) for g in graphs]
        steps_per_epoch = epoch_steps(samplers, self.balance_graphs)
        total_steps = self.epochs * steps_per_epoch
        last_epoch = stop_after or self.epochs
        if stop_after:
            stage = "refitting on all classes"
        elif num_folds == 1:
            stage = "training"
        else:
            stage = f"training fold {fold + 1} of {num_folds}"
        optimizer = torch.optim.SGD(self.model_.parameters(), lr=self.lr, momentum=0.9, weight_decay=1e-5)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps, eta_min=1e-5)
        best_score, best_state, best_epoch = -np.inf, None, last_epoch
        step = 0
        first_epoch = 1
        restored = None if checkpoint is None else checkpoint.restore(self.model_, optimizer, scheduler, rng, generator)
        if restored is not None:
            first_epoch = restored.epoch + 1
            best_state, self.history_ = restored.best_state, restored.history
            best_score = restored.best_score if restored.best_score is not None else -np.inf
            step = restored.epoch * steps_per_epoch
        fold_history = [record for record in self.history_ if record.get("fold", 0) == fold and not record["refit"]]

        def on_step() -> None:
            nonlocal step
            step += 1
            if progress:
                progress(stage, step, last_epoch * steps_per_epoch)

        for epoch in range(first_epoch, last_epoch + 1):
            losses = train_epoch(
                self.model_, samplers, optimizer, scheduler, rng, generator, self.balance_graphs, on_step
            )
            record = {"epoch": epoch, "refit": stop_after is not None, "fold": fold, **losses}
            if stop_after is None and (epoch % self.eval_every == 0 or epoch == self.epochs):
                table = self._score_table(*validation, k_candidates, taus, size_candidates)
                # Ranked as _choose ranks settings, so that the weights kept here belong to the
                # epoch that _choose picks when there is one fold and no refit.
                record["validation_score"] = max(_smooth_over_tau({(epoch, *row[:5]): row[5] for row in table}).values())
                record["validation_table"] = table
                if record["validation_score"] > best_score:
                    best_score = record["validation_score"]
                    best_state = copy.deepcopy(self.model_.state_dict())
            logger.info("epoch %d: %s", epoch, {key: value for key, value in record.items() if key != "validation_table"})
            self.history_.append(record)
            fold_history.append(record)
            if checkpoint is not None:
                checkpoint.save(
                    epoch, self.model_, optimizer, scheduler, rng, generator,
                    None if best_state is None else float(best_score), best_state, self.history_,
                )
        if best_state is not None:
            self.model_.load_state_dict(best_state)
            # Read from the history, which a resumed run restores, rather than from this loop.
            scored = [(record["validation_score"], -record["epoch"]) for record in fold_history if "validation_score" in record]
            best_epoch = -max(scored)[1]
        return best_epoch

    def _class_folds(self, labels, classes, rng) -> list[tuple[np.ndarray, np.ndarray]]:
        """Hold out disjoint random sets of classes; return one (fit mask, validation mask) per fold.

        Each fold holds out ``validation_fraction`` of the classes, and no class is held out
        twice, so ``validation_folds=2`` with a fraction of 0.5 splits the classes in two halves
        that take turns. At least 2 classes stay for training in every fold.
        """
        num_validation = min(int(round(self.validation_fraction * classes.shape[0])), classes.shape[0] - 2)
        if classes.shape[0] < 4 or num_validation < 2:
            logger.warning(
                "no validation classes held out (%d classes, validation_fraction=%s gives %d): "
                "choosing the model and settings on the training classes themselves, which may "
                "over-merge unseen classes; hold out at least 2 classes for a fair choice",
                classes.shape[0], self.validation_fraction, num_validation,
            )
            everything = np.ones(labels.shape[0], dtype=bool)
            return [(everything, everything)]
        order = rng.permutation(classes)
        folds = []
        # Each class is held out at most once, so a large fraction leaves room for fewer folds.
        num_folds = min(self.validation_folds, max(1, int(1.0 / self.validation_fraction + 1e-9)))
        if num_folds < self.validation_folds:
            logger.info(
                "validation_fraction=%s leaves room for %d disjoint fold(s), not validation_folds=%d",
                self.validation_fraction, num_folds, self.validation_folds,
            )
        for fold in range(num_folds):
            held_out = order[fold * num_validation : (fold + 1) * num_validation]
            if held_out.shape[0] < 2:
                break
            validation_mask = np.isin(labels, held_out)
            folds.append((~validation_mask, validation_mask))
        return folds

    def _score_table(self, features, labels, k_candidates, taus, size_candidates) -> list[list]:
        """Cluster the validation set with every setting and score each result.

        Returns:
            One row ``[k, tau, levels, min_cluster_size, refine, score, pairwise F, BCubed F]``
            per setting, where score is the mean of the two F-scores. Rows cover levels 1 to
            ``max_levels`` for every k and tau: a hierarchy that stopped early repeats its last
            assignment, so that folds whose hierarchies stop at different levels can be averaged.
        """
        rows = []
        refine_candidates = [False, True] if self.refine is None else [self.refine]
        for k in k_candidates:
            first_level = score_first_level(
                self.model_, features, k, self.use_cluster_features, self.device,
                self._knn_config(), self.chunk_size,
            )
            for tau in taus:
                result = self._hierarchy(features, k, tau, self.max_levels, first_level=first_level)
                assignments = result.level_labels or [result.labels]
                scored: dict[tuple[int, int, bool], tuple[float, float]] = {}
                for levels in range(1, self.max_levels + 1):
                    level_index = min(levels, len(assignments)) - 1
                    for min_size in size_candidates:
                        # Refinement leaves a one-sample fragment where it is, because its mean is
                        # itself. So it is tried only after small clusters have joined large ones,
                        # which also skips the costliest case: thousands of fragments.
                        refine_options = refine_candidates
                        if min_size <= 1 and self.refine is None:
                            refine_options = [False]
                        for refine in refine_options:
                            key = (level_index, min_size, refine)
                            if key not in scored:
                                final = self._finish(features, assignments[level_index], min_size, refine)
                                scored[key] = (pairwise(labels, final)[2], bcubed(labels, final)[2])
                            pairwise_f, bcubed_f = scored[key]
                            score = 0.5 * (pairwise_f + bcubed_f)
                            rows.append([
                                int(k), float(tau), levels, int(min_size), bool(refine), float(score),
                                float(pairwise_f), float(bcubed_f),
                            ])
        return rows

    def _choose(self, num_folds: int) -> tuple[_Choice, int]:
        """Pick the epoch and the setting with the best mean score over the folds.

        Only epochs validated in every fold and settings scored in every fold compete. A setting
        is ranked by its score averaged with those of its neighbours on the tau grid (see
        :func:`_smooth_over_tau`), so that a threshold on a plateau beats one next to a cliff.
        Ties go to the earlier epoch, then to the first setting in table order (larger k, lower tau, fewer
        levels, smaller minimum size, no refinement).

        Returns:
            ``(choice, epoch)``; the choice's metrics are the fold means of pairwise F, BCubed F
            and the score.
        """
        sums: dict[tuple, list[float]] = {}
        counts: dict[tuple, int] = {}
        for record in self.history_:
            if record["refit"] or "validation_table" not in record:
                continue
            for k, tau, levels, min_size, refine, score, pairwise_f, bcubed_f in record["validation_table"]:
                key = (record["epoch"], k, tau, levels, min_size, refine)
                total = sums.setdefault(key, [0.0, 0.0, 0.0])
                total[0] += score
                total[1] += pairwise_f
                total[2] += bcubed_f
                counts[key] = counts.get(key, 0) + 1
        complete = [key for key in sums if counts[key] == num_folds]
        smoothed = _smooth_over_tau({key: sums[key][0] for key in complete})
        best_index = max(range(len(complete)), key=lambda i: (smoothed[complete[i]], -complete[i][0], -i))
        best = complete[best_index]
        epoch, k, tau, levels, min_size, refine = best
        score, pairwise_f, bcubed_f = (value / num_folds for value in sums[best])
        metrics = {"pairwise_f": pairwise_f, "bcubed_f": bcubed_f, "score": score, "folds": num_folds}
        return _Choice(score, int(k), float(tau), int(levels), int(min_size), bool(refine), metrics), int(epoch)

    def chosen_settings(self) -> str:
        """Describe the settings ``predict`` uses, such as ``"epoch 5, k=5, tau=0.20, ..."``."""
        self._check_fitted()
        return (
            f"epoch {self.best_epoch_}, k={self.k_}, tau={self.tau_:.2f}, levels={self.n_levels_}, "
            f"min_cluster_size={self.min_cluster_size_}, refine={self.refine_}"
        )

    @staticmethod
    def _finish(features, assignment, min_size: int, refine: bool) -> np.ndarray:
        """Apply the steps after the last level: join small clusters, then optionally refine."""
        assignment = absorb_small_clusters(features, assignment, min_size)
        if refine:
            assignment = refine_to_means(features, assignment, _REFINE_ITERATIONS)
        return assignment

    def _hierarchy(self, features, k, tau, levels, on_level=None, first_level=None) -> HierarchyResult:
        return cluster_hierarchy(
            self.model_, features, k, tau, max_levels=levels,
            use_cluster_features=self.use_cluster_features, knn_on_means=self.knn_on_means,
            min_merge_fraction=self.min_merge_fraction, device=self.device, on_level=on_level,
            knn=self._knn_config(), chunk_size=self.chunk_size, first_level=first_level,
        )

    def estimate_memory(self, n_samples: int, n_features: int | None = None) -> MemoryEstimate:
        """Estimate the peak memory of ``predict`` on n_samples rows, without allocating it.

        Args:
            n_samples: rows to cluster.
            n_features: their dimension; defaults to the fitted one.

        Returns:
            :class:`hilander.resources.MemoryEstimate`, in bytes; ``describe()`` gives GiB.
        """
        self._check_fitted()
        dim = int(n_features or self.n_features_in_)
        config = self._knn_config()
        method = choose_knn_method(n_samples, dim) if config.method == "auto" else config.method
        return estimate_memory(
            n_samples, dim, min(self.k_, max(n_samples, 2)), self.hidden, self.num_layers,
            self.use_cluster_features, self.chunk_size, method, config.hnsw_m,
        )

    def _log_levels(self, result: HierarchyResult) -> None:
        for stats in result.level_stats:
            knn = stats["knn"]
            recall = f", recall {knn['recall']:.3f}" if "recall" in knn else ""
            logger.info(
                "level %d: %d nodes, %d edges added; kNN (%s, k=%d) %.1f s%s, GNN %.1f s, decoding %.1f s, "
                "peak memory %.2f GiB",
                stats["level"], stats["nodes"], stats["edges_added"], knn.get("method"), stats["k"],
                knn.get("seconds", 0.0), recall, stats["gnn_seconds"], stats["decode_seconds"],
                stats["peak_memory"] / 1024**3,
            )

    # ------------------------------------------------------------------ predict

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this HiLander is not fitted yet; call fit(X, y) or HiLander.load(path) first")

    def predict_hierarchy(self, X, on_level=None, drop_nonfinite: bool = False) -> HierarchyResult:
        """Cluster ``X`` and return the final labels with the assignment after every level.

        The final labels are those of the last level after clusters smaller than
        ``min_cluster_size_`` have joined larger ones and, with ``refine_``, samples have moved
        to the closest cluster mean; ``level_labels`` are as decoded.

        ``on_level``, if given, is called as ``on_level(level, num_nodes, edges_added)`` after
        each level, for progress display. Row handling is described in :meth:`predict`.

        Raises:
            ValueError: for NaN features (unless ``drop_nonfinite``) or a feature dimension
                other than the fitted one.
            MemoryError: before any work, when :meth:`estimate_memory` exceeds the memory
                available.
        """
        self._check_fitted()
        features = check_features(X, allow_nonfinite=drop_nonfinite)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {features.shape[1]} features but the model was fitted on {self.n_features_in_}; "
                "use embeddings from the same encoder as the training data"
            )
        nonfinite, zero = screen_rows(features, "X", drop_nonfinite)
        usable = ~nonfinite & ~zero
        num_usable = int(np.count_nonzero(usable))
        if 2 <= num_usable < self.k_:
            logger.warning(
                "X has %d samples to cluster, fewer than the model's k=%d neighbours; clustering "
                "with k=%d instead", num_usable, self.k_, num_usable,
            )
        check_memory(
            self.estimate_memory(num_usable, features.shape[1]),
            f"clustering {num_usable} x {features.shape[1]} embeddings with k={self.k_}",
        )
        if usable.all():
            features = l2_normalize(features)
            with _deterministic_torch():
                result = self._hierarchy(features, self.k_, self.tau_, self.n_levels_, on_level)
            result.labels = self._finish(features, result.labels, self.min_cluster_size_, self.refine_)
            self._log_levels(result)
            return result
        result = HierarchyResult(labels=np.zeros(0, dtype=np.int64))
        if num_usable > 0:
            kept = l2_normalize(features[usable])
            with _deterministic_torch():
                result = self._hierarchy(kept, self.k_, self.tau_, self.n_levels_, on_level)
            result.labels = self._finish(kept, result.labels, self.min_cluster_size_, self.refine_)
            self._log_levels(result)
        return _restore_rows(result, usable, zero)

    def predict(self, X, drop_nonfinite: bool = False) -> np.ndarray:
        """Cluster ``X`` (n_samples, n_features) and return (n_samples,) int64 cluster ids.

        Ids run from 0 to the number of clusters - 1, except for rows dropped by
        ``drop_nonfinite`` (NaN or infinite values), which get -1. Each all-zero row becomes a
        cluster of its own, since cosine similarity is undefined for it. With fewer samples
        than the model's k, k is lowered to the number of samples, with a warning.

        Raises:
            ValueError: for NaN features (unless ``drop_nonfinite``) or a feature dimension
                other than the fitted one.
        """
        return self.predict_hierarchy(X, drop_nonfinite=drop_nonfinite).labels

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one safetensors file (weights plus JSON settings), atomically."""
        metadata, tensors = self._file_contents()
        with atomic_path(Path(path)) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)

    def _file_contents(self) -> tuple[dict, dict]:
        """Return the safetensors header metadata and the tensors that :meth:`save` writes."""
        self._check_fitted()
        config = {
            "params": self.get_params(),
            "k_": self.k_,
            "tau_": self.tau_,
            "n_levels_": self.n_levels_,
            "min_cluster_size_": self.min_cluster_size_,
            "refine_": self.refine_,
            "best_epoch_": self.best_epoch_,
            "n_features_in_": self.n_features_in_,
            "validation_": self.validation_,
        }
        metadata = {
            "format": _FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            **{f"{library}_version": version for library, version in runtime_versions().items()},
            "config": json.dumps(config),
        }
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.model_.state_dict().items()}
        return metadata, tensors

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> "HiLander":
        """Read a model written by :meth:`save`. Loading runs no code from the file.

        The file's settings are checked against its tensors before any memory is allocated
        for the model, so a damaged or crafted header cannot request a huge network.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a hilander model, is damaged, or its format is newer
                than this version of hilander reads.
        """
        path = Path(path)
        metadata, tensors = read_model_file(path, device)
        if metadata.get("format") == "hilander-image-model":
            raise ValueError(
                f"{path} is an image model (encoder and LANDER); load it with ImageHiLander.load, "
                "or pass it to 'hilander cluster' with an image folder"
            )
        if metadata.get("format") != _FORMAT_NAME:
            raise ValueError(f"{path} is a safetensors file but not a hilander model (no '{_FORMAT_NAME}' header)")
        version_text = metadata.get("format_version", "")
        if not version_text.isdigit():
            raise ValueError(f"{path} has an invalid model format version {version_text!r}; the file is damaged")
        version = int(version_text)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path} uses model format {version} (written by hilander "
                f"{metadata.get('hilander_version', 'unknown')}), but this hilander {__version__} reads "
                f"format {FORMAT_VERSION} and older; upgrade hilander to load it"
            )
        try:
            estimator = cls._from_file_contents(metadata, tensors, device)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"{path} is a damaged hilander model ({type(error).__name__}: {str(error)[:300]}); "
                "train it again or restore it from a backup"
            ) from None
        logger.info("loaded %s, written by %s", path, estimator.versions_)
        return estimator

    @classmethod
    def _from_file_contents(cls, metadata: dict, tensors: dict, device: str) -> "HiLander":
        config = json.loads(metadata["config"])
        params = dict(config["params"])
        params["train_knn"] = tuple(tuple(pair) for pair in params["train_knn"])
        params["tau_grid"] = tuple(params["tau_grid"])
        params["train_link_drop"] = tuple(params["train_link_drop"])
        params["device"] = device
        # Files written before these settings existed load with today's defaults.
        params.setdefault("knn_method", "auto")
        params.setdefault("chunk_size", DEFAULT_CHUNK_SIZE)
        # Files written before the shared-neighbour input existed scored links without it.
        params.setdefault("shared_neighbors", False)
        estimator = cls(**params)
        estimator._validate_params()
        for name, tensor in tensors.items():
            if tensor.dtype != torch.float32:
                raise ValueError(f"tensor {name} has dtype {tensor.dtype}, not float32")
        in_dim = int(config["n_features_in_"]) * (2 if estimator.use_cluster_features else 1)
        # On the meta device the model has shapes but no memory. assign=True then takes the
        # file's tensors as its parameters, after load_state_dict has checked every shape.
        with torch.device("meta"):
            model = Lander(
                in_dim, estimator.hidden, estimator.num_layers, estimator.conv, estimator.heads,
                estimator.dropout, estimator.link_head, estimator.shared_neighbors,
            )
        model.load_state_dict(tensors, strict=True, assign=True)
        estimator.model_ = model.to(device).eval()
        estimator.k_ = int(config["k_"])
        estimator.tau_ = float(config["tau_"])
        estimator.n_levels_ = int(config["n_levels_"])
        # Models saved before min_cluster_size existed kept every cluster.
        estimator.min_cluster_size_ = int(config.get("min_cluster_size_", 0))
        # Models saved before the refinement existed did not refine.
        estimator.refine_ = config.get("refine_", False)
        if not isinstance(estimator.refine_, bool):
            raise ValueError(f"refine_={estimator.refine_!r} is not true or false")
        estimator.best_epoch_ = config.get("best_epoch_")
        estimator.n_features_in_ = int(config["n_features_in_"])
        estimator.validation_ = config["validation_"]
        estimator.versions_ = {
            key[: -len("_version")]: value
            for key, value in metadata.items()
            if key.endswith("_version") and key != "format_version"
        }
        if estimator.k_ < 2 or not 0.0 <= estimator.tau_ < 1.0 or estimator.n_levels_ < 1:
            raise ValueError(f"k_={estimator.k_}, tau_={estimator.tau_}, n_levels_={estimator.n_levels_} are out of range")
        return estimator
