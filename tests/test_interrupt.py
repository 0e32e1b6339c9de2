"""Runs of the real command line in a subprocess, stopped by a signal midway through training."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hilander.cli import app

from conftest import blobs

SOURCE = Path(__file__).resolve().parents[1] / "src"
TRAIN_OPTIONS = ["--epochs", "12", "--hidden", "32", "--seed", "5"]
OLD_MODEL = b"previous model, which an interrupted run must leave as it is"


@pytest.fixture
def inputs(tmp_path):
    features, labels = blobs(num_classes=24, per_class=15, seed=30)
    np.save(tmp_path / "train.npy", features)
    (tmp_path / "train.meta").write_text("".join(f"{v}\n" for v in labels))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(OLD_MODEL)
    return tmp_path


def _train_arguments(folder: Path, *extra: str, output: Path | None = None) -> list[str]:
    output = output or folder / "out" / "model.safetensors"
    return [
        "train", str(folder / "train.npy"), "--labels", str(folder / "train.meta"),
        "-o", str(output), "--overwrite", *TRAIN_OPTIONS, *extra,
    ]


class _Run:
    """A ``python -m hilander -v ...`` subprocess whose stderr lines are collected by a thread."""

    def __init__(self, arguments: list[str]) -> None:
        # Threads are inherited from this process's environment, so that the subprocess
        # computes the same floats as an in-process run.
        environment = {**os.environ, "PYTHONPATH": str(SOURCE), "COLUMNS": "250"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hilander", "-v", *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, "".join(self.seen)
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} not in the output after {timeout} s:\n{''.join(self.seen)}")

    def stop(self, signal_number: int) -> tuple[int, str]:
        self.process.send_signal(signal_number)
        code = self.process.wait(timeout=120)
        self.reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "".join(self.seen)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_killed_train_leaves_old_output(inputs, signal_number):
    run = _Run(_train_arguments(inputs))
    run.wait_for("epoch 1:")
    code, output = run.stop(signal_number)

    assert code == (143 if signal_number == signal.SIGTERM else -signal.SIGKILL), output
    assert (inputs / "out" / "model.safetensors").read_bytes() == OLD_MODEL
    assert sorted(p.name for p in (inputs / "out").iterdir()) == ["model.safetensors"]
    if signal_number == signal.SIGTERM:
        assert "interrupted: " in output
        assert "model.safetensors was not replaced" in output
        assert "Traceback" not in output


def test_ctrl_c_then_resume_matches_full_run(inputs, tmp_path):
    checkpoints = inputs / "checkpoints"
    run = _Run(_train_arguments(inputs, "--checkpoint-dir", str(checkpoints)))
    run.wait_for("epoch 2:")
    code, output = run.stop(signal.SIGINT)

    assert code == 130, output
    assert "model.safetensors was not replaced; the checkpoint of epoch" in output
    assert "rerun the same command with --resume" in output
    assert "Traceback" not in output
    assert (inputs / "out" / "model.safetensors").read_bytes() == OLD_MODEL
    assert sorted(p.name for p in (inputs / "out").iterdir()) == ["model.safetensors"]
    # The run stopped in the first of two validation folds, so only that fold has a checkpoint.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["fold-1", "fold-2"]
    assert [p.name for p in (checkpoints / "fold-1").iterdir()] == ["checkpoint.safetensors"]
    assert list((checkpoints / "fold-2").iterdir()) == []

    runner = CliRunner()
    resumed = runner.invoke(app, _train_arguments(inputs, "--checkpoint-dir", str(checkpoints), "--resume"))
    assert resumed.exit_code == 0, resumed.output
    full = runner.invoke(app, _train_arguments(inputs, output=tmp_path / "full.safetensors"))
    assert full.exit_code == 0, full.output

    from test_cli import _assert_same_model

    _assert_same_model(inputs / "out" / "model.safetensors", tmp_path / "full.safetensors")


def test_interrupted_cluster_keeps_old_output(tmp_path, monkeypatch):
    from hilander import HiLander

    features, labels = blobs(num_classes=12, per_class=10, seed=31)
    model = HiLander(hidden=16, epochs=1, tau_grid=(0.5,)).fit(features, labels)
    model.save(tmp_path / "model.safetensors")
    np.save(tmp_path / "x.npy", features)
    (tmp_path / "ids.txt").write_text("old ids\n")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(HiLander, "predict_hierarchy", interrupt)
    result = CliRunner().invoke(
        app, ["cluster", str(tmp_path / "model.safetensors"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "ids.txt"), "--overwrite"]
    )
    assert result.exit_code == 130
    assert "interrupted: " in result.output
    assert "ids.txt was not replaced" in result.output
    assert (tmp_path / "ids.txt").read_text() == "old ids\n"
    assert not (tmp_path / "ids.txt.json").exists()
