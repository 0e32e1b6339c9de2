import json

import numpy as np
import pytest
import torch

from hilander import HiLander
from hilander.checkpoint import CHECKPOINT_FILE, checkpoint_epoch

from conftest import blobs

# eval_every=2 puts validations, and so best-state copies, before and after the interruption;
# dropout makes the resumed run depend on the restored torch random state.
SMALL = dict(hidden=32, epochs=5, eval_every=2, batch_size=64, tau_grid=(0.3, 0.5, 0.7), dropout=0.2)


@pytest.fixture(scope="module")
def data():
    features, labels = blobs(num_classes=12, per_class=15, seed=20)
    test_features, _ = blobs(num_classes=6, per_class=15, seed=21)
    return features, labels, test_features


@pytest.fixture(scope="module")
def uninterrupted(data):
    features, labels, _ = data
    return HiLander(**SMALL).fit(features, labels)


def _stop_in_epoch(epoch: int, stage_name: str = "training fold 1 of 2"):
    """Return a progress callback that raises KeyboardInterrupt at the first step of ``epoch``."""

    def progress(stage, completed, total):
        if stage == stage_name:
            steps_per_epoch = total // SMALL["epochs"]
            if completed == (epoch - 1) * steps_per_epoch + 1:
                raise KeyboardInterrupt

    return progress


def _interrupt(features, labels, folder, epoch, stage_name="training fold 1 of 2"):
    with pytest.raises(KeyboardInterrupt):
        HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, progress=_stop_in_epoch(epoch, stage_name))


def test_resume_matches_uninterrupted_fit(data, uninterrupted, tmp_path):
    features, labels, test_features = data
    folder = tmp_path / "checkpoints"
    _interrupt(features, labels, folder, epoch=4)
    assert checkpoint_epoch(folder) == 3

    resumed = HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, resume=True)
    assert checkpoint_epoch(folder) == 5
    validated = [(record["fold"], record["epoch"]) for record in resumed.history_ if not record["refit"]]
    assert validated == [(fold, epoch) for fold in (0, 1) for epoch in range(1, 6)]
    assert json.dumps(resumed.history_) == json.dumps(uninterrupted.history_)
    expected = uninterrupted.model_.state_dict()
    for name, value in resumed.model_.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert (resumed.k_, resumed.tau_, resumed.n_levels_) == (uninterrupted.k_, uninterrupted.tau_, uninterrupted.n_levels_)
    assert np.array_equal(resumed.predict(test_features), uninterrupted.predict(test_features))


def test_resume_in_second_fold(data, uninterrupted, tmp_path):
    features, labels, test_features = data
    folder = tmp_path / "checkpoints"
    _interrupt(features, labels, folder, epoch=3, stage_name="training fold 2 of 2")
    assert (folder / "fold-1" / "checkpoint.safetensors").is_file()
    assert checkpoint_epoch(folder) == 2
    resumed = HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, resume=True)
    assert json.dumps(resumed.history_) == json.dumps(uninterrupted.history_)
    assert np.array_equal(resumed.predict(test_features), uninterrupted.predict(test_features))


def test_resume_before_first_validation(data, uninterrupted, tmp_path):
    features, labels, test_features = data
    folder = tmp_path / "checkpoints"
    _interrupt(features, labels, folder, epoch=2)
    assert checkpoint_epoch(folder) == 1
    resumed = HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, resume=True)
    assert np.array_equal(resumed.predict(test_features), uninterrupted.predict(test_features))


def test_resume_after_last_epoch_skips_training(data, uninterrupted, tmp_path):
    features, labels, test_features = data
    folder = tmp_path / "checkpoints"
    HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder)
    steps = []
    resumed = HiLander(**SMALL).fit(
        features, labels, checkpoint_dir=folder, resume=True,
        progress=lambda stage, completed, total: steps.append(stage),
    )
    assert not [stage for stage in steps if stage.startswith("training fold")]
    assert "refitting on all classes" in steps
    assert np.array_equal(resumed.predict(test_features), uninterrupted.predict(test_features))


def test_existing_checkpoint_needs_resume(data, tmp_path):
    features, labels, _ = data
    folder = tmp_path / "checkpoints"
    _interrupt(features, labels, folder, epoch=2)
    before = (folder / "fold-1" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(FileExistsError, match="already contains a checkpoint of epoch 1; pass resume=True"):
        HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder)
    assert (folder / "fold-1" / CHECKPOINT_FILE).read_bytes() == before


def test_checkpoint_of_other_run_rejected(data, tmp_path):
    features, labels, _ = data
    folder = tmp_path / "checkpoints"
    _interrupt(features, labels, folder, epoch=2)
    with pytest.raises(ValueError, match="was written for other training data or settings"):
        HiLander(**{**SMALL, "lr": 0.05}).fit(features, labels, checkpoint_dir=folder, resume=True)
    with pytest.raises(ValueError, match="was written for other training data or settings"):
        HiLander(**SMALL).fit(features[::-1], labels[::-1], checkpoint_dir=folder, resume=True)


def test_damaged_checkpoint_rejected(data, tmp_path):
    features, labels, _ = data
    folder = tmp_path / "checkpoints"
    (folder / "fold-1").mkdir(parents=True)
    (folder / "fold-1" / CHECKPOINT_FILE).write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, resume=True)
    assert checkpoint_epoch(folder) is None


def test_single_fold_checkpoint_rejected_by_two_folds(data, tmp_path):
    features, labels, _ = data
    folder = tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        HiLander(**SMALL, validation_folds=1).fit(features, labels, checkpoint_dir=folder, progress=_stop_in_epoch(2, "training"))
    with pytest.raises(ValueError, match="checkpoint of a fit with one validation fold, but this fit uses 2"):
        HiLander(**SMALL).fit(features, labels, checkpoint_dir=folder, resume=True)


def test_resume_without_checkpoint_starts_fresh(data, uninterrupted, tmp_path, caplog):
    features, labels, test_features = data
    resumed = HiLander(**SMALL).fit(features, labels, checkpoint_dir=tmp_path / "new", resume=True)
    assert "training starts at epoch 1" in caplog.text
    assert np.array_equal(resumed.predict(test_features), uninterrupted.predict(test_features))


def test_resume_needs_folder(data):
    features, labels, _ = data
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        HiLander(**SMALL).fit(features, labels, resume=True)
