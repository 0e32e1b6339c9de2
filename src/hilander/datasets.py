"""Loaders for the labelled embedding sets used by the demo, the benchmarks and the tests.

Each dataset folder contains ``emb_minilm_l6.npy`` (N x 384 float32 sentence embeddings),
``labels.npy`` (int64, -1 = out-of-scope), ``classes.json`` (class names by label id) and
``split.json`` (``meta_train_classes`` and ``test_classes`` as class names, disjoint).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "OpenSetSplit", "find_data_root", "load_open_set_split"]

DATASETS = ("clinc150", "banking77")

_HOW_TO_GET = (
    "The shared datasets are not found. Pass the folder that contains '{name}/' with --data-dir "
    "(data_dir= in Python) or set HILANDER_DATA. Each dataset folder needs emb_minilm_l6.npy, "
    "labels.npy, classes.json and split.json. CLINC150 comes from github.com/clinc/oos-eval and "
    "Banking77 from github.com/PolyAI-LDN/task-specific-datasets; the embeddings are "
    "sentence-transformers all-MiniLM-L6-v2 vectors of each sample's text, L2-normalised."
)


@dataclass
class OpenSetSplit:
    """Meta-train and test samples of one dataset, with disjoint classes.

    Attributes:
        train_features, train_labels: (N_train, D) float32 and (N_train,) int64.
        test_features, test_labels: (N_test, D) float32 and (N_test,) int64.
        name: dataset name.
    """

    name: str
    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray


def find_data_root(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Locate the folder that contains dataset ``name``.

    Looks in ``data_dir`` when given, else in ``$HILANDER_DATA``, ``./shared/data`` and
    ``../shared/data``, in that order.

    Raises:
        FileNotFoundError: with instructions on how to get the data.
    """
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        candidates = [Path(p) for p in (os.environ.get("HILANDER_DATA"),) if p]
        candidates += [Path("shared/data"), Path("../shared/data")]
    required = ("emb_minilm_l6.npy", "labels.npy", "classes.json", "split.json")
    for root in candidates:
        folder = root / name
        missing = [file for file in required if not (folder / file).is_file()]
        if not missing:
            return root
        if folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is missing {', '.join(missing)}. {_HOW_TO_GET.format(name=name)}"
            )
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{_HOW_TO_GET.format(name=name)} Searched: {searched}.")


def load_open_set_split(
    name: str, data_dir: str | os.PathLike | None = None, include_out_of_scope: bool = False
) -> OpenSetSplit:
    """Load dataset ``name`` and split it by the classes listed in its ``split.json``.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: folder that contains the dataset folder; see :func:`find_data_root`.
        include_out_of_scope: add the samples labelled -1 (no class) to the test set, as noise.

    Raises:
        ValueError: for an unknown dataset name.
        FileNotFoundError: if the data cannot be found.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    folder = find_data_root(name, data_dir) / name
    features = np.load(folder / "emb_minilm_l6.npy", allow_pickle=False).astype(np.float32)
    labels = np.load(folder / "labels.npy", allow_pickle=False).astype(np.int64)
    classes = json.loads((folder / "classes.json").read_text(encoding="utf-8"))
    split = json.loads((folder / "split.json").read_text(encoding="utf-8"))
    class_id = {class_name: index for index, class_name in enumerate(classes)}
    train_ids = np.array([class_id[c] for c in split["meta_train_classes"]], dtype=np.int64)
    test_ids = np.array([class_id[c] for c in split["test_classes"]], dtype=np.int64)
    train_mask = np.isin(labels, train_ids)
    test_mask = np.isin(labels, test_ids)
    if include_out_of_scope:
        test_mask |= labels < 0
    return OpenSetSplit(
        name=name,
        train_features=features[train_mask],
        train_labels=labels[train_mask],
        test_features=features[test_mask],
        test_labels=labels[test_mask],
    )
