import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from hilander.cli import app

from conftest import blobs

runner = CliRunner()
FAST = ["--epochs", "2", "--hidden", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    features, labels = blobs(num_classes=20, per_class=15, seed=0)
    np.save(folder / "train.npy", features)
    (folder / "train.meta").write_text("".join(f"{v}\n" for v in labels))
    test_features, test_labels = blobs(num_classes=8, per_class=15, seed=1)
    np.save(folder / "test.npy", test_features)
    (folder / "test.meta").write_text("".join(f"{v}\n" for v in test_labels))
    result = runner.invoke(
        app,
        ["train", str(folder / "train.npy"), "--labels", str(folder / "train.meta"),
         "--output", str(folder / "model.safetensors"), *FAST],
    )
    assert result.exit_code == 0, result.output
    return folder


def test_train_writes_model(trained):
    assert (trained / "model.safetensors").stat().st_size > 0


def test_cluster_then_evaluate(trained):
    output = trained / "pred.txt"
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    lines = output.read_text().splitlines()
    assert len(lines) == 120
    assert all(line.isdigit() for line in lines)

    result = runner.invoke(app, ["evaluate", "--gt", str(trained / "test.meta"), "--pred", str(output), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    result = runner.invoke(app, ["evaluate", "--gt", str(trained / "test.meta"), "--pred", str(output)])
    assert result.exit_code == 0, result.output
    assert "BCubed recall" in result.output
    assert 0.0 <= scores["pairwise_f"] <= 1.0
    assert scores["n_classes"] == 8


def test_cluster_refuses_existing_output(trained):
    output = trained / "existing.txt"
    output.write_text("keep me\n")
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(output)]
    )
    assert result.exit_code == 2
    assert "already exists" in result.output
    assert output.read_text() == "keep me\n"


def test_cluster_missing_folder_rejected_before_work(trained):
    result = runner.invoke(
        app,
        ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"),
         "-o", str(trained / "no_such_folder" / "pred.txt")],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_train_without_labels_rejected(trained):
    result = runner.invoke(
        app, ["train", str(trained / "train.npy"), "-o", str(trained / "m2.safetensors"), *FAST]
    )
    assert result.exit_code == 2
    assert "contains no labels; pass --labels" in result.output
    assert not (trained / "m2.safetensors").exists()


def test_pickle_features_need_flag(trained):
    import pickle

    with open(trained / "data.pkl", "wb") as handle:
        pickle.dump((np.ones((20, 16), dtype=np.float32), np.zeros(20, dtype=np.int64)), handle)
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(trained / "data.pkl"), "-o", str(trained / "p.txt")]
    )
    assert result.exit_code == 2
    assert "--allow-pickle" in result.output


def test_demo_without_data_explains(tmp_path, monkeypatch):
    monkeypatch.delenv("HILANDER_DATA", raising=False)
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "datasets are not found" in result.output
    assert "--data-dir" in result.output


def test_train_label_count_names_files(trained):
    (trained / "short.meta").write_text("0\n1\n")
    result = runner.invoke(
        app,
        ["train", str(trained / "train.npy"), "--labels", str(trained / "short.meta"),
         "-o", str(trained / "m3.safetensors"), *FAST],
    )
    assert result.exit_code == 2
    assert "short.meta has 2 labels but" in result.output
    assert "has 300 rows" in result.output


def test_unavailable_device_is_one_line_error(trained):
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"),
              "-o", str(trained / "dev.txt"), "--device", "bogus"],
    )
    assert result.exit_code == 2
    assert "is not a torch device" in result.output
    assert "Traceback" not in result.output


def test_partial_dataset_names_missing_files(tmp_path):
    (tmp_path / "clinc150").mkdir()
    (tmp_path / "clinc150" / "labels.npy").write_bytes(b"")
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "missing emb_minilm_l6.npy, classes.json, split.json" in result.output


def test_help_lists_units():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Link threshold on P(same class), in [0, 1)" in result.output
    assert "Neighbours per node at inference" in result.output


# ---------------------------------------------------------------- bad input and safe outputs


def _cluster(trained, features, output, *extra):
    return runner.invoke(app, ["cluster", str(trained / "model.safetensors"), str(features), "-o", str(output), *extra])


def test_cluster_writes_metadata_file(trained, tmp_path):
    import hashlib

    import faiss
    import torch

    from hilander import __version__

    output = tmp_path / "ids.txt"
    result = _cluster(trained, trained / "test.npy", output)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "ids.txt.json").read_text())
    assert record["versions"]["hilander"] == __version__
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["faiss"] == faiss.__version__
    assert record["model"]["versions"]["faiss"] == faiss.__version__
    assert record["labels_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert record["n_samples"] == 120
    assert record["n_dropped_rows"] == 0
    assert record["n_clusters"] == len(set(output.read_text().split()))
    assert record["features"] == str((trained / "test.npy").resolve())
    from hilander import HiLander

    model = HiLander.load(trained / "model.safetensors")
    assert record["model"]["link_head"] == model.link_head
    assert record["model"]["hidden"] == model.hidden
    levels = record["levels_decoded"]
    assert f"over {levels} level{'' if levels == 1 else 's'};" in result.output


def test_cluster_refuses_existing_metadata(trained, tmp_path):
    (tmp_path / "ids.txt.json").write_text("{}")
    result = _cluster(trained, trained / "test.npy", tmp_path / "ids.txt")
    assert result.exit_code == 2
    assert "ids.txt.json already exists; pass --overwrite" in result.output
    assert not (tmp_path / "ids.txt").exists()


def test_output_inside_file_rejected(trained, tmp_path):
    (tmp_path / "plain").write_text("")
    result = _cluster(trained, trained / "test.npy", tmp_path / "plain" / "ids.txt")
    assert result.exit_code == 2
    assert "is a file, not a folder" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any folder, whatever its mode")
def test_unwritable_folder_rejected_before_work(trained, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        result = _cluster(trained, trained / "missing.npy", folder / "ids.txt")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 2
    assert "is not writable" in result.output


def test_cluster_nan_rows_error_or_minus_one(trained, tmp_path):
    features = np.load(trained / "test.npy")
    features[[3, 60]] = np.nan
    np.save(tmp_path / "nan.npy", features)
    result = _cluster(trained, tmp_path / "nan.npy", tmp_path / "ids.txt")
    assert result.exit_code == 2
    assert "NaN or infinite values in 2 rows (counted from 0: rows 3, 60)" in result.output
    assert "--drop-nonfinite" in result.output
    assert "Traceback" not in result.output

    result = _cluster(trained, tmp_path / "nan.npy", tmp_path / "ids.txt", "--drop-nonfinite")
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in (tmp_path / "ids.txt").read_text().split()]
    assert len(ids) == 120
    assert [i for i, value in enumerate(ids) if value == -1] == [3, 60]
    assert "2 rows with NaN or inf dropped, id -1" in result.output
    assert json.loads((tmp_path / "ids.txt.json").read_text())["n_dropped_rows"] == 2

    # evaluate scores the -1 rows as one more cluster.
    result = runner.invoke(app, ["evaluate", "--gt", str(trained / "test.meta"), "--pred", str(tmp_path / "ids.txt"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_clusters"] == len(set(ids))


def test_csv_features_through_cli(trained, tmp_path):
    features = np.load(trained / "train.npy")
    labels = (trained / "train.meta").read_text().split()
    rows = [",".join(f"{v:.8f}" for v in row) + f",{label}" for row, label in zip(features, labels)]
    header = ",".join(f"f{i}" for i in range(16)) + ",label"
    (tmp_path / "train.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    result = runner.invoke(app, ["train", str(tmp_path / "train.csv"), "-o", str(tmp_path / "m.safetensors"), *FAST])
    assert result.exit_code == 0, result.output
    test_features = np.load(trained / "test.npy")
    (tmp_path / "test.csv").write_text("\n".join(",".join(repr(float(v)) for v in row) for row in test_features))
    result = runner.invoke(app, ["cluster", str(tmp_path / "m.safetensors"), str(tmp_path / "test.csv"), "-o", str(tmp_path / "ids.txt")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "ids.txt").read_text().split()) == 120


def test_bin_uses_model_dimension(trained, tmp_path):
    features = np.load(trained / "test.npy")
    features.astype("<f4").tofile(tmp_path / "x.bin")
    result = _cluster(trained, tmp_path / "x.bin", tmp_path / "ids.txt")
    assert result.exit_code == 0, result.output
    expected = _cluster(trained, trained / "test.npy", tmp_path / "expected.txt")
    assert expected.exit_code == 0
    assert (tmp_path / "ids.txt").read_text() == (tmp_path / "expected.txt").read_text()

    (tmp_path / "cut.bin").write_bytes((tmp_path / "x.bin").read_bytes()[:-6])
    result = _cluster(trained, tmp_path / "cut.bin", tmp_path / "cut.txt")
    assert result.exit_code == 2
    assert "not a whole number of float32 rows of dimension 16" in result.output


@pytest.mark.parametrize(
    "content, message",
    [
        (b"0\n1\nzero\n", "line 3: 'zero' is not an integer label"),
        (b"0\n1\n\xff\n", "line 3: byte 0xff is not valid UTF-8"),
        (b"0\n\n1\n", "line 2 is empty but labels follow it"),
    ],
)
def test_bad_label_file_one_line_error(trained, tmp_path, content, message):
    (tmp_path / "bad.meta").write_bytes(content)
    result = runner.invoke(
        app, ["train", str(trained / "train.npy"), "--labels", str(tmp_path / "bad.meta"), "-o", str(tmp_path / "m.safetensors"), *FAST]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_crafted_pickle_model_not_executed(trained, tmp_path):
    import pickle

    marker = tmp_path / "executed"

    class CreateFileOnLoad:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(CreateFileOnLoad()))
    result = runner.invoke(app, ["cluster", str(tmp_path / "evil.safetensors"), str(trained / "test.npy"), "-o", str(tmp_path / "ids.txt")])
    assert result.exit_code == 2
    assert "is not a hilander model file" in result.output
    assert not marker.exists()
    assert not (tmp_path / "ids.txt").exists()


def test_cluster_dimension_mismatch(trained, tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((30, 20), dtype=np.float32))
    result = _cluster(trained, tmp_path / "wide.npy", tmp_path / "ids.txt")
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "X has 20 features but the model was fitted on 16" in output
    assert "wide.npy:" in output


def test_cluster_fewer_samples_than_k(trained, tmp_path, caplog):
    np.save(tmp_path / "two.npy", np.load(trained / "test.npy")[:2])
    result = _cluster(trained, tmp_path / "two.npy", tmp_path / "ids.txt")
    assert result.exit_code == 0, result.output
    assert "clustering with k=2 instead" in caplog.text
    assert len((tmp_path / "ids.txt").read_text().split()) == 2


def test_same_seed_same_cluster_ids(trained, tmp_path):
    for name in ("a", "b"):
        result = runner.invoke(
            app,
            ["train", str(trained / "train.npy"), "--labels", str(trained / "train.meta"),
             "-o", str(tmp_path / f"{name}.safetensors"), "--seed", "3", *FAST],
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            app, ["cluster", str(tmp_path / f"{name}.safetensors"), str(trained / "test.npy"), "-o", str(tmp_path / f"{name}.txt")]
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text()
    _assert_same_model(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def _assert_same_model(first, second):
    """Compare two model files by content; safetensors may order header keys differently."""
    import torch
    from safetensors import safe_open

    with safe_open(str(first), framework="pt") as a, safe_open(str(second), framework="pt") as b:
        assert a.metadata() == b.metadata()
        assert sorted(a.keys()) == sorted(b.keys())
        for name in a.keys():
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name


def test_resume_needs_checkpoint_dir(trained, tmp_path):
    result = runner.invoke(
        app, ["train", str(trained / "train.npy"), "--labels", str(trained / "train.meta"), "-o", str(tmp_path / "m.safetensors"), "--resume"]
    )
    assert result.exit_code == 2
    assert "--resume needs --checkpoint-dir" in result.output


def test_checkpoint_dir_then_resume(trained, tmp_path):
    arguments = ["train", str(trained / "train.npy"), "--labels", str(trained / "train.meta"),
                 "--checkpoint-dir", str(tmp_path / "ckpt"), *FAST]
    result = runner.invoke(app, [*arguments, "-o", str(tmp_path / "first.safetensors")])
    assert result.exit_code == 0, result.output
    # One checkpoint per validation fold.
    assert (tmp_path / "ckpt" / "fold-1" / "checkpoint.safetensors").is_file()
    assert (tmp_path / "ckpt" / "fold-2" / "checkpoint.safetensors").is_file()

    result = runner.invoke(app, [*arguments, "-o", str(tmp_path / "second.safetensors")])
    assert result.exit_code == 2
    assert "already contains a checkpoint of epoch 2; pass --resume" in result.output

    result = runner.invoke(app, [*arguments, "-o", str(tmp_path / "second.safetensors"), "--resume"])
    assert result.exit_code == 0, result.output
    _assert_same_model(tmp_path / "first.safetensors", tmp_path / "second.safetensors")


def test_demo_refuses_existing_model_before_work(tmp_path):
    (tmp_path / "model.safetensors").write_text("keep")
    result = runner.invoke(app, ["demo", "--save-model", str(tmp_path / "model.safetensors")])
    assert result.exit_code == 2
    assert "already exists; pass --overwrite" in result.output
    assert (tmp_path / "model.safetensors").read_text() == "keep"


def test_cluster_dry_run_prints_estimate_and_writes_nothing(trained, tmp_path):
    output = tmp_path / "pred.txt"
    result = runner.invoke(
        app,
        ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(output), "--dry-run"],
    )
    assert result.exit_code == 0, result.output
    assert "clustering 120 x 16" in result.output
    assert "GiB at peak" in result.output
    assert not output.exists()
    assert not (tmp_path / "pred.txt.json").exists()


def test_cluster_dry_run_rejects_what_cannot_fit(trained, tmp_path, monkeypatch):
    # A header-only .npy of 200 million rows: the dry run reads its shape, not its data.
    huge = tmp_path / "huge.npy"
    array = np.lib.format.open_memmap(huge, mode="w+", dtype=np.float32, shape=(200_000_000, 16))
    del array
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(huge), "-o", str(tmp_path / "p.txt"), "--dry-run"]
    )
    assert result.exit_code == 2
    assert "clustering 200000000 x 16" in result.output
    assert "is available" in result.output
    assert "--chunk-size" in result.output


def test_cluster_with_approximate_knn_records_levels(trained, tmp_path):
    output = tmp_path / "pred.npy"
    result = runner.invoke(
        app,
        ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(output),
         "--knn-method", "hnsw", "--knn-param", "ef_search=64", "--chunk-size", "10"],
    )
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "pred.npy.json").read_text())
    assert metadata["knn_method"] == "hnsw"
    assert metadata["knn_params"] == {"ef_search": 64}
    assert metadata["chunk_size"] == 10
    first = metadata["level_stats"][0]
    assert first["nodes"] == 120
    assert first["knn"]["method"] == "hnsw"
    assert 0.0 <= first["knn"]["recall"] <= 1.0
    assert first["peak_memory"] > 0
    # The same ids as the exact default: 120 rows are far too few for HNSW to miss neighbours.
    exact = tmp_path / "exact.npy"
    runner.invoke(app, ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(exact)])
    assert np.array_equal(np.load(output), np.load(exact))


@pytest.mark.parametrize(
    "option, message",
    [
        (["--knn-param", "nprobe"], "--knn-param 'nprobe' is invalid; use KEY=INTEGER"),
        (["--knn-param", "n_probe=4"], "unknown knn option(s) ['n_probe']"),
        (["--chunk-size", "0"], "chunk_size=0 is invalid"),
    ],
)
def test_cluster_bad_scale_options(trained, tmp_path, option, message):
    result = runner.invoke(
        app, ["cluster", str(trained / "model.safetensors"), str(trained / "test.npy"), "-o", str(tmp_path / "p.txt"), *option]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "p.txt").exists()
