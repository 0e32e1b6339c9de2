import numpy as np
import pytest

from benchmarks.synthetic import class_sizes, make_mixture, make_open_set_split


def test_class_sizes_sum_and_order():
    sizes = class_sizes(10_000, 100, zipf_exponent=1.0, min_size=5)
    assert sizes.sum() == 10_000
    assert sizes.min() >= 5
    assert np.all(np.diff(sizes) <= 0)
    # Zipf with exponent 1: the largest class is far larger than the smallest.
    assert sizes[0] >= 20 * sizes[-1]


def test_class_sizes_equal_at_exponent_zero():
    sizes = class_sizes(1000, 10, zipf_exponent=0.0, min_size=1)
    assert np.all(sizes == 100)


@pytest.mark.parametrize(
    "arguments",
    [(10, 0, 1.0, 1), (10, 5, 1.0, 0), (10, 5, -1.0, 1), (9, 5, 1.0, 2)],
)
def test_class_sizes_invalid_arguments(arguments):
    with pytest.raises(ValueError):
        class_sizes(*arguments)


def test_mixture_shapes_and_norms():
    features, labels = make_mixture(3000, 40, dim=24, seed=0)
    assert features.shape == (3000, 24)
    assert features.dtype == np.float32
    assert labels.shape == (3000,)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(np.unique(labels), np.arange(40))


def test_mixture_deterministic_by_seed():
    first = make_mixture(2000, 20, dim=16, seed=7)
    second = make_mixture(2000, 20, dim=16, seed=7)
    other = make_mixture(2000, 20, dim=16, seed=8)
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_mixture_spans_several_chunks():
    # 70,000 rows take two generation chunks. With one class, rows differ only by their noise,
    # so equal rows would mean that both chunks drew the same noise.
    features, labels = make_mixture(70_000, 1, dim=8, seed=1)
    assert features.shape == (70_000, 8)
    assert np.isfinite(features).all()
    assert np.all(labels == 0)
    assert not np.allclose(features[:1000], features[65536:66536])


def test_mixture_sizes_and_spreads_uneven():
    features, labels = make_mixture(5000, 30, dim=64, spread_range=(0.3, 2.0), seed=2)
    counts = np.bincount(labels)
    assert counts.max() >= 10 * counts.min()
    # Tight classes have rows close to their mean direction, loose classes do not.
    cohesion = []
    for label in range(30):
        rows = features[labels == label]
        mean = rows.mean(axis=0)
        cohesion.append(float(np.mean(rows @ (mean / np.linalg.norm(mean)))))
    assert max(cohesion) - min(cohesion) > 0.2


def test_mixture_centre_similarity_raises_overlap():
    independent, labels = make_mixture(2000, 10, dim=64, zipf_exponent=0.0, seed=3)
    shared, _ = make_mixture(2000, 10, dim=64, zipf_exponent=0.0, centre_similarity=0.8, seed=3)

    def mean_cross_similarity(features):
        means = np.stack([features[labels == label].mean(axis=0) for label in range(10)])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        similarities = means @ means.T
        return similarities[~np.eye(10, dtype=bool)].mean()

    assert mean_cross_similarity(independent) < 0.2
    assert mean_cross_similarity(shared) > 0.6


def test_mixture_shared_seed_aligns_mixtures():
    options = {"dim": 64, "zipf_exponent": 0.0, "centre_similarity": 0.5}
    train, train_labels = make_mixture(2000, 10, seed=3, **options)
    aligned, aligned_labels = make_mixture(2000, 10, seed=4, shared_seed=3, **options)
    rotated, rotated_labels = make_mixture(2000, 10, seed=4, **options)

    def class_means(features, labels):
        means = np.stack([features[labels == label].mean(axis=0) for label in range(10)])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    train_means = class_means(train, train_labels)
    # Centres of cosine 0.5 within a mixture give class means of cosine near 0.5 across aligned
    # mixtures, and near 0 across mixtures whose shared directions differ.
    assert (train_means @ class_means(aligned, aligned_labels).T).mean() > 0.35
    assert abs((train_means @ class_means(rotated, rotated_labels).T).mean()) < 0.15
    # Only the shared direction depends on shared_seed, so shared_seed=seed repeats the mixture of seed alone.
    same, _ = make_mixture(2000, 10, seed=3, shared_seed=3, **options)
    np.testing.assert_array_equal(same, train)


def test_mixture_invalid_arguments():
    with pytest.raises(ValueError, match="dim"):
        make_mixture(100, 5, dim=1)
    with pytest.raises(ValueError, match="spread_range"):
        make_mixture(100, 5, spread_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="centre_similarity"):
        make_mixture(100, 5, centre_similarity=1.0)


def test_open_set_split_disjoint_classes():
    split = make_open_set_split(1500, 30, dim=16, seed=0)
    train_classes = set(np.unique(split.train_labels).tolist())
    test_classes = set(np.unique(split.test_labels).tolist())
    assert not train_classes & test_classes
    assert len(train_classes) == 20
    assert len(test_classes) == 10
    assert split.train_features.shape[0] + split.test_features.shape[0] == 1500
    assert split.train_features.shape[0] == split.train_labels.shape[0]
    assert split.test_features.shape[1] == 16
    assert split.name == "synthetic-1500"


def test_open_set_split_default_classes():
    split = make_open_set_split(600, dim=8)
    n_classes = np.unique(split.train_labels).shape[0] + np.unique(split.test_labels).shape[0]
    assert n_classes == 12
