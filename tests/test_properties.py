"""Property-based tests: random shapes, duplicates, NaN placement and tiny inputs.

Every call either returns a result with the documented properties or raises a ValueError with
one of the documented messages. Any other exception fails the test.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hilander import HiLander
from hilander.data import check_features, load_features, load_labels
from hilander.graph import knn_graph
from hilander.inference import decode_level

from conftest import blobs



def _settings(max_examples: int) -> settings:
    # tmp_path and the module-scoped model are the same for every example, which is intended.
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )

DIM = 8

FEATURE_ERRORS = re.compile(
    r"has dtype|must be a 2-D array|is empty|contains NaN or infinite values|not a rectangular array"
)


def _dtypes():
    return st.sampled_from(
        [np.float16, np.float32, np.float64, np.int8, np.int64, np.bool_, np.complex64, np.str_]
    )


@given(
    hnp.arrays(
        dtype=_dtypes(),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    )
)
@_settings(200)
def test_check_features_returns_or_documented_error(array):
    try:
        checked = check_features(array)
    except ValueError as error:
        assert FEATURE_ERRORS.search(str(error)), str(error)
        return
    assert checked.dtype == np.float32
    assert checked.shape == array.shape
    assert checked.ndim == 2
    assert np.isfinite(checked).all()


@pytest.fixture(scope="module")
def fitted():
    features, labels = blobs(num_classes=10, per_class=8, dim=DIM, seed=40)
    return HiLander(hidden=16, epochs=1, eval_every=1, batch_size=64, tau_grid=(0.5,)).fit(features, labels)


@st.composite
def messy_features(draw):
    """Draw (features, nonfinite rows, zero rows): duplicated prototypes with NaN and zero rows."""
    n = draw(st.integers(1, 30))
    num_prototypes = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(num_prototypes, DIM)).astype(np.float32)
    features = prototypes[rng.integers(0, num_prototypes, size=n)]
    if draw(st.booleans()):
        features = features + draw(st.sampled_from([0.0, 1e-6, 0.3])) * rng.normal(size=features.shape).astype(np.float32)
    nonfinite = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    zero = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & ~nonfinite
    features = features.astype(np.float32)
    features[zero] = 0.0
    for row in np.flatnonzero(nonfinite):
        features[row, draw(st.integers(0, DIM - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return features, nonfinite, zero


@given(messy_features(), st.booleans())
@_settings(60)
def test_predict_on_messy_input(fitted, drawn, drop_nonfinite):
    features, nonfinite, zero = drawn
    try:
        predicted = fitted.predict(features, drop_nonfinite=drop_nonfinite)
    except ValueError as error:
        message = str(error)
        if not drop_nonfinite:
            first_bad = int(np.flatnonzero(nonfinite)[0])
            assert re.search(rf"\(counted from 0: (rows?) {first_bad}\b", message), message
        else:
            assert nonfinite.all()
            assert "every row of X" in message
        return
    assert drop_nonfinite or not nonfinite.any()
    assert predicted.shape == (features.shape[0],)
    assert predicted.dtype == np.int64
    assert np.array_equal(np.flatnonzero(predicted == -1), np.flatnonzero(nonfinite))
    clustered_ids = set(predicted[~nonfinite].tolist())
    assert clustered_ids == set(range(len(clustered_ids)))
    zero_ids = predicted[zero]
    assert len(set(zero_ids.tolist())) == zero_ids.shape[0]
    assert not set(zero_ids.tolist()) & set(predicted[~nonfinite & ~zero].tolist())
    assert np.array_equal(fitted.predict(features, drop_nonfinite=drop_nonfinite), predicted)


@st.composite
def tiny_training_sets(draw):
    num_classes = draw(st.integers(1, 6))
    n = draw(st.integers(max(2, num_classes), 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    labels = rng.permutation(np.arange(n) % num_classes)
    centres = rng.normal(size=(num_classes, 4)).astype(np.float32)
    features = centres[labels]
    if draw(st.booleans()):
        features = features + 0.1 * rng.normal(size=features.shape).astype(np.float32)
    return features.astype(np.float32), labels


@given(tiny_training_sets(), st.sampled_from([0.0, 0.2, 0.9]))
@_settings(30)
def test_fit_on_tiny_input(training_set, validation_fraction):
    features, labels = training_set
    model = HiLander(
        hidden=8, epochs=1, eval_every=1, batch_size=64, tau_grid=(0.5,),
        validation_fraction=validation_fraction,
    )
    if np.unique(labels).shape[0] < 2:
        with pytest.raises(ValueError, match="at least 2 classes"):
            model.fit(features, labels)
        return
    model.fit(features, labels)
    assert 2 <= model.k_ <= features.shape[0]
    predicted = model.predict(features)
    assert predicted.shape == labels.shape
    assert predicted.min() == 0


@given(st.lists(st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", " ", "x", "1.5", "+3", "\t7 "])), max_size=12))
@_settings(150)
def test_label_lines_parse_or_name_line(tmp_path, lines):
    path = tmp_path / "labels.meta"
    path.write_text("\n".join(lines) + "\n")
    try:
        labels = load_labels(path)
    except ValueError as error:
        assert re.search(r", line \d+", str(error)), str(error)
        return
    expected = [int(line) for line in lines if line.strip()]
    assert labels.tolist() == expected
    assert all(-(2**63) <= value < 2**63 for value in expected)


@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
               elements=st.floats(-1e6, 1e6, width=32)),
    st.booleans(),
)
@_settings(100)
def test_csv_round_trip(tmp_path, features, header):
    lines = [",".join(repr(float(v)) for v in row) for row in features]
    if header:
        lines.insert(0, ",".join(f"feature_{i}" for i in range(features.shape[1])))
    path = tmp_path / "x.csv"
    path.write_text("\n".join(lines) + "\n")
    first_row_is_column_numbers = features.shape[1] >= 3 and np.array_equal(features[0], np.arange(features.shape[1]))
    if not header and first_row_is_column_numbers:
        # Documented rule: a first line of exactly 0, 1, ..., D - 1 is read as a pandas header.
        expected = features[1:]
        if expected.shape[0] == 0:
            with pytest.raises(ValueError, match="contains a header but no data rows"):
                load_features(path)
            return
    else:
        expected = features
    loaded, labels = load_features(path)
    assert labels is None
    assert np.array_equal(loaded, expected)


@given(st.integers(0, 200), st.integers(-1, 12))
@_settings(100)
def test_bin_size_checked(tmp_path, size, dim):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(size))
    dim_argument = None if dim == -1 else dim
    try:
        features, _ = load_features(path, dim=dim_argument)
    except ValueError as error:
        assert "does not store its feature dimension" in str(error) or "not a whole number of float32 rows" in str(error)
        assert dim_argument is None or dim_argument <= 0 or size == 0 or size % (4 * dim_argument) != 0
        return
    assert features.shape == (size // (4 * dim), dim)


@given(st.integers(2, 25), st.integers(1, 4), st.integers(0, 2**16), st.sampled_from([0.0, 0.5]))
@_settings(100)
def test_duplicate_ties_decode_to_forest(n, num_distinct, seed, tau):
    rng = np.random.default_rng(seed)
    distinct = rng.normal(size=(num_distinct, 3)).astype(np.float32)
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    features = distinct[rng.integers(0, num_distinct, size=n)]
    k = int(rng.integers(2, n + 1))
    neighbors, similarities = knn_graph(features, k)
    assert np.array_equal(neighbors[:, 0], np.arange(n))
    for row in neighbors:
        assert np.unique(row).shape[0] == k
    # Ties everywhere: equal link probabilities, and densities from only three values.
    prob_same = np.full((n, k - 1), 0.9)
    density = rng.integers(0, 3, size=n).astype(np.float32)
    parent, cluster = decode_level(neighbors, prob_same, density, tau)
    for node in range(n):
        steps, current = 0, node
        while parent[current] >= 0:
            current = parent[current]
            steps += 1
            assert steps <= n, "parent pointers form a cycle"
        assert cluster[node] == cluster[current]
