import json

import numpy as np
import pytest

from hilander import HiLander
from hilander.datasets import load_open_set_split
from hilander.metrics import evaluate

from conftest import blobs

SMALL = dict(hidden=32, epochs=4, eval_every=2, batch_size=256, tau_grid=(0.3, 0.5, 0.7))


@pytest.fixture(scope="module")
def fitted():
    features, labels = blobs(num_classes=30, per_class=20, seed=0)
    return HiLander(**SMALL).fit(features, labels)


def test_fit_predict_unseen_blobs(fitted):
    features, labels = blobs(num_classes=10, per_class=20, seed=1)
    predicted = fitted.predict(features)
    assert predicted.shape == (200,)
    assert predicted.dtype == np.int64
    scores = evaluate(labels, predicted)
    assert scores["pairwise_f"] > 0.8
    assert scores["bcubed_f"] > 0.8


def test_fit_chooses_settings(fitted):
    assert fitted.k_ in (10, 5, 3)
    assert fitted.tau_ in (0.3, 0.5, 0.7)
    assert 1 <= fitted.n_levels_ <= fitted.max_levels
    assert fitted.best_epoch_ in (2, 4)
    # Four validated epochs on 80% of the classes, then a refit on all of them up to the best epoch.
    assert [record["refit"] for record in fitted.history_] == [False] * 4 + [True] * fitted.best_epoch_
    assert "validation_score" in fitted.history_[1]
    assert not any("validation_score" in record for record in fitted.history_[4:])


def test_hierarchy_levels_merge_monotonically(fitted):
    features, _ = blobs(num_classes=10, per_class=20, seed=2)
    result = fitted.predict_hierarchy(features)
    counts = [len(np.unique(level)) for level in result.level_labels]
    assert counts == sorted(counts, reverse=True)
    # Final labels are the last level's, with small clusters merged into larger ones.
    last = result.level_labels[-1]
    assert len(np.unique(result.labels)) <= len(np.unique(last))
    kept = np.bincount(last)[last] >= fitted.min_cluster_size_
    assert np.array_equal(np.unique(result.labels[kept], return_inverse=True)[1],
                          np.unique(last[kept], return_inverse=True)[1])


def test_save_load_identical_predictions(fitted, tmp_path):
    features, _ = blobs(num_classes=10, per_class=20, seed=3)
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    loaded = HiLander.load(path)
    assert np.array_equal(loaded.predict(features), fitted.predict(features))
    assert (loaded.k_, loaded.tau_, loaded.n_levels_) == (fitted.k_, fitted.tau_, fitted.n_levels_)


def test_load_rejects_newer_format(fitted, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    metadata["format_version"] = "99"
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(ValueError, match="uses model format 99"):
        HiLander.load(path)


def test_load_rejects_pickle_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    payload = (
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="not a hilander model file"):
        HiLander.load(path)
    assert not marker.exists()


def test_nan_features_rejected():
    features, labels = blobs(num_classes=5, per_class=10)
    features[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row \(row 4\)"):
        HiLander(**SMALL).fit(features, labels)


def test_wrong_label_count_rejected():
    features, labels = blobs(num_classes=5, per_class=10)
    with pytest.raises(ValueError, match="y has 49 labels but there are 50 samples"):
        HiLander(**SMALL).fit(features, labels[:-1])


def test_fewer_samples_than_k_rejected(fitted):
    features, labels = blobs(num_classes=2, per_class=3)
    with pytest.raises(ValueError, match="X has 6 samples but k=10 neighbours are needed"):
        HiLander(**SMALL).fit(features, labels)
    with pytest.raises(ValueError, match=f"X has 2 samples but the model clusters with k={fitted.k_}"):
        fitted.predict(features[:2])


def test_feature_dimension_mismatch_rejected(fitted):
    with pytest.raises(ValueError, match="X has 8 features but the model was fitted on 16"):
        fitted.predict(np.ones((20, 8), dtype=np.float32))


def test_string_labels_accepted():
    features, labels = blobs(num_classes=12, per_class=15, seed=6)
    # Zero-padded names sort like the integer ids, so both fits hold out the same classes.
    names = np.array([f"intent_{label:02d}" for label in labels])
    by_name = HiLander(**SMALL).fit(features, names)
    by_id = HiLander(**SMALL).fit(features, labels)
    test_features, _ = blobs(num_classes=6, per_class=15, seed=7)
    assert np.array_equal(by_name.predict(test_features), by_id.predict(test_features))


def test_unavailable_device_rejected():
    import torch

    features, labels = blobs(num_classes=5, per_class=10)
    with pytest.raises(ValueError, match="device='bogus' is not a torch device"):
        HiLander(device="bogus").fit(features, labels)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' is not available"):
            HiLander(device="cuda").fit(features, labels)


def test_saved_model_readable_by_group(fitted, tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        fitted.save(tmp_path / "model.safetensors")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode)
    assert mode == 0o644


def test_invalid_parameter_named():
    features, labels = blobs(num_classes=5, per_class=10)
    with pytest.raises(ValueError, match="tau=1.5 is invalid"):
        HiLander(tau=1.5).fit(features, labels)


def test_unfitted_predict_raises():
    with pytest.raises(RuntimeError, match="not fitted yet"):
        HiLander().predict(np.ones((3, 2)))


def test_same_seed_same_clusters():
    features, labels = blobs(num_classes=12, per_class=15, seed=4)
    test_features, _ = blobs(num_classes=6, per_class=15, seed=5)
    first = HiLander(**SMALL, random_state=7).fit(features, labels).predict(test_features)
    second = HiLander(**SMALL, random_state=7).fit(features, labels).predict(test_features)
    assert np.array_equal(first, second)


@pytest.mark.slow
def test_end_to_end_clinc_slice(clinc_root):
    split = load_open_set_split("clinc150", clinc_root)
    train_classes = np.unique(split.train_labels)[:30]
    test_classes = np.unique(split.test_labels)[:10]
    train = np.isin(split.train_labels, train_classes)
    test = np.isin(split.test_labels, test_classes)
    model = HiLander(hidden=128, epochs=6, eval_every=3, tau_grid=(0.2, 0.4, 0.6, 0.8))
    model.fit(split.train_features[train], split.train_labels[train])
    scores = evaluate(split.test_labels[test], model.predict(split.test_features[test]))
    assert scores["pairwise_f"] > 0.6, json.dumps(scores)
    assert scores["bcubed_f"] > 0.6, json.dumps(scores)
    assert scores["nmi"] > 0.75, json.dumps(scores)
