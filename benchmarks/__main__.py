"""Entry point of ``python -m benchmarks``.

``python -m benchmarks report ...`` regenerates the marked tables of BENCHMARKS.md
(``benchmarks.report``). ``python -m benchmarks quality ...``, and ``python -m benchmarks ...``
without a subcommand, run the quality benchmark with the options of ``benchmarks.quality``.
"""

from __future__ import annotations

import sys

from . import quality

EPILOG = (
    "Subcommands: 'python -m benchmarks report [--markdown BENCHMARKS.md]' regenerates the marked "
    "tables from the JSON results, and 'python -m benchmarks quality ...' is this command."
)


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to the report or the quality benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from . import report

        report.main(argv[1:], prog="python -m benchmarks report")
    elif argv[:1] == ["quality"]:
        quality.main(argv[1:], prog="python -m benchmarks quality")
    else:
        quality.main(argv, prog="python -m benchmarks", epilog=EPILOG)


if __name__ == "__main__":
    main()
