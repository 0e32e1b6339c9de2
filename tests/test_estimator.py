import json

import numpy as np
import pytest

from hilander import HiLander
from hilander.datasets import load_open_set_split
from hilander.estimator import _smooth_over_tau
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
    assert fitted.k_ in (40, 10, 5)
    assert fitted.tau_ in (0.3, 0.5, 0.7)
    assert 1 <= fitted.n_levels_ <= fitted.max_levels
    assert fitted.best_epoch_ in (2, 4)
    # Two folds of four epochs, each validated on its held-out half of the classes, then a
    # refit on all of them up to the best epoch.
    history = fitted.history_
    assert [record["refit"] for record in history] == [False] * 8 + [True] * fitted.best_epoch_
    assert [record["fold"] for record in history[:8]] == [0] * 4 + [1] * 4
    assert "validation_score" in history[1]
    assert "validation_score" in history[5]
    assert not any("validation_score" in record for record in history[8:])
    assert fitted.validation_["folds"] == 2


def test_choice_maximises_fold_mean_over_tau_window(fitted):
    # Recompute the choice from the recorded tables: the mean over both folds of each setting,
    # then the mean over the taus at most two grid steps away (the grid here has three taus).
    means = {}
    for record in fitted.history_:
        for k, tau, levels, min_size, refine, score, *_ in record.get("validation_table", []):
            means.setdefault((record["epoch"], k, tau, levels, min_size, refine), []).append(score)
    means = {key: np.mean(value) for key, value in means.items() if len(value) == 2}
    taus = sorted({key[2] for key in means})
    window = {}
    for epoch, k, tau, levels, min_size, refine in means:
        index = taus.index(tau)
        near = taus[max(0, index - 2) : index + 3]
        window[epoch, k, tau, levels, min_size, refine] = np.mean(
            [means[epoch, k, t, levels, min_size, refine] for t in near]
        )
    chosen = (
        fitted.best_epoch_, fitted.k_, fitted.tau_, fitted.n_levels_, fitted.min_cluster_size_, fitted.refine_,
    )
    assert window[chosen] == pytest.approx(max(window.values()))
    # The reported score is the chosen setting's own fold mean, not the window's.
    assert fitted.validation_["score"] == pytest.approx(means[chosen])
    # Every setting was scored for levels 1 to max_levels in both folds.
    table = fitted.history_[1]["validation_table"]
    assert {row[2] for row in table} == set(range(1, fitted.max_levels + 1))
    # With refine=None both the plain and the refined clusters were scored.
    assert {row[4] for row in table} == {False, True}


def test_kept_weights_match_chosen_epoch():
    # Without a refit the fold's kept weights are the model: their epoch must be the chosen one.
    features, labels = blobs(num_classes=30, per_class=20, seed=0)
    model = HiLander(**{**SMALL, "eval_every": 1}, validation_folds=1, refit=False).fit(features, labels)
    scored = [(record["validation_score"], -record["epoch"]) for record in model.history_]
    assert model.best_epoch_ == -max(scored)[1]
    # Each epoch's score is its best setting ranked over the tau window, as the choice ranks them.
    for record in model.history_:
        scores = {tuple(row[:5]): row[5] for row in record["validation_table"]}
        taus = sorted({key[1] for key in scores})
        window = []
        for k, tau, levels, min_size, refine in scores:
            index = taus.index(tau)
            near = taus[max(0, index - 2) : index + 3]
            window.append(np.mean([scores[k, t, levels, min_size, refine] for t in near]))
        assert record["validation_score"] == pytest.approx(max(window))


def test_tau_window_prefers_plateau_to_cliff():
    # Setting A peaks at tau 0.5 with a cliff beside it; setting B is flat just below that peak.
    cliff = dict(zip((0.3, 0.4, 0.5, 0.6, 0.7), (0.50, 0.55, 0.80, 0.40, 0.30)))
    plateau = dict(zip((0.3, 0.4, 0.5, 0.6, 0.7), (0.75, 0.76, 0.77, 0.76, 0.75)))
    scores = {(5, 10, tau, 2, 0, False): value for tau, value in cliff.items()}
    scores.update({(5, 10, tau, 2, 8, False): value for tau, value in plateau.items()})
    assert max(scores, key=scores.get) == (5, 10, 0.5, 2, 0, False)
    smoothed = _smooth_over_tau(scores)
    assert max(smoothed, key=smoothed.get)[4] == 8
    # At the grid's edge the window is cut: tau 0.3 averages 0.3, 0.4 and 0.5 only.
    assert smoothed[5, 10, 0.3, 2, 0, False] == pytest.approx((0.50 + 0.55 + 0.80) / 3)
    assert smoothed[5, 10, 0.5, 2, 0, False] == pytest.approx(np.mean(list(cliff.values())))


def test_fold_settings_rejected():
    features, labels = blobs(num_classes=6, per_class=5, seed=0)
    with pytest.raises(ValueError, match="refit=False needs validation_folds=1"):
        HiLander(refit=False).fit(features, labels)
    with pytest.raises(ValueError, match="validation_folds=0 is invalid"):
        HiLander(validation_folds=0).fit(features, labels)


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


def test_model_without_shared_neighbor_setting_loads_as_before(tmp_path):
    # Files written before the shared-neighbour input existed have no such parameter. They must
    # load as models that score links without it and predict as they did when saved.
    features, labels = blobs(num_classes=30, per_class=20, seed=0)
    old = HiLander(**SMALL, shared_neighbors=False).fit(features, labels)
    path = tmp_path / "old.safetensors"
    old.save(path)

    def drop_setting(metadata):
        config = json.loads(metadata["config"])
        del config["params"]["shared_neighbors"]
        metadata["config"] = json.dumps(config)

    _rewrite_model(path, drop_setting)
    loaded = HiLander.load(path)
    assert loaded.shared_neighbors is False
    assert loaded.model_.shared_neighbors is False
    test, _ = blobs(num_classes=10, per_class=20, seed=3)
    assert np.array_equal(loaded.predict(test), old.predict(test))


def test_shared_neighbor_model_round_trips(fitted, tmp_path):
    assert fitted.shared_neighbors is True
    assert fitted.model_.shared_neighbors is True
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    loaded = HiLander.load(path)
    assert loaded.model_.shared_neighbors is True


def test_load_rejects_newer_format(fitted, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    metadata["format_version"] = "99"
    save_file(load_file(str(path)), str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"uses model format 99 \(written by hilander 0\.1\.0\).*upgrade hilander"):
        HiLander.load(path)


class _CreateFileOnLoad:
    """Pickles to a call of open(path, "w"), which creates ``path`` when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_rejects_pickle_without_running_it(tmp_path):
    import pickle

    import torch

    marker = tmp_path / "executed"
    payload = pickle.dumps(_CreateFileOnLoad(str(marker)))
    pickle.loads(payload)
    assert marker.exists(), "the payload must run when unpickled, or this test proves nothing"
    marker.unlink()

    (tmp_path / "model.safetensors").write_bytes(payload)
    (tmp_path / "model.pkl").write_bytes(payload)
    torch.save(_CreateFileOnLoad(str(marker)), tmp_path / "model.pt")
    for name in ("model.safetensors", "model.pkl", "model.pt"):
        with pytest.raises(ValueError, match="not a hilander model file"):
            HiLander.load(tmp_path / name)
        assert not marker.exists(), name


def _rewrite_model(path, edit_metadata=None, edit_tensors=None):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    if edit_metadata:
        edit_metadata(metadata)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata=metadata)


def _set_config(metadata, **changes):
    config = json.loads(metadata["config"])
    config["params"].update(changes)
    metadata["config"] = json.dumps(config)


def _set_top_config(metadata, **changes):
    config = json.loads(metadata["config"])
    config.update(changes)
    metadata["config"] = json.dumps(config)


@pytest.mark.parametrize(
    "edit_metadata, edit_tensors, message",
    [
        (lambda m: m.update(format_version="one"), None, "invalid model format version 'one'"),
        (lambda m: m.update(config="{not json"), None, "damaged hilander model .JSONDecodeError"),
        (lambda m: m.pop("config"), None, "damaged hilander model .KeyError"),
        (lambda m: m.update(format="other"), None, "not a hilander model .no 'hilander-model' header"),
        # A header asking for a network of 10^9 units must fail on shapes, before allocating it.
        (lambda m: _set_config(m, hidden=10**9), None, "damaged hilander model .RuntimeError: Error.s. in loading"),
        (lambda m: _set_config(m, conv="mystery"), None, "conv='mystery' is invalid"),
        (lambda m: _set_config(m, shared_neighbors="yes"), None, "shared_neighbors='yes' is invalid"),
        # A file that claims no shared-neighbour input while its head has one more weight for it.
        (lambda m: _set_config(m, shared_neighbors=False), None, "damaged hilander model .RuntimeError"),
        (lambda m: _set_top_config(m, refine_="false"), None, "refine_='false' is not true or false"),
        (None, lambda t: t.pop(next(iter(t))), "Missing key"),
        (None, lambda t: t.update({name: v.double() for name, v in t.items()}), "has dtype torch.float64, not float32"),
    ],
)
def test_load_rejects_damaged_model(fitted, tmp_path, edit_metadata, edit_tensors, message):
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    _rewrite_model(path, edit_metadata, edit_tensors)
    with pytest.raises(ValueError, match=message):
        HiLander.load(path)


def test_model_stores_versions(fitted, tmp_path):
    import faiss
    import torch
    from safetensors import safe_open

    from hilander import __version__

    path = tmp_path / "model.safetensors"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["hilander_version"] == __version__
    assert metadata["torch_version"] == torch.__version__
    assert metadata["faiss_version"] == faiss.__version__
    loaded = HiLander.load(path)
    assert loaded.versions_ == fitted.versions_
    assert loaded.versions_["faiss"] == faiss.__version__


def test_nan_features_rejected():
    features, labels = blobs(num_classes=5, per_class=10)
    features[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row \(counted from 0: row 4\)"):
        HiLander(**SMALL).fit(features, labels)


def test_predict_drop_nonfinite_keeps_rows_aligned(fitted):
    features, _ = blobs(num_classes=6, per_class=15, seed=8)
    bad = np.array([0, 17, 50, 89])
    damaged = features.copy()
    damaged[bad[:2], 3] = np.nan
    damaged[bad[2:], 0] = -np.inf
    with pytest.raises(ValueError, match=r"4 rows \(counted from 0: rows 0, 17, 50, 89\)"):
        fitted.predict(damaged)
    predicted = fitted.predict(damaged, drop_nonfinite=True)
    keep = np.setdiff1d(np.arange(90), bad)
    assert predicted.shape == (90,)
    assert predicted[bad].tolist() == [-1, -1, -1, -1]
    assert np.array_equal(predicted[keep], fitted.predict(features[keep]))


def test_predict_zero_rows_become_singletons(fitted, caplog):
    features, _ = blobs(num_classes=6, per_class=15, seed=9)
    zero = np.array([3, 40])
    with_zeros = features.copy()
    with_zeros[zero] = 0.0
    keep = np.setdiff1d(np.arange(90), zero)
    predicted = fitted.predict(with_zeros)
    expected = fitted.predict(features[keep])
    assert np.array_equal(predicted[keep], expected)
    assert predicted[zero].tolist() == [expected.max() + 1, expected.max() + 2]
    assert "2 of 90 rows of X are all zeros (rows 3, 40)" in caplog.text
    assert fitted.predict(np.zeros((4, 16))).tolist() == [0, 1, 2, 3]


def test_predict_hierarchy_levels_keep_dropped_rows(fitted):
    features, _ = blobs(num_classes=6, per_class=15, seed=10)
    features[5] = np.nan
    result = fitted.predict_hierarchy(features, drop_nonfinite=True)
    assert result.level_labels
    for level in result.level_labels:
        assert level.shape == (90,)
        assert level[5] == -1
        assert level.min() == -1


def test_fit_skips_dropped_and_zero_rows():
    features, labels = blobs(num_classes=12, per_class=15, seed=11)
    test_features, _ = blobs(num_classes=6, per_class=15, seed=12)
    damaged = features.copy()
    damaged[[4, 100]] = np.nan
    damaged[[7]] = 0.0
    with pytest.raises(ValueError, match=r"rows 4, 100\)"):
        HiLander(**SMALL).fit(damaged, labels)
    keep = np.setdiff1d(np.arange(180), [4, 7, 100])
    dropped = HiLander(**SMALL).fit(damaged, labels, drop_nonfinite=True)
    clean = HiLander(**SMALL).fit(features[keep], labels[keep])
    assert np.array_equal(dropped.predict(test_features), clean.predict(test_features))


def test_single_class_rejected():
    features, labels = blobs(num_classes=1, per_class=30)
    with pytest.raises(ValueError, match=r"y has 1 class \(\[0\]\) among the rows used.*at least 2 classes"):
        HiLander(**SMALL).fit(features, labels)
    features, labels = blobs(num_classes=2, per_class=15)
    features[labels == 1] = 0.0
    with pytest.raises(ValueError, match="y has 1 class"):
        HiLander(**SMALL).fit(features, labels)


def test_identical_samples_cluster_without_error(fitted):
    same = np.tile(blobs(num_classes=1, per_class=1, seed=13)[0], (40, 1))
    predicted = fitted.predict(same)
    assert predicted.shape == (40,)
    assert set(np.unique(predicted)) == set(range(predicted.max() + 1))
    assert np.array_equal(predicted, fitted.predict(same))


def test_exact_duplicates_do_not_break_decoding(fitted):
    features, labels = blobs(num_classes=8, per_class=10, seed=14)
    duplicated = np.repeat(features, 4, axis=0)
    predicted = fitted.predict(duplicated)
    scores = evaluate(np.repeat(labels, 4), predicted)
    assert scores["pairwise_f"] > 0.8
    assert scores["bcubed_f"] > 0.8


def test_fit_on_duplicates_and_identical_classes():
    features, labels = blobs(num_classes=10, per_class=6, seed=15)
    model = HiLander(**SMALL).fit(np.repeat(features, 3, axis=0), np.repeat(labels, 3))
    assert model.predict(features).shape == (60,)
    identical = np.ones((40, 16), dtype=np.float32)
    model = HiLander(**SMALL).fit(identical, np.repeat([0, 1], 20))
    assert model.predict(identical).shape == (40,)


def test_large_validation_fraction_keeps_training_classes():
    features, labels = blobs(num_classes=4, per_class=12, seed=16)
    model = HiLander(**{**SMALL, "validation_fraction": 0.9}).fit(features, labels)
    assert model.k_ >= 2


def test_wrong_label_count_rejected():
    features, labels = blobs(num_classes=5, per_class=10)
    with pytest.raises(ValueError, match="y has 49 labels but there are 50 samples"):
        HiLander(**SMALL).fit(features, labels[:-1])


def test_fewer_samples_than_k_lowers_k(fitted, caplog):
    features, labels = blobs(num_classes=2, per_class=3)
    small = HiLander(**SMALL).fit(features, labels)
    assert small.k_ <= 6
    assert "X has 6 samples, fewer than k=40 neighbours; fitting with k=6 instead" in caplog.text
    assert small.predict(features).shape == (6,)

    caplog.clear()
    predicted = fitted.predict(features[:2])
    assert predicted.shape == (2,)
    assert f"fewer than the model's k={fitted.k_} neighbours; clustering with k=2 instead" in caplog.text
    assert fitted.predict(features[:1]).tolist() == [0]


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


@pytest.mark.parametrize("value", [1, 1.0, "yes"])
def test_non_boolean_refine_rejected(value):
    features, labels = blobs(num_classes=4, per_class=5)
    with pytest.raises(ValueError, match=f"refine={value!r} is invalid"):
        HiLander(refine=value).fit(features, labels)


def test_refine_without_min_size_warns(caplog):
    features, labels = blobs(num_classes=6, per_class=10)
    HiLander(**{**SMALL, "epochs": 1, "eval_every": 1}, refine=True, min_cluster_size=0).fit(features, labels)
    assert "refine=True with min_cluster_size=0" in caplog.text


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


def test_training_graphs_share_level_zero_across_link_drop():
    features, labels = blobs(num_classes=10, per_class=20, seed=6)
    model = HiLander(train_knn=((5, 2),), train_link_drop=(0.0, 0.5))
    graphs = model._build_graphs(features, labels, np.random.default_rng(0), None)
    # One level-0 graph over all samples, then one level-1 graph per link-drop value.
    assert [graph.num_nodes for graph in graphs][0] == 200
    assert len(graphs) == 3
    assert all(graph.num_nodes < 200 for graph in graphs[1:])
