"""Reading and validating features and labels in the field's file formats.

Supported feature files:

* ``.npy``: one (N, D) float array.
* ``.npz``: arrays named ``features`` (or ``X`` / ``data``) and optionally ``labels`` (or ``y``);
  a file with a single array is read as the features.
* ``.bin``: learn-to-cluster layout, raw little-endian float32 rows without a header; the feature
  dimension must be given, since the file does not store it.
* ``.pkl`` / ``.pickle``: the official Hi-LANDER pickle of ``(features, labels)``. Unpickling can
  run arbitrary code, so it is only read when the caller passes ``allow_pickle=True``.

Supported label files: ``.meta`` / ``.txt`` (one integer per line, learn-to-cluster layout) and
``.npy``.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np

from ._files import atomic_path

__all__ = [
    "check_features",
    "check_labels",
    "l2_normalize",
    "load_features",
    "load_labels",
    "save_labels",
]

logger = logging.getLogger(__name__)

_FEATURE_KEYS = ("features", "X", "data")
_LABEL_KEYS = ("labels", "y")


def check_features(features, name: str = "X") -> np.ndarray:
    """Validate a feature matrix and return it as a C-contiguous float32 array.

    Raises:
        ValueError: if the array is not 2-D, is empty, has a non-numeric dtype, or contains NaN
            or infinite values (the message names the first bad rows).
    """
    array = np.asarray(features)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{name} has dtype {array.dtype}; pass a numeric (float) array")
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {array.shape}; "
            "reshape a single sample with x.reshape(1, -1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one sample and feature")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite)
        first_rows = ", ".join(str(i) for i in bad_rows[:10])
        more = f" and {bad_rows.shape[0] - 10} more" if bad_rows.shape[0] > 10 else ""
        plural = "s" if bad_rows.shape[0] > 1 else ""
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad_rows.shape[0]} row{plural} "
            f"(row{plural} {first_rows}{more}); "
            "remove or repair those rows before clustering"
        )
    return array


def check_labels(labels, n_samples: int, name: str = "y", allow_categorical: bool = False) -> np.ndarray:
    """Validate class labels and return them as int64.

    With ``allow_categorical``, labels of any other dtype (class names as strings, say) are
    encoded as integers in sorted order, as scikit-learn estimators accept them.

    Raises:
        ValueError: if the labels are not 1-D, their count differs from ``n_samples``, or they
            are not integers (and ``allow_categorical`` is false).
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {array.shape}")
    if array.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {array.shape[0]} labels but there are {n_samples} samples; "
            "pass exactly one label per feature row"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{name} contains non-integer values; pass integer class labels")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        if not allow_categorical:
            raise ValueError(f"{name} has dtype {array.dtype}; pass integer class labels")
        try:
            _, array = np.unique(array, return_inverse=True)
        except TypeError:
            raise ValueError(
                f"{name} mixes label types that cannot be sorted together; pass labels of one type"
            ) from None
    return array.astype(np.int64, copy=False)


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Scale every row to unit L2 norm; all-zero rows stay zero.

    Returns:
        New (n, d) float32 array.
    """
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def load_features(
    path: str | os.PathLike,
    dim: int | None = None,
    allow_pickle: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read features, and labels where the file stores them, from ``path``.

    Args:
        path: a ``.npy``, ``.npz``, ``.bin`` or (with ``allow_pickle``) ``.pkl`` file.
        dim: feature dimension of a ``.bin`` file; ignored for other formats.
        allow_pickle: allow reading a pickle, which can execute code stored in the file.
            Only set it for files you trust.

    Returns:
        ``(features, labels)``: validated (N, D) float32 features and (N,) int64 labels, or
        ``None`` when the file contains no labels.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown suffix, a malformed file, or a pickle without ``allow_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    suffix = path.suffix.lower()
    labels = None
    if suffix == ".npy":
        try:
            features = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path} could not be read as a numeric .npy array ({error}); save it with a float dtype") from None
    elif suffix == ".npz":
        features, labels = _read_npz(path)
    elif suffix == ".bin":
        features = _read_bin(path, dim)
    elif suffix in (".pkl", ".pickle"):
        features, labels = _read_pickle(path, allow_pickle)
    else:
        raise ValueError(
            f"unsupported feature file suffix {suffix!r} for {path}; use .npy, .npz, .bin or .pkl"
        )
    features = check_features(features, name=f"features in {path}")
    if labels is not None:
        labels = check_labels(labels, features.shape[0], name=f"labels in {path}")
    logger.info("read %d x %d features from %s", features.shape[0], features.shape[1], path)
    return features, labels


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        feature_key = next((key for key in _FEATURE_KEYS if key in names), None)
        if feature_key is None and len(names) == 1:
            feature_key = names[0]
        if feature_key is None:
            raise ValueError(
                f"{path} contains arrays {names} but none is named {' / '.join(_FEATURE_KEYS)}; "
                "save the features as 'features' (and labels as 'labels')"
            )
        label_key = next((key for key in _LABEL_KEYS if key in names), None)
        features = archive[feature_key]
        labels = archive[label_key] if label_key is not None else None
    return features, labels


def _read_bin(path: Path, dim: int | None) -> np.ndarray:
    if dim is None or dim <= 0:
        raise ValueError(
            f"{path} is a raw float32 .bin file, which does not store its feature dimension; "
            "pass it (for example --dim 256 on the command line, dim=256 in Python)"
        )
    size = path.stat().st_size
    row_bytes = 4 * dim
    if size == 0 or size % row_bytes != 0:
        raise ValueError(
            f"{path} has {size} bytes, which is not a whole number of float32 rows of dimension {dim} "
            f"({row_bytes} bytes each); check --dim or whether the file was cut short"
        )
    return np.fromfile(path, dtype="<f4").reshape(-1, dim)


def _read_pickle(path: Path, allow_pickle: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if not allow_pickle:
        raise ValueError(
            f"{path} is a pickle, and loading a pickle can run code stored in it; if you trust "
            "the file, pass allow_pickle=True (--allow-pickle on the command line), or convert it "
            "to .npz"
        )
    with open(path, "rb") as handle:
        content = pickle.load(handle)  # noqa: S301 - the caller opted in explicitly.
    if isinstance(content, (tuple, list)) and len(content) == 2:
        return np.asarray(content[0]), np.asarray(content[1])
    raise ValueError(
        f"{path} contains a {type(content).__name__}, not the (features, labels) pair of the "
        "Hi-LANDER format"
    )


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Read integer labels from a ``.meta`` / ``.txt`` file (one per line) or a ``.npy`` file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if a line is not an integer (the message gives the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.suffix.lower() == ".npy":
        labels = np.load(path, allow_pickle=False)
        return check_labels(labels, labels.shape[0] if labels.ndim else -1, name=f"labels in {path}")
    values = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                values.append(int(text))
            except ValueError:
                raise ValueError(
                    f"{path}, line {line_number}: {text[:40]!r} is not an integer label; "
                    "a label file holds one integer per line"
                ) from None
    return np.asarray(values, dtype=np.int64)


def save_labels(labels: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write one integer label per line (``.npy`` for a NumPy array), atomically.

    The labels go to a temporary file in the destination folder that is renamed over ``path``,
    so an interrupted write leaves either the previous file or the complete new one.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            if path.suffix.lower() == ".npy":
                np.save(handle, np.asarray(labels, dtype=np.int64), allow_pickle=False)
            else:
                handle.write("".join(f"{int(v)}\n" for v in labels).encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
