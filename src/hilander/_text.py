"""Decoding and parsing of the text formats: label lines and CSV tables.

Every parser names the file, line and column of the first bad value, because the files come from
other tools and the user has to find and fix the line.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

__all__ = ["LABEL_COLUMNS", "read_text", "parse_label_lines", "read_csv_features", "read_csv_labels"]

logger = logging.getLogger(__name__)

# Header names (compared in lower case) of a CSV column that contains labels, not a feature.
LABEL_COLUMNS = ("label", "labels", "class", "y")

_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_text(path: Path) -> str:
    """Decode a whole file as UTF-8, skipping a byte order mark.

    Raises:
        ValueError: for UTF-16 text or bytes that are not UTF-8; the message gives the line.
    """
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS):
        raise ValueError(
            f"{path} is UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8, "
            "for example with: iconv -f UTF-16 -t UTF-8"
        )
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line_number}: byte 0x{data[error.start]:02x} is not valid UTF-8; "
            "save the file as UTF-8 text (or check that it is a text file at all)"
        ) from None


def _parse_integer(text: str) -> int | None:
    """Return ``text`` as an int64-range integer, or None when it is not one."""
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def parse_label_lines(path: Path, text: str) -> np.ndarray:
    """Parse one integer label per line; blank lines are allowed only at the end.

    A blank line between labels would shift every later label by one row, so it is an error.

    Raises:
        ValueError: naming the line of the first bad value.
    """
    values = []
    first_blank = None
    for line_number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped:
            first_blank = first_blank or line_number
            continue
        if first_blank is not None:
            raise ValueError(
                f"{path}, line {first_blank} is empty but labels follow it. A label file contains one "
                "integer per line for every sample, so fill in or delete that line"
            )
        value = _parse_integer(stripped)
        if value is None:
            raise ValueError(
                f"{path}, line {line_number}: {stripped[:40]!r} is not an integer label (int64); "
                "a label file holds one integer per line"
            )
        values.append(value)
    return np.asarray(values, dtype=np.int64)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _is_header(fields: list[str]) -> bool:
    """Decide whether the first CSV line is a header.

    It is one when a field is empty or not a number, or when its fields are exactly the column
    numbers 0, 1, ..., D - 1, the header that ``pandas.DataFrame(X).to_csv(index=False)`` writes.
    A row of real features equal to 0, 1, 2, ... is too unlikely to matter for D >= 3.
    """
    stripped = [field.strip() for field in fields]
    if any(not field or not _is_number(field) for field in stripped):
        return True
    return len(stripped) >= 3 and stripped == [str(i) for i in range(len(stripped))]


def _first_data_line(lines: list[str]) -> int | None:
    return next((i for i, line in enumerate(lines) if line.strip()), None)


def _split_line(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def read_csv_features(path: Path, delimiter: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a CSV/TSV table of features, with an optional header and label column.

    Returns:
        ``(features, labels)``: a float32 (N, D) array, and the label column as an int64 array,
        a string array (class names), or None when the header names no label column.

    Raises:
        ValueError: for an empty table, rows of different lengths or a non-numeric feature,
            naming the line and column.
    """
    lines = read_text(path).split("\n")
    first = _first_data_line(lines)
    if first is None:
        raise ValueError(f"{path} contains no rows; write one sample per line")
    first_fields = _split_line(lines[first], delimiter)
    n_columns = len(first_fields)
    skip: set[int] = set()
    label_column = None
    body_start = first
    if _is_header(first_fields):
        body_start = first + 1
        names = [field.strip().lower() for field in first_fields]
        label_column = next((i for i, name in enumerate(names) if name in LABEL_COLUMNS), None)
        if label_column is not None:
            skip.add(label_column)
        if names[0] == "" and n_columns > 1:
            # pandas writes its row index as a first column with an empty name.
            skip.add(0)
            logger.info("%s: the first column has no name, so it is read as a row index and skipped", path)
        logger.info("%s: the first line is a header: %s", path, ", ".join(names[:8]))
    body = lines[body_start:]
    if _first_data_line(body) is None:
        raise ValueError(f"{path} contains a header but no data rows")
    feature_columns = [i for i in range(n_columns) if i not in skip]
    if not feature_columns:
        raise ValueError(f"{path} contains only a label column; add the feature columns")

    row_error = _check_rows(path, lines, body_start, delimiter, n_columns)
    if row_error is not None:
        raise ValueError(row_error)
    try:
        features = np.loadtxt(
            body, delimiter=delimiter, dtype=np.float32, ndmin=2, usecols=feature_columns,
            quotechar='"', comments=None,
        )
    except ValueError as parse_error:
        # Find the cell again in Python only on this error path, to name its line and column.
        cell_error = _find_bad_cell(path, lines, body_start, delimiter, feature_columns)
        raise ValueError(cell_error or f"{path} could not be read as a numeric table ({parse_error})") from None
    labels = None
    if label_column is not None:
        labels = _column_values(body, delimiter, label_column)
    return features, labels


def _check_rows(path, lines, body_start, delimiter, n_columns) -> str | None:
    """Return a message for the first row of the wrong length or blank line between rows."""
    first_blank = None
    for index in range(body_start, len(lines)):
        line = lines[index]
        if not line.strip():
            first_blank = first_blank or index + 1
            continue
        if first_blank is not None:
            return (
                f"{path}, line {first_blank} is empty but rows follow it; delete the empty line, "
                "or fill in the missing sample, so that rows stay aligned with their labels"
            )
        # Counting delimiters is fast; the csv module confirms a mismatch, which a quoted
        # field with a delimiter inside can cause.
        if line.count(delimiter) + 1 != n_columns:
            found = len(_split_line(line, delimiter))
            if found != n_columns:
                return (
                    f"{path}, line {index + 1}: {found} columns, but the first line has "
                    f"{n_columns}; every row needs the same number of columns"
                )
    return None


def _find_bad_cell(path, lines, body_start, delimiter, feature_columns) -> str | None:
    for index in range(body_start, len(lines)):
        if not lines[index].strip():
            continue
        fields = _split_line(lines[index], delimiter)
        for column in feature_columns:
            field = fields[column].strip()
            if not _is_number(field):
                return (
                    f"{path}, line {index + 1}, column {column + 1}: {field[:40]!r} is not a number; "
                    "every feature must be numeric (NaN and inf are rejected later, with an option "
                    "to drop those rows)"
                )
    return None


def _column_values(body: list[str], delimiter: str, column: int) -> np.ndarray:
    """Return one column as int64 when every value is an integer, else as strings."""
    values = [_split_line(line, delimiter)[column].strip() for line in body if line.strip()]
    integers = [_parse_integer(value) for value in values]
    if all(value is not None for value in integers):
        return np.asarray(integers, dtype=np.int64)
    return np.asarray(values)


def read_csv_labels(path: Path, delimiter: str) -> np.ndarray:
    """Read labels from a CSV file: one column, or the header column named like a label column.

    Returns:
        int64 labels, or a string array when a value is not an integer (class names).

    Raises:
        ValueError: for a table without a usable label column or with rows of the wrong length.
    """
    lines = read_text(path).split("\n")
    first = _first_data_line(lines)
    if first is None:
        return np.empty(0, dtype=np.int64)
    first_fields = _split_line(lines[first], delimiter)
    header = len(first_fields) > 1 or _parse_integer(first_fields[0].strip()) is None
    column = 0
    if header and len(first_fields) > 1:
        names = [field.strip().lower() for field in first_fields]
        column = next((i for i, name in enumerate(names) if name in LABEL_COLUMNS), None)
        if column is None:
            raise ValueError(
                f"{path} has {len(first_fields)} columns but none is named "
                f"{' / '.join(LABEL_COLUMNS)}; name the label column, or write one label per line"
            )
    body_start = first + 1 if header else first
    row_error = _check_rows(path, lines, body_start, delimiter, len(first_fields))
    if row_error is not None:
        raise ValueError(row_error)
    return _column_values(lines[body_start:], delimiter, column)
