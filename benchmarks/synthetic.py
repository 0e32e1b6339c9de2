"""Generated labelled embeddings for scale tests and for running the benchmarks without real data.

Each class is a Gaussian blob around a random unit centre, with Zipf-like class sizes and a
spread that differs per class. Every sample is then L2-normalised. Class centres drawn
independently in many dimensions are almost orthogonal, so ``centre_similarity`` adds a shared
component that pulls all centres closer together and makes the task harder.
"""

from __future__ import annotations

import numpy as np

from hilander.datasets import OpenSetSplit

__all__ = ["class_sizes", "make_mixture", "make_open_set_split"]

# Rows generated per step. The output depends only on the seed, because this never changes.
_CHUNK_ROWS = 65536


def class_sizes(n_samples: int, n_classes: int, zipf_exponent: float, min_size: int) -> np.ndarray:
    """Split ``n_samples`` into ``n_classes`` sizes proportional to 1 / rank ** zipf_exponent.

    Every class gets at least ``min_size`` samples, and the sizes sum to ``n_samples``. Sizes are
    in decreasing order (class 0 is the largest).

    Raises:
        ValueError: if n_classes < 1, min_size < 1, zipf_exponent < 0 or
            n_samples < n_classes * min_size.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    if zipf_exponent < 0:
        raise ValueError(f"zipf_exponent must be 0 or more, got {zipf_exponent}")
    if n_samples < n_classes * min_size:
        raise ValueError(
            f"n_samples={n_samples} is too small for {n_classes} classes of at least {min_size} "
            f"samples. Pass n_samples >= {n_classes * min_size}"
        )
    weights = 1.0 / np.arange(1, n_classes + 1, dtype=np.float64) ** zipf_exponent
    spare = n_samples - n_classes * min_size
    shares = spare * weights / weights.sum()
    sizes = min_size + np.floor(shares).astype(np.int64)
    # Hand the rounding remainder to the classes with the largest fractional parts.
    remainder = n_samples - int(sizes.sum())
    order = np.argsort(-(shares - np.floor(shares)), kind="stable")
    sizes[order[:remainder]] += 1
    return sizes


def make_mixture(
    n_samples: int,
    n_classes: int,
    dim: int = 64,
    zipf_exponent: float = 1.0,
    min_size: int = 5,
    spread_range: tuple[float, float] = (0.5, 1.5),
    centre_similarity: float = 0.0,
    seed: int = 0,
    shared_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate a shuffled mixture of ``n_classes`` Gaussian blobs, L2-normalised.

    Args:
        n_samples: total number of rows.
        n_classes: number of classes, labelled 0 to n_classes - 1 by decreasing size.
        dim: feature dimension, at least 2.
        zipf_exponent: class sizes fall off as 1 / rank ** zipf_exponent; 0 gives equal sizes.
        min_size: smallest class size.
        spread_range: each class's noise norm (relative to its unit centre) is drawn
            log-uniformly from this range. Before normalisation a sample at spread s has a cosine
            similarity of about 1 / sqrt(1 + s ** 2) to its centre.
        centre_similarity: expected cosine similarity between two class centres, in [0, 1).
        seed: seed of every random draw; equal arguments give equal output.
        shared_seed: seed of the direction that ``centre_similarity`` mixes into every centre;
            ``None`` draws it from ``seed``. Mixtures with equal ``shared_seed`` and different
            ``seed`` have different classes around the same shared direction, as the training
            and the new classes of one embedding model do. With different shared directions,
            a model fitted on one mixture meets a rotated space in the other.

    Returns:
        ``(features, labels)``: (n_samples, dim) float32 with unit rows, and (n_samples,) int64.
        Memory is the output plus one chunk of 65,536 rows, so 1,000,000 rows in 384
        dimensions take about 1.5 GB.

    Raises:
        ValueError: for invalid sizes, dimension, spreads or centre similarity.
    """
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    low, high = spread_range
    if not 0 < low <= high:
        raise ValueError(f"spread_range must satisfy 0 < low <= high, got {spread_range}")
    if not 0 <= centre_similarity < 1:
        raise ValueError(f"centre_similarity must be in [0, 1), got {centre_similarity}")
    sizes = class_sizes(n_samples, n_classes, zipf_exponent, min_size)

    rng = np.random.default_rng(seed)
    # Drawn from rng in every case, so that shared_seed changes only the shared direction.
    shared = _unit_rows(rng.standard_normal((1, dim)))
    if shared_seed is not None:
        shared = _unit_rows(np.random.default_rng(shared_seed).standard_normal((1, dim)))
    own = _unit_rows(rng.standard_normal((n_classes, dim)))
    # Mixing unit vectors as sqrt(c) * shared + sqrt(1 - c) * own gives centres of cosine about c,
    # because independent random directions are nearly orthogonal in many dimensions.
    centres = _unit_rows(np.sqrt(centre_similarity) * shared + np.sqrt(1 - centre_similarity) * own)
    centres = centres.astype(np.float32)
    spreads = np.exp(rng.uniform(np.log(low), np.log(high), size=n_classes)).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(n_classes, dtype=np.int64), sizes))

    features = np.empty((n_samples, dim), dtype=np.float32)
    # Per-coordinate noise of spread / sqrt(dim) gives a noise vector of norm close to spread.
    noise_scale = spreads / np.float32(np.sqrt(dim))
    chunk_seeds = np.random.SeedSequence(seed).spawn((n_samples + _CHUNK_ROWS - 1) // _CHUNK_ROWS)
    for chunk, start in enumerate(range(0, n_samples, _CHUNK_ROWS)):
        stop = min(start + _CHUNK_ROWS, n_samples)
        chunk_labels = labels[start:stop]
        noise = np.random.default_rng(chunk_seeds[chunk]).standard_normal((stop - start, dim), dtype=np.float32)
        block = centres[chunk_labels] + noise_scale[chunk_labels, None] * noise
        features[start:stop] = _unit_rows(block)
    return features, labels


def make_open_set_split(
    n_samples: int,
    n_classes: int | None = None,
    dim: int = 64,
    test_fraction: float = 1 / 3,
    seed: int = 0,
    **mixture_options,
) -> OpenSetSplit:
    """Generate a mixture and split it by class into meta-train and test sets.

    The classes are shuffled before the split, so both sides get large and small classes.

    Args:
        n_samples: total rows over both sides.
        n_classes: number of classes. ``None`` means one per 50 samples, at least 6.
        dim: feature dimension.
        test_fraction: share of the classes that go to the test side; each side gets at least
            one class.
        seed: seed of the mixture and of the class split.
        mixture_options: further keyword arguments for :func:`make_mixture`.

    Raises:
        ValueError: if there are fewer than 2 classes, or as :func:`make_mixture` does.
    """
    if n_classes is None:
        n_classes = max(6, n_samples // 50)
    if n_classes < 2:
        raise ValueError(f"an open-set split needs at least 2 classes, got n_classes={n_classes}")
    features, labels = make_mixture(n_samples, n_classes, dim=dim, seed=seed, **mixture_options)

    n_test = min(n_classes - 1, max(1, round(test_fraction * n_classes)))
    order = np.random.default_rng([seed, 1]).permutation(n_classes)
    test_mask = np.isin(labels, order[:n_test])
    return OpenSetSplit(
        name=f"synthetic-{n_samples}",
        train_features=features[~test_mask],
        train_labels=labels[~test_mask],
        test_features=features[test_mask],
        test_labels=labels[test_mask],
    )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(matrix.dtype).tiny)
