import json

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
