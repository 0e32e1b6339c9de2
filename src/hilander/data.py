"""Reading and validating features and labels in the field's file formats.

Supported feature files:

* ``.npy``: one (N, D) float array.
* ``.npz``: arrays named ``features`` (or ``X`` / ``data``) and optionally ``labels`` (or ``y``);
  a file with a single array is read as the features.
* ``.bin``: learn-to-cluster layout, raw little-endian float32 rows without a header; the feature
  dimension must be given, since the file does not store it.
* ``.csv`` / ``.tsv``: one sample per line, every column a feature. A first line with any
  non-numeric field is a header; a header column named ``label``, ``labels``, ``class`` or ``y``
  contains the labels instead of a feature.
* ``.pkl`` / ``.pickle``: the official Hi-LANDER pickle of ``(features, labels)``. Unpickling can
  run arbitrary code, so it is only read when the caller passes ``allow_pickle=True``.

Supported label files: ``.meta`` / ``.txt`` (one integer per line, learn-to-cluster layout),
``.csv`` (one column, with or without a header, or a header column named as above) and ``.npy``.
Text files must be UTF-8 (ASCII included); a UTF-8 byte order mark is ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._files import atomic_path
from ._text import parse_label_lines, read_csv_features, read_csv_labels, read_text

__all__ = [
    "check_features",
    "check_labels",
    "l2_normalize",
    "load_features",
    "load_labels",
    "metadata_path",
    "save_labels",
    "screen_rows",
]

logger = logging.getLogger(__name__)

_FEATURE_KEYS = ("features", "X", "data")
_LABEL_KEYS = ("labels", "y")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def _row_list(rows: np.ndarray) -> str:
    """Format row indices as 'row 4' or 'rows 2, 7 and 30 more', listing at most 10."""
    listed = ", ".join(str(i) for i in rows[:10])
    more = f" and {rows.shape[0] - 10} more" if rows.shape[0] > 10 else ""
    return f"row{'s' if rows.shape[0] > 1 else ''} {listed}{more}"


def check_features(features, name: str = "X", allow_nonfinite: bool = False) -> np.ndarray:
    """Validate a feature matrix and return it as a C-contiguous float32 array.

    Args:
        features: array-like of shape (n_samples, n_features), integer or float.
        name: name of the value in error messages.
        allow_nonfinite: return rows with NaN or infinite values instead of raising, for a
            caller that drops them with :func:`screen_rows`.

    Raises:
        ValueError: if the array is ragged, not 2-D, empty, has a non-numeric dtype, or (unless
            ``allow_nonfinite``) contains NaN or infinite values; the last message names the
            first bad rows. Finite values beyond the float32 range count as infinite.
    """
    try:
        array = np.asarray(features)
    except ValueError:
        raise ValueError(
            f"{name} is not a rectangular array (its rows have different lengths); pass an "
            "(n_samples, n_features) array with the same number of features in every row"
        ) from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{name} has dtype {array.dtype}; pass a numeric (float) array")
    if array.ndim != 2:
        hint = (
            "reshape a single sample with x.reshape(1, -1), or a single feature with x.reshape(-1, 1)"
            if array.ndim < 2
            else "flatten each sample first, for example X.reshape(len(X), -1)"
        )
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {array.shape}; {hint}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one sample and feature")
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(array, dtype=np.float32)
    if not allow_nonfinite:
        bad_rows = np.flatnonzero(~np.isfinite(converted).all(axis=1))
        if bad_rows.shape[0] > 0:
            raise ValueError(_nonfinite_message(name, bad_rows, array))
    return converted


def _nonfinite_message(name: str, bad_rows: np.ndarray, original: np.ndarray) -> str:
    count = bad_rows.shape[0]
    message = (
        f"{name} contains NaN or infinite values in {count} row{'s' if count > 1 else ''} "
        f"(counted from 0: {_row_list(bad_rows)})"
    )
    if np.isfinite(original[bad_rows[:10]]).all(axis=1).any():
        message += ", some of them finite values beyond the float32 range (about 3.4e38)"
    return (
        message + "; remove or repair those rows, or pass drop_nonfinite=True "
        "(--drop-nonfinite on the command line) to leave them out"
    )


def screen_rows(features: np.ndarray, name: str = "X", drop_nonfinite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Find the rows of a float32 feature matrix that clustering can use.

    Rows with NaN or infinite values are dropped when ``drop_nonfinite`` is set. All-zero rows are
    always set aside, because cosine similarity is undefined for them and a zero row would be
    linked to arbitrary neighbours. Both cases are logged as warnings with the first row numbers.

    Returns:
        ``(nonfinite, zero)``: (n_samples,) bool masks of the dropped and the all-zero rows.

    Raises:
        ValueError: if a row is not finite and ``drop_nonfinite`` is false, or if every row is.
    """
    nonfinite = ~np.isfinite(features).all(axis=1)
    bad_rows = np.flatnonzero(nonfinite)
    if bad_rows.shape[0] > 0:
        if not drop_nonfinite:
            raise ValueError(_nonfinite_message(name, bad_rows, features))
        if bad_rows.shape[0] == features.shape[0]:
            raise ValueError(
                f"every row of {name} ({features.shape[0]}) contains NaN or infinite values, so "
                "none is left to cluster; check the step that produced the features"
            )
        logger.warning(
            "dropped %d of %d rows of %s with NaN or infinite values (%s)",
            bad_rows.shape[0], features.shape[0], name, _row_list(bad_rows),
        )
    zero = ~nonfinite & ~np.any(features != 0, axis=1)
    zero_rows = np.flatnonzero(zero)
    if zero_rows.shape[0] > 0:
        logger.warning(
            "%d of %d rows of %s are all zeros (%s); cosine similarity is undefined for them, "
            "so they are not linked to any other row",
            zero_rows.shape[0], features.shape[0], name, _row_list(zero_rows),
        )
    return nonfinite, zero


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
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < 2.0**63)
        if not integral.all():
            first = int(np.flatnonzero(~integral)[0])
            raise ValueError(
                f"{name} contains non-integer values (first at index {first}: {array[first]!r}); "
                "pass integer class labels"
            )
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
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(features, axis=1, keepdims=True).astype(np.float64)
    # Squares in float32 overflow above about 1.8e19 and flush to zero below about 4e-23, so
    # those rows are measured again in float64. Other rows keep their float32 norm, and dividing
    # in float64 then rounding gives the same float32 result as dividing in float32.
    redo = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if redo.any():
        norms[redo] = np.linalg.norm(features[redo].astype(np.float64), axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-300)).astype(np.float32)


def load_features(
    path: str | os.PathLike,
    dim: int | None = None,
    allow_pickle: bool = False,
    allow_nonfinite: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read features, and labels where the file stores them, from ``path``.

    Args:
        path: a ``.npy``, ``.npz``, ``.bin``, ``.csv``, ``.tsv`` or (with ``allow_pickle``)
            ``.pkl`` file.
        dim: feature dimension of a ``.bin`` file; ignored for other formats.
        allow_pickle: allow reading a pickle, which can execute code stored in the file.
            Only set it for files you trust.
        allow_nonfinite: return rows with NaN or infinite values instead of raising, for a
            caller that drops them (``drop_nonfinite`` of :class:`~hilander.HiLander`).

    Returns:
        ``(features, labels)``: validated (N, D) float32 features and (N,) int64 labels, or
        ``None`` when the file contains no labels. Class names are encoded as integers in
        sorted order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown suffix, a malformed or truncated file, text that is not
            UTF-8, or a pickle without ``allow_pickle``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    suffix = path.suffix.lower()
    labels = None
    if suffix == ".npy":
        features = _read_npy(path)
    elif suffix == ".npz":
        features, labels = _read_npz(path)
    elif suffix == ".bin":
        features = _read_bin(path, dim)
    elif suffix in _CSV_DELIMITERS:
        features, labels = read_csv_features(path, _CSV_DELIMITERS[suffix])
    elif suffix in (".pkl", ".pickle"):
        features, labels = _read_pickle(path, allow_pickle)
    else:
        raise ValueError(
            f"unsupported feature file suffix {suffix!r} for {path}; use .npy, .npz, .bin, .csv, "
            ".tsv or .pkl"
        )
    features = check_features(features, name=f"features in {path}", allow_nonfinite=allow_nonfinite)
    if labels is not None:
        labels = check_labels(labels, features.shape[0], name=f"labels in {path}", allow_categorical=True)
    logger.info("read %d x %d features from %s", features.shape[0], features.shape[1], path)
    return features, labels


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        # Object arrays need pickle, and truncated files fail to reshape or to read a header.
        raise ValueError(
            f"{path} could not be read as a numeric .npy array ({error}); save it with "
            "numpy.save and a float dtype, or check whether the file was cut short"
        ) from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    archive_errors = (zipfile.BadZipFile, zlib.error, EOFError, ValueError)
    try:
        archive = np.load(path, allow_pickle=False)
    except archive_errors as error:
        raise ValueError(f"{path} is not a readable .npz archive ({error}); check whether the file was cut short") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} contains a single .npy array, not an .npz archive; rename it to .npy")
    with archive:
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
        try:
            features = archive[feature_key]
            labels = archive[label_key] if label_key is not None else None
        except archive_errors as error:
            # Object arrays need pickle, and a damaged member fails to decompress or reshape.
            raise ValueError(f"{path} could not be read as numeric .npz arrays ({error})") from None
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
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle)  # noqa: S301 - the caller opted in explicitly.
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path} could not be unpickled ({error}); check whether the file was cut short") from None
    if isinstance(content, (tuple, list)) and len(content) == 2:
        return np.asarray(content[0]), np.asarray(content[1])
    raise ValueError(
        f"{path} contains a {type(content).__name__}, not the (features, labels) pair of the "
        "Hi-LANDER format"
    )


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Read labels from a ``.meta`` / ``.txt`` file (one integer per line), a ``.csv`` or a ``.npy``.

    Blank lines may end a text file but not come between labels, since they would shift every
    later label by one row. A ``.csv`` may hold class names, which are encoded as integers in
    sorted order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if a line is not an int64 integer or is a blank line between labels (the
            message gives the line number), or the file is not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    suffix = path.suffix.lower()
    name = f"labels in {path}"
    if suffix == ".npy":
        labels = _read_npy(path)
        return check_labels(labels, labels.shape[0] if labels.ndim else -1, name=name)
    if suffix in _CSV_DELIMITERS:
        labels = read_csv_labels(path, _CSV_DELIMITERS[suffix])
        return check_labels(labels, labels.shape[0], name=name, allow_categorical=True)
    return parse_label_lines(path, read_text(path))


def metadata_path(path: str | os.PathLike) -> Path:
    """Return the path of the JSON metadata file written beside the output ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_labels(
    labels: np.ndarray,
    path: str | os.PathLike,
    overwrite: bool = False,
    metadata: dict | None = None,
    row_names: list[str] | None = None,
) -> None:
    """Write one integer label per line (``.npy`` for a NumPy array), atomically.

    With ``row_names`` and a ``.csv`` or ``.tsv`` path, each line is the row's name and its label,
    under a ``path,cluster_id`` header (tab-separated for ``.tsv``).

    The labels go to a temporary file in the destination folder that is renamed over ``path``,
    so an interrupted write leaves either the previous file or the complete new one.
    With ``metadata``, a JSON file ``<path>.json`` is written beside it: the metadata plus the
    SHA-256 of the labels file. Both files are complete before either is renamed into place.

    Raises:
        FileExistsError: if ``path`` (or its metadata file) exists and ``overwrite`` is false.
    """
    path = Path(path)
    targets = [path] + ([metadata_path(path)] if metadata is not None else [])
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(labels, dtype=np.int64), allow_pickle=False)
        content = buffer.getvalue()
    elif row_names is not None and path.suffix.lower() in _CSV_DELIMITERS:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=_CSV_DELIMITERS[path.suffix.lower()], lineterminator="\n")
        writer.writerow(["path", "cluster_id"])
        writer.writerows(zip(row_names, (int(v) for v in labels)))
        content = buffer.getvalue().encode("utf-8")
    else:
        content = "".join(f"{int(v)}\n" for v in labels).encode("ascii")
    with atomic_path(path) as temporary:
        _write_synced(temporary, content)
        if metadata is not None:
            record = {**metadata, "labels_sha256": hashlib.sha256(content).hexdigest()}
            # NOTE: the two renames are not one atomic step. A kill between them leaves the new
            # metadata beside the old labels, which labels_sha256 then does not match.
            with atomic_path(metadata_path(path)) as metadata_temporary:
                text = json.dumps(record, indent=2, sort_keys=True) + "\n"
                _write_synced(metadata_temporary, text.encode("utf-8"))


def _write_synced(path: Path, content: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
