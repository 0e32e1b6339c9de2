import pickle

import numpy as np
import pytest

from hilander.data import (
    check_features,
    check_labels,
    l2_normalize,
    load_features,
    load_labels,
    metadata_path,
    save_labels,
    screen_rows,
)


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
    with pytest.raises(ValueError, match=r"2 rows \(counted from 0: rows 2, 7\)"):
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


# ---------------------------------------------------------------- feature validation


def test_ragged_rows_rejected():
    with pytest.raises(ValueError, match="not a rectangular array"):
        check_features([[1.0, 2.0], [3.0]])


@pytest.mark.parametrize(
    "value, message",
    [
        (np.array(["a", "b"]).reshape(1, 2), "has dtype <U1; pass a numeric"),
        (np.ones((3, 2), dtype=bool), "has dtype bool"),
        (np.ones((3, 2), dtype=complex), "has dtype complex128"),
        (np.ones((3, 2), dtype=object), "has dtype object"),
        (np.ones(4), r"got shape \(4,\); reshape a single sample"),
        (np.ones((2, 3, 4)), r"got shape \(2, 3, 4\); flatten each sample"),
        (np.ones((0, 4)), "is empty"),
        (np.ones((4, 0)), "is empty"),
    ],
)
def test_bad_feature_arrays_rejected(value, message):
    with pytest.raises(ValueError, match=message):
        check_features(value)


def test_integer_and_float64_features_converted():
    assert check_features(np.arange(6).reshape(3, 2)).dtype == np.float32
    assert check_features(np.ones((3, 2), dtype=np.float64)).flags["C_CONTIGUOUS"]


def test_float32_overflow_named():
    features = np.ones((5, 3))
    features[3, 1] = 1e300
    with pytest.raises(ValueError, match=r"in 1 row \(counted from 0: row 3\), some of them finite values beyond the float32 range"):
        check_features(features)


def test_nonfinite_message_names_option():
    features = np.ones((30, 2))
    features[5:25, 0] = np.inf
    with pytest.raises(ValueError, match=r"rows 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 and 10 more\).*drop_nonfinite=True"):
        check_features(features)


def test_allow_nonfinite_keeps_rows():
    features = np.ones((4, 2))
    features[1, 0] = np.nan
    assert np.isnan(check_features(features, allow_nonfinite=True)[1, 0])


def test_screen_rows_masks(caplog):
    features = np.ones((6, 3), dtype=np.float32)
    features[1] = np.nan
    features[4] = 0.0
    with pytest.raises(ValueError, match=r"row 1\)"):
        screen_rows(features)
    nonfinite, zero = screen_rows(features, drop_nonfinite=True)
    assert nonfinite.tolist() == [False, True, False, False, False, False]
    assert zero.tolist() == [False, False, False, False, True, False]
    assert "dropped 1 of 6 rows of X with NaN or infinite values (row 1)" in caplog.text
    assert "1 of 6 rows of X are all zeros (row 4)" in caplog.text


def test_screen_rows_all_nonfinite_rejected():
    with pytest.raises(ValueError, match="every row of X"):
        screen_rows(np.full((3, 2), np.nan, dtype=np.float32), drop_nonfinite=True)


def test_l2_normalize_extreme_magnitudes():
    features = np.array([[3e30, 4e30], [3e-30, 4e-30], [0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    normalized = l2_normalize(features)
    assert np.allclose(normalized[:2], [[0.6, 0.8], [0.6, 0.8]])
    assert normalized[2].tolist() == [0.0, 0.0]
    assert np.allclose(normalized[3], [0.6, 0.8])


def test_l2_normalize_matches_float32_division():
    features = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert np.array_equal(l2_normalize(features), expected)


def test_check_labels_names_first_non_integer():
    with pytest.raises(ValueError, match=r"first at index 2: .*nan"):
        check_labels(np.array([1.0, 2.0, np.nan]), 3)
    with pytest.raises(ValueError, match="first at index 0"):
        check_labels(np.array([1e300, 1.0]), 2)
    with pytest.raises(ValueError, match=r"must be a 1-D array of class labels, got shape \(3, 1\)"):
        check_labels(np.zeros((3, 1)), 3)
    assert check_labels(np.array([1.0, 2.0]), 2).tolist() == [1, 2]


# ---------------------------------------------------------------- damaged binary files


def test_truncated_npy_rejected(tmp_path, features):
    np.save(tmp_path / "x.npy", features)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="could not be read as a numeric .npy array.*cut short"):
        load_features(tmp_path / "x.npy")


def test_object_npy_rejected_without_unpickling(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="could not be read as a numeric .npy array"):
        load_features(tmp_path / "x.npy")


def test_damaged_npz_rejected(tmp_path, features):
    np.savez(tmp_path / "x.npz", features=features)
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_features(tmp_path / "x.npz")
    np.save(tmp_path / "single.npz", features)
    (tmp_path / "single.npz.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match="single .npy array, not an .npz archive"):
        load_features(tmp_path / "single.npz")


def test_npz_object_labels_rejected(tmp_path, features):
    np.savez(tmp_path / "x.npz", features=features, labels=np.array([None] * 12, dtype=object))
    with pytest.raises(ValueError, match="could not be read as numeric .npz arrays"):
        load_features(tmp_path / "x.npz")


def test_unknown_suffix_lists_formats(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"use .npy, .npz, .bin, .csv, .tsv or .pkl"):
        load_features(tmp_path / "x.parquet")


class _CreateFileOnLoad:
    """Pickles to a call of open(path, "w"), which creates ``path`` when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pickle_features_not_executed(tmp_path):
    marker = tmp_path / "executed"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_CreateFileOnLoad(str(marker))))
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_features(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_crafted_pickle_payload_runs_when_unpickled(tmp_path):
    # Check of the payload itself: without the guard above, loading it creates the marker.
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(_CreateFileOnLoad(str(marker))))
    assert marker.exists()


# ---------------------------------------------------------------- text files


def test_meta_blank_line_between_labels_rejected(tmp_path):
    (tmp_path / "gap.meta").write_text("1\n2\n\n3\n")
    with pytest.raises(ValueError, match="line 3 is empty but labels follow it"):
        load_labels(tmp_path / "gap.meta")


def test_meta_trailing_blank_lines_and_crlf_accepted(tmp_path):
    (tmp_path / "ok.meta").write_bytes(b"1\r\n-2\r\n+3\r\n\r\n\n")
    assert load_labels(tmp_path / "ok.meta").tolist() == [1, -2, 3]


@pytest.mark.parametrize("line", ["1.0", "1_000", "99999999999999999999", "\u0663"])
def test_meta_non_int64_lines_rejected(tmp_path, line):
    (tmp_path / "bad.meta").write_text(f"4\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: .* is not an integer label"):
        load_labels(tmp_path / "bad.meta")


def test_meta_non_utf8_rejected(tmp_path):
    (tmp_path / "latin.meta").write_bytes(b"1\n2\n3\xe9\n")
    with pytest.raises(ValueError, match=r"line 3: byte 0xe9 is not valid UTF-8"):
        load_labels(tmp_path / "latin.meta")


def test_meta_utf16_rejected_and_bom_ignored(tmp_path):
    (tmp_path / "wide.meta").write_bytes("1\n2\n".encode("utf-16"))
    with pytest.raises(ValueError, match="is UTF-16 text"):
        load_labels(tmp_path / "wide.meta")
    (tmp_path / "bom.meta").write_bytes(b"\xef\xbb\xbf5\n6\n")
    assert load_labels(tmp_path / "bom.meta").tolist() == [5, 6]


def test_csv_without_header(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3\n4,5,6\n")
    features, labels = load_features(tmp_path / "x.csv")
    assert features.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert labels is None


def test_csv_header_with_label_column(tmp_path):
    (tmp_path / "x.csv").write_text("f1,label,f2\n1,7,2\n3,8,4\n")
    features, labels = load_features(tmp_path / "x.csv")
    assert features.tolist() == [[1, 2], [3, 4]]
    assert labels.tolist() == [7, 8]


def test_csv_class_names_encoded(tmp_path):
    (tmp_path / "x.csv").write_text('a,b,class\n1,2,"dog"\n3,4,cat\n5,6,dog\n')
    _, labels = load_features(tmp_path / "x.csv")
    assert labels.tolist() == [1, 0, 1]


def test_csv_pandas_layouts(tmp_path):
    # pandas.DataFrame(X).to_csv() writes an unnamed index column; index=False keeps 0..D-1.
    (tmp_path / "indexed.csv").write_text(",0,1,2\n0,0.5,1.5,2.5\n1,3.5,4.5,5.5\n")
    features, _ = load_features(tmp_path / "indexed.csv")
    assert features.tolist() == [[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]]
    (tmp_path / "plain.csv").write_text("0,1,2\n0.5,1.5,2.5\n")
    features, _ = load_features(tmp_path / "plain.csv")
    assert features.tolist() == [[0.5, 1.5, 2.5]]


def test_tsv_and_single_column(tmp_path):
    (tmp_path / "x.tsv").write_text("1\t2\n3\t4\n")
    assert load_features(tmp_path / "x.tsv")[0].shape == (2, 2)
    (tmp_path / "one.csv").write_text("1\n2\n3\n")
    assert load_features(tmp_path / "one.csv")[0].shape == (3, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2\n3,4,5\n", "line 2: 3 columns, but the first line has 2"),
        ("a,b\n1,2\n3,x\n", "line 3, column 2: 'x' is not a number"),
        ("1,2\n\n3,4\n", "line 2 is empty but rows follow it"),
        ("a,b\n", "contains a header but no data rows"),
        ("\n\n", "contains no rows"),
        ("label\n1\n", "contains only a label column"),
        ("1,2\n3,\n", "line 2, column 2: '' is not a number"),
    ],
)
def test_bad_csv_named(tmp_path, text, message):
    (tmp_path / "x.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_features(tmp_path / "x.csv")


def test_csv_nan_cells_follow_nonfinite_rule(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\nnan,4\n5,inf\n")
    with pytest.raises(ValueError, match=r"rows 1, 2\)"):
        load_features(tmp_path / "x.csv")
    features, _ = load_features(tmp_path / "x.csv", allow_nonfinite=True)
    assert features.shape == (3, 2)


def test_csv_non_utf8_rejected(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"a,b\n1,2\n\xff\xfe,3\n")
    with pytest.raises(ValueError, match="line 3: byte 0xff is not valid UTF-8"):
        load_features(tmp_path / "x.csv")


def test_csv_label_files(tmp_path):
    (tmp_path / "plain.csv").write_text("3\n4\n")
    assert load_labels(tmp_path / "plain.csv").tolist() == [3, 4]
    (tmp_path / "named.csv").write_text("label\n3\n4\n")
    assert load_labels(tmp_path / "named.csv").tolist() == [3, 4]
    (tmp_path / "table.csv").write_text("id,class\n0,dog\n1,cat\n")
    assert load_labels(tmp_path / "table.csv").tolist() == [1, 0]
    (tmp_path / "nolabel.csv").write_text("id,name\n0,dog\n")
    with pytest.raises(ValueError, match="none is named label"):
        load_labels(tmp_path / "nolabel.csv")


# ---------------------------------------------------------------- outputs


def test_save_labels_writes_metadata(tmp_path):
    import hashlib
    import json

    path = tmp_path / "ids.txt"
    save_labels(np.array([0, 1, -1]), path, metadata={"n_samples": 3})
    record = json.loads(metadata_path(path).read_text())
    assert metadata_path(path).name == "ids.txt.json"
    assert record["n_samples"] == 3
    assert record["labels_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(FileExistsError, match="ids.txt already exists"):
        save_labels(np.array([0]), path, metadata={})
    path.unlink()
    with pytest.raises(FileExistsError, match="ids.txt.json already exists"):
        save_labels(np.array([0]), path, metadata={})
    assert not path.exists()


def test_save_labels_npy_round_trip(tmp_path):
    save_labels(np.array([5, -1, 2]), tmp_path / "ids.npy")
    assert load_labels(tmp_path / "ids.npy").tolist() == [5, -1, 2]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    from hilander._files import atomic_path

    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as temporary:
            temporary.write_text("half of the new")
            raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
