"""Entry point of ``python -m benchmarks``: the quality benchmark, with the options of benchmarks.quality."""

from .quality import main

if __name__ == "__main__":
    main(prog="python -m benchmarks")
