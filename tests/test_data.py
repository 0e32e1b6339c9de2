import pickle

import numpy as np
import pytest

from hilander.data import load_features, load_labels, save_labels


@pytest.fixture
def features():
    return np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)


def test_npy_round_trip(tmp_path, features):
    np.save(tmp_path / "x.npy", features)
    loaded, labels = load_features(tmp_path / "x.npy")
    assert np.array_equal(loaded, features)
    assert labels is None


def test_npz_with_labels(tmp_path, features):
    np.savez(tmp_path / "x.npz", features=features, labels=np.arange(12))
    loaded, labels = load_features(tmp_path / "x.npz")
    assert np.array_equal(loaded, features)
    assert labels.tolist() == list(range(12))


def test_bin_and_meta_layout(tmp_path, features):
    features.astype("<f4").tofile(tmp_path / "part.bin")
    (tmp_path / "part.meta").write_text("".join(f"{i % 3}\n" for i in range(12)))
    loaded, _ = load_features(tmp_path / "part.bin", dim=4)
    assert np.array_equal(loaded, features)
    assert load_labels(tmp_path / "part.meta").tolist() == [i % 3 for i in range(12)]


def test_bin_without_dim_rejected(tmp_path, features):
    features.tofile(tmp_path / "part.bin")
    with pytest.raises(ValueError, match="does not store its feature dimension"):
        load_features(tmp_path / "part.bin")


def test_bin_cut_short_rejected(tmp_path, features):
    (tmp_path / "part.bin").write_bytes(features.tobytes()[:-3])
    with pytest.raises(ValueError, match="not a whole number of float32 rows"):
        load_features(tmp_path / "part.bin", dim=4)


def test_meta_non_integer_line_rejected(tmp_path):
    (tmp_path / "bad.meta").write_text("1\n2\ncat\n")
    with pytest.raises(ValueError, match="line 3: 'cat' is not an integer"):
        load_labels(tmp_path / "bad.meta")


def test_pickle_needs_opt_in(tmp_path, features):
    path = tmp_path / "data.pkl"
    with open(path, "wb") as handle:
        pickle.dump((features, np.arange(12)), handle)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_features(path)
    loaded, labels = load_features(path, allow_pickle=True)
    assert np.array_equal(loaded, features)
    assert labels.shape == (12,)


def test_nan_rows_named(tmp_path, features):
    features[[2, 7]] = np.nan
    np.save(tmp_path / "x.npy", features)
    with pytest.raises(ValueError, match=r"2 rows \(rows 2, 7\)"):
        load_features(tmp_path / "x.npy")


def test_save_labels_refuses_existing(tmp_path):
    path = tmp_path / "out.txt"
    save_labels(np.array([1, 2, 3]), path)
    assert path.read_text() == "1\n2\n3\n"
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_labels(np.array([4]), path)
    save_labels(np.array([4]), path, overwrite=True)
    assert path.read_text() == "4\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
