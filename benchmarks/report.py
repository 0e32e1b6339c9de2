"""Regenerate the results tables of a markdown page, such as BENCHMARKS.md, from the JSON files.

Each table to regenerate sits between two marker comments, each on a line of its own::

    <!-- results: benchmarks/results/quality_variants.json -->
    | dataset | method | ... |
    <!-- /results -->

The path is relative to the folder of the markdown file. Options may follow it, each written
``name=value`` with comma-separated values:

- ``table``: ``quality`` (the rows of ``benchmarks.quality`` or ``benchmarks.omniglot``),
  ``quality-runs`` (the same files, one line per seed), ``knn`` (``benchmarks.knn``), ``scaling`` (the runs of ``benchmarks.scaling``),
  ``scaling-levels`` (hilander's levels in those runs) or ``scaling-exact-check`` (its
  ``--exact-check`` runs). Without this option the table is chosen from the file's contents, in
  that order, so ``quality-runs``, ``scaling-levels`` and ``scaling-exact-check`` must be named.
- ``datasets``: keep the quality rows of these datasets, spelled as in the JSON file.
- ``methods``: keep the rows of these methods, spelled as the benchmark's ``--methods`` option
  takes them (``hilander``, ``kmeans``, ``infomap``, ... and ``exact``, ``ivf``, ... for knn).
- ``sizes``: keep the scaling runs with these numbers of samples N.

Rows keep the order of the JSON file. Markers inside fenced code blocks are ignored. Only the
lines between markers change. Every table is made before anything is written, and the file is
then replaced atomically, so an error leaves it untouched.

Usage (from the repository root)::

    python -m benchmarks report [--markdown BENCHMARKS.md] [--check]
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hilander._files import atomic_path

from .baselines import BASELINES
from .knn import knn_table
from .quality import markdown_table, runs_table
from .scaling import exact_check_table, levels_table, scaling_table

OPENING_MARKER = re.compile(r"<!--\s*results:(?P<spec>.*?)-->")
CLOSING_MARKER = re.compile(r"<!--\s*/results\s*-->")

# Method names of the quality benchmark's --methods option, mapped to the labels in its rows.
QUALITY_METHODS = {"hilander": "hilander", **{key: baseline.name for key, baseline in BASELINES.items()}}


class ReportError(ValueError):
    """A marker, markdown file or results file from which a table cannot be made."""


@dataclass
class Region:
    """One marked table of a markdown file."""

    line: int  # 1-based line number of the opening marker
    written_path: str  # the results path as the marker spells it
    results_path: Path  # that path resolved against the markdown file's folder
    options: dict[str, list[str]]
    start: int  # index of the first line after the opening marker
    end: int  # index of the closing marker's line
    changed: bool = False


# ---------------------------------------------------------------------------- tables


def _select(items: list[dict], option: str, options: dict, key: Callable[[dict], str], names: dict | None = None) -> list[dict]:
    """Keep the items whose ``key`` is listed in ``options[option]``, or all items without that option.

    ``names`` maps the values that the option accepts to the values that ``key`` returns. Raises
    ValueError on a value that is not in ``names`` or that matches no item.
    """
    requested = options.get(option)
    if requested is None:
        return items
    if names is not None:
        unknown = [value for value in requested if value not in names]
        if unknown:
            raise ValueError(f"unknown {option}: {', '.join(unknown)}. Expected one of: {', '.join(names)}")
        requested = [names[value] for value in requested]
    present = {key(item) for item in items}
    missing = [value for value in requested if value not in present]
    if missing:
        raise ValueError(
            f"{option}={','.join(missing)} matches no row. The file contains: {', '.join(sorted(present))}"
        )
    return [item for item in items if key(item) in requested]


def _quality_table(results: dict, options: dict) -> str:
    rows = _select(results["rows"], "datasets", options, lambda row: row["dataset"])
    rows = _select(rows, "methods", options, lambda row: row["method"], QUALITY_METHODS)
    return markdown_table(rows)


def _quality_runs_table(results: dict, options: dict) -> str:
    rows = _select(results["rows"], "datasets", options, lambda row: row["dataset"])
    rows = _select(rows, "methods", options, lambda row: row["method"], QUALITY_METHODS)
    return runs_table(rows)


def _knn_table(results: dict, options: dict) -> str:
    rows = _select(results["rows"], "methods", options, lambda row: row["method"])
    return knn_table(rows, results["k"])


def _scaling_table(results: dict, options: dict) -> str:
    runs = _select(results["runs"], "methods", options, lambda run: run["method"])
    runs = _select(runs, "sizes", options, lambda run: str(run["n"]))
    return scaling_table(runs)


def _levels_table(results: dict, options: dict) -> str:
    runs = _select(results["runs"], "sizes", options, lambda run: str(run["n"]))
    return levels_table(runs)


def _exact_check_table(results: dict, options: dict) -> str:
    return exact_check_table(results["exact_check"])


def _has_list(results: dict, key: str, *fields: str) -> bool:
    """Return whether ``results[key]`` is a non-empty list of objects that contain every field."""
    items = results.get(key)
    return (
        isinstance(items, list)
        and len(items) > 0
        and all(isinstance(item, dict) and all(field in item for field in fields) for item in items)
    )


class TableKind(NamedTuple):
    """A kind of table, with the data it needs, the marker options it takes and the function that makes it."""

    needs: str  # the data, described for error messages
    matches: Callable[[dict], bool]
    options: frozenset[str]
    make: Callable[[dict, dict], str]


TABLE_KINDS = {
    "quality": TableKind(
        "a non-empty 'rows' list whose rows contain 'dataset', 'method', 'metrics' and 'runs'",
        lambda results: _has_list(results, "rows", "dataset", "method", "metrics", "runs"),
        frozenset({"datasets", "methods"}),
        _quality_table,
    ),
    "quality-runs": TableKind(
        "a non-empty 'rows' list whose rows contain 'dataset', 'method', 'metrics' and 'runs'",
        lambda results: _has_list(results, "rows", "dataset", "method", "metrics", "runs"),
        frozenset({"datasets", "methods"}),
        _quality_runs_table,
    ),
    "knn": TableKind(
        "'k' and a non-empty 'rows' list whose rows contain 'label', 'recall' and 'same_class_share'",
        lambda results: "k" in results and _has_list(results, "rows", "label", "recall", "same_class_share"),
        frozenset({"methods"}),
        _knn_table,
    ),
    "scaling": TableKind(
        "a non-empty 'runs' list whose runs contain 'method', 'n' and 'result'",
        lambda results: _has_list(results, "runs", "method", "n", "result"),
        frozenset({"methods", "sizes"}),
        _scaling_table,
    ),
    "scaling-levels": TableKind(
        "a non-empty 'runs' list whose runs contain 'method', 'n' and 'result'",
        lambda results: _has_list(results, "runs", "method", "n", "result"),
        frozenset({"sizes"}),
        _levels_table,
    ),
    "scaling-exact-check": TableKind(
        "a non-empty 'exact_check' list whose runs contain 'knn_method', 'n' and 'result'",
        lambda results: _has_list(results, "exact_check", "knn_method", "n", "result"),
        frozenset(),
        _exact_check_table,
    ),
}
# Kinds tried in this order when a marker names none. The exact-check table is never chosen this way.
DETECTED_KINDS = ("quality", "knn", "scaling")
OPTIONS = frozenset({"table"}).union(*(kind.options for kind in TABLE_KINDS.values()))


def make_table(region: Region, markdown: Path) -> str:
    """Read the region's results file and return its markdown table, filtered by the marker's options."""
    location = f"{markdown}:{region.line}"
    results = _load_results(region, location)
    kind_name = _table_kind(region, results, location)
    kind = TABLE_KINDS[kind_name]

    misplaced = sorted(set(region.options) - kind.options - {"table"})
    if misplaced:
        raise ReportError(
            f"{location}: option {', '.join(misplaced)} does not apply to a {kind_name} table, "
            f"which takes: {', '.join(sorted(kind.options)) or 'no options'}"
        )
    try:
        return kind.make(results, region.options)
    except KeyError as error:
        raise ReportError(f"{location}: cannot make the {kind_name} table from {region.written_path}: missing key {error}") from None
    except (TypeError, ValueError) as error:
        raise ReportError(f"{location}: cannot make the {kind_name} table from {region.written_path}: {error}") from None


def _load_results(region: Region, location: str) -> dict:
    if not region.results_path.is_file():
        raise ReportError(
            f"{location}: results file not found: {region.written_path} (resolved to {region.results_path}). "
            "Run the benchmark that writes it, or fix the path in the marker"
        )
    try:
        results = json.loads(region.results_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{location}: invalid JSON in {region.written_path}: {error}") from None
    if not isinstance(results, dict):
        raise ReportError(f"{location}: {region.written_path} contains a JSON {type(results).__name__}, expected an object")
    return results


def _table_kind(region: Region, results: dict, location: str) -> str:
    """Return the kind named by the marker's ``table`` option, or else the first kind that the data matches."""
    kind_names = region.options.get("table")
    if kind_names is None:
        kind_name = next((name for name in DETECTED_KINDS if TABLE_KINDS[name].matches(results)), None)
        if kind_name is None:
            raise ReportError(
                f"{location}: unknown kind of results file: {region.written_path} matches none of "
                f"{', '.join(DETECTED_KINDS)}. Name the table with table=KIND "
                f"(one of {', '.join(TABLE_KINDS)}) or check that the file is a benchmark's output"
            )
    else:
        if len(kind_names) != 1 or kind_names[0] not in TABLE_KINDS:
            raise ReportError(
                f"{location}: unknown table kind {','.join(kind_names)!r}. Expected one of: {', '.join(TABLE_KINDS)}"
            )
        kind_name = kind_names[0]
        if not TABLE_KINDS[kind_name].matches(results):
            raise ReportError(
                f"{location}: {region.written_path} has no data for a {kind_name} table, "
                f"which needs {TABLE_KINDS[kind_name].needs}"
            )
    return kind_name


# ---------------------------------------------------------------------------- markers


def _parse_options(words: list[str], location: str) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for word in words:
        name, separator, value = word.partition("=")
        values = [item for item in value.split(",") if item]
        if not separator or not values:
            raise ReportError(
                f"{location}: invalid marker option {word!r}. Write name=value, for example datasets=clinc150,banking77"
            )
        if name not in OPTIONS:
            raise ReportError(f"{location}: unknown marker option {name!r}. Expected one of: {', '.join(sorted(OPTIONS))}")
        if name in options:
            raise ReportError(f"{location}: marker option {name!r} is given twice")
        options[name] = values
    return options


def find_regions(lines: list[str], markdown: Path) -> list[Region]:
    """Return the marked regions of a markdown file's lines.

    Raises ReportError on an unpaired marker, a marker without a path or an invalid option.
    """
    regions: list[Region] = []
    opening: tuple[int, str, list[str]] | None = None  # (line index, results path, option words)
    fence = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        location = f"{markdown}:{index + 1}"

        # Markers inside fenced code blocks are examples, not markers.
        if fence is None and stripped[:3] in ("```", "~~~"):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue

        opened = OPENING_MARKER.fullmatch(stripped)
        if opened:
            if opening is not None:
                raise ReportError(f"{location}: results marker opened again before the marker of line {opening[0] + 1} was closed")
            words = opened.group("spec").split()
            if not words:
                raise ReportError(f"{location}: results marker names no file. Write <!-- results: PATH -->")
            opening = (index, words[0], words[1:])
        elif CLOSING_MARKER.fullmatch(stripped):
            if opening is None:
                raise ReportError(f"{location}: closing marker <!-- /results --> without an opening results marker")
            start, written_path, option_words = opening
            regions.append(Region(
                line=start + 1,
                written_path=written_path,
                results_path=(markdown.parent / written_path).resolve(),
                options=_parse_options(option_words, f"{markdown}:{start + 1}"),
                start=start + 1,
                end=index,
            ))
            opening = None
    if opening is not None:
        raise ReportError(f"{markdown}:{opening[0] + 1}: results marker is never closed. Add <!-- /results --> after its table")
    return regions


def regenerate(text: str, markdown: Path, only: Iterable[str | Path] | None = None) -> tuple[str, list[Region]]:
    """Return ``text`` with every marked table remade, and the regions that were remade.

    ``only``, when given, limits the work to the markers that name one of these results files,
    and leaves the other regions as they are. ``markdown`` is the file's path, which resolves the
    markers' relative paths and locates errors.
    """
    lines = text.splitlines(keepends=True)
    regions = find_regions(lines, markdown)
    if only is not None:
        selected_paths = {Path(path).resolve() for path in only}
        regions = [region for region in regions if region.results_path in selected_paths]

    # Make every table before assembling the text, so that one bad marker changes nothing.
    bodies = []
    for region in regions:
        opening_line = lines[region.start - 1]
        newline = opening_line[len(opening_line.rstrip("\r\n")):] or "\n"
        table = make_table(region, markdown)
        body = newline + newline.join(table.splitlines()) + newline + newline
        region.changed = body != "".join(lines[region.start:region.end])
        bodies.append(body)

    pieces = []
    position = 0
    for region, body in zip(regions, bodies):
        pieces.extend(lines[position:region.start])
        pieces.append(body)
        position = region.end
    pieces.extend(lines[position:])
    return "".join(pieces), regions


def update_markdown(markdown: str | Path, only: Iterable[str | Path] | None = None) -> list[Region]:
    """Rewrite the marked tables of a markdown file in place and return the regions remade.

    ``only`` is passed to :func:`regenerate`. The file is written only if its text changes, and
    then atomically. On ReportError it is left untouched.
    """
    markdown = Path(markdown)
    text = _read_markdown(markdown)
    new_text, regions = regenerate(text, markdown, only)
    if new_text != text:
        with atomic_path(markdown) as temporary:
            temporary.write_bytes(new_text.encode("utf-8"))
    return regions


def _read_markdown(markdown: Path) -> str:
    try:
        return markdown.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ReportError(f"markdown file not found: {markdown}") from None
    except UnicodeDecodeError as error:
        raise ReportError(f"{markdown} is not UTF-8 text: {error}") from None


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Regenerate the marked tables with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m benchmarks.report",
        description=__doc__.splitlines()[0],
        epilog="Markers: <!-- results: PATH [table=KIND] [datasets=A,B] [methods=A,B] [sizes=N,M] --> ... "
        "<!-- /results -->. See the docstring of benchmarks/report.py.",
    )
    parser.add_argument(
        "--markdown", type=Path, default=Path("BENCHMARKS.md"),
        help="Markdown file whose marked tables are regenerated in place (default: BENCHMARKS.md).",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="Write nothing. Exit with status 1 if a marked table differs from what its results file gives.",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            _, regions = regenerate(_read_markdown(args.markdown), args.markdown)
        else:
            regions = update_markdown(args.markdown)
    except ReportError as error:
        unchanged = f"{args.markdown} was not changed.\n" if args.markdown.is_file() else ""
        parser.exit(1, f"{parser.prog}: error: {error}\n{unchanged}")

    changed_word = "differs" if args.check else "changed"
    for region in regions:
        state = changed_word if region.changed else "unchanged"
        print(f"{args.markdown}:{region.line}: {region.written_path}: {state}")
    stale = sum(region.changed for region in regions)
    summary_word = "differ" if args.check else "changed"
    print(f"{len(regions)} marked tables, {stale} {summary_word}")
    if args.check and stale:
        parser.exit(1)


if __name__ == "__main__":
    main()
