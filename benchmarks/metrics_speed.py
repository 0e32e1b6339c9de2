"""Time the clustering metrics on millions of samples.

Usage (from the repository root)::

    python -m benchmarks.metrics_speed --samples 5000000 --classes 77000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hilander import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5_000_000)
    parser.add_argument("--classes", type=int, default=77_000, help="Number of true classes.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    truth = rng.integers(0, args.classes, size=args.samples)
    # A prediction that splits every class in two and moves 5% of samples elsewhere.
    predicted = truth * 2 + rng.integers(0, 2, size=args.samples)
    moved = rng.random(args.samples) < 0.05
    predicted[moved] = rng.integers(0, 2 * args.classes, size=int(moved.sum()))

    for name, function in (("pairwise", metrics.pairwise), ("bcubed", metrics.bcubed), ("nmi", metrics.nmi)):
        started = time.perf_counter()
        value = function(truth, predicted)
        print(f"{name:9s} {time.perf_counter() - started:6.2f} s  {value}")


if __name__ == "__main__":
    main()
