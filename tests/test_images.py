"""Image input, encoder training, feature extraction and the image pipeline on small generated images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hilander import HiLander
from hilander.encoder import EncoderSpec, augment_batch, train_encoder
from hilander.features import extract_features, extract_features_from_paths, extract_features_to_file
from hilander.images import load_image_folder, load_image_list, load_omniglot
from hilander.pipeline import ImageHiLander


def _class_images(num_classes: int, per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate (N, 1, size, size) uint8 images: a random blob pattern per class, shifted and noisy."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((num_classes, size, size)) < 0.3).astype(np.float64)
    images, labels = [], []
    for label, prototype in enumerate(prototypes):
        for _ in range(per_class):
            shifted = np.roll(prototype, shift=tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
            noisy = np.clip(shifted + rng.normal(0, 0.15, shifted.shape), 0, 1)
            images.append((noisy * 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64)


def _write_tree(root, images: np.ndarray, labels: np.ndarray) -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class_{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / f"{index:04d}.png")


SMALL_SPEC = EncoderSpec(image_size=16, blocks=2, width=16, embedding_dim=16)


def test_image_folder_reads_tree(tmp_path):
    images, labels = _class_images(3, 4, 16, seed=0)
    _write_tree(tmp_path, images, labels)
    loaded = load_image_folder(tmp_path, image_size=16)
    assert loaded.images.shape == (12, 1, 16, 16)
    assert loaded.images.dtype == np.uint8
    assert loaded.class_names == ["class_00", "class_01", "class_02"]
    np.testing.assert_array_equal(loaded.labels, labels)
    np.testing.assert_array_equal(loaded.images, images)  # PNG is lossless and the size unchanged.


def test_image_folder_corrupt_file(tmp_path):
    images, labels = _class_images(2, 3, 16, seed=0)
    _write_tree(tmp_path, images, labels)
    corrupt = tmp_path / "class_01" / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    with pytest.raises(OSError, match="broken.png"):
        load_image_folder(tmp_path, image_size=16)
    loaded = load_image_folder(tmp_path, image_size=16, on_error="skip")
    assert loaded.images.shape[0] == 6
    assert [path for path, _ in loaded.skipped] == [str(corrupt)]
    assert not any(path.endswith("broken.png") for path in loaded.paths)
    np.testing.assert_array_equal(loaded.labels, labels)


def test_image_folder_rejects_flat_folder(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="at least two class subfolders"):
        load_image_folder(tmp_path)


def test_image_folder_resizes_and_converts(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(tmp_path / name / "x.jpg")
    gray = load_image_folder(tmp_path, image_size=20)
    rgb = load_image_folder(tmp_path, image_size=20, channels=3)
    assert gray.images.shape == (2, 1, 20, 20)
    assert rgb.images.shape == (2, 3, 20, 20)


def test_image_list_file_and_folder(tmp_path):
    images, _ = _class_images(1, 3, 16, seed=1)
    folder = tmp_path / "new"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{index}.png")
    (folder / "notes.txt").write_text("not an image")
    from_folder = load_image_list(folder, image_size=16)
    list_file = tmp_path / "list.txt"
    list_file.write_text("# images to cluster\nnew/2.png\n\nnew/0.png\n")
    from_list = load_image_list(list_file, image_size=16)
    assert from_folder.images.shape == (3, 1, 16, 16)
    assert from_folder.labels is None
    np.testing.assert_array_equal(from_list.images, images[[2, 0]])


def test_image_list_missing_file(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text("absent.png\n")
    with pytest.raises(OSError, match="absent.png"):
        load_image_list(list_file)


def test_image_options_rejected():
    with pytest.raises(ValueError, match="channels"):
        load_image_list(".", channels=2)
    with pytest.raises(ValueError, match="on_error"):
        load_image_list(".", on_error="ignore")


def test_augment_batch_keeps_shape_and_seed():
    batch = torch.rand(5, 1, 16, 16)
    first = augment_batch(batch, torch.Generator().manual_seed(3))
    second = augment_batch(batch, torch.Generator().manual_seed(3))
    assert first.shape == batch.shape
    assert torch.equal(first, second)
    assert not torch.equal(first, batch)


@pytest.mark.parametrize("loss", ["softmax", "cosface", "arcface"])
def test_encoder_loss_falls(loss):
    torch.set_num_threads(1)
    images, labels = _class_images(6, 16, 16, seed=2)
    result = train_encoder(images, labels, SMALL_SPEC, loss=loss, epochs=6, batch_size=32, lr=5e-3, seed=0)
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0]
    assert not result.encoder.training
    assert result.spec.mean[0] > 0.0


def test_encoder_rejects_wrong_shape():
    images, labels = _class_images(2, 4, 16, seed=0)
    with pytest.raises(ValueError, match=r"expects \(1, 28, 28\)"):
        train_encoder(images, labels, EncoderSpec(), epochs=1)
    with pytest.raises(ValueError, match="uint8"):
        train_encoder(images.astype(np.float32), labels, SMALL_SPEC, epochs=1)


def test_encoder_checkpoint_resume(tmp_path):
    torch.set_num_threads(1)
    images, labels = _class_images(4, 8, 16, seed=3)
    options = dict(loss="softmax", epochs=3, batch_size=16, seed=1)
    whole = train_encoder(images, labels, SMALL_SPEC, **options)

    def interrupt_in_epoch_two(stage, completed, total, status):
        if status.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_encoder(images, labels, SMALL_SPEC, **options, checkpoint_dir=tmp_path, progress=interrupt_in_epoch_two)
    resumed = train_encoder(images, labels, SMALL_SPEC, **options, checkpoint_dir=tmp_path, resume=True)
    assert [record["epoch"] for record in resumed.history] == [1, 2, 3]
    for name, value in whole.encoder.state_dict().items():
        assert torch.equal(value, resumed.encoder.state_dict()[name]), name


def test_features_shape_dtype_norm(tmp_path):
    images, labels = _class_images(3, 5, 16, seed=4)
    result = train_encoder(images, labels, SMALL_SPEC, loss="softmax", epochs=1, batch_size=8)
    features = extract_features(result.encoder, result.spec, images, batch_size=4)
    assert features.shape == (15, 16)
    assert features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)

    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image[0]).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"garbage")
    paths.insert(2, tmp_path / "bad.png")
    kept = extract_features_to_file(result.encoder, result.spec, paths, tmp_path / "f.npy", batch_size=4, on_error="skip")
    written = np.load(tmp_path / "f.npy")
    assert written.shape == (15, 16)
    assert 2 not in kept
    np.testing.assert_allclose(written, features, atol=1e-5)

    in_memory, positions = extract_features_from_paths(result.encoder, result.spec, paths, batch_size=4, on_error="skip")
    np.testing.assert_array_equal(positions, kept)
    np.testing.assert_allclose(in_memory, features, atol=1e-5)
    with pytest.raises(OSError, match="bad.png"):
        extract_features_from_paths(result.encoder, result.spec, paths, batch_size=4)


def test_omniglot_loader():
    try:
        evaluation = load_omniglot("evaluation")
    except FileNotFoundError:
        pytest.skip("Omniglot not found: set HILANDER_DATA to the folder that contains omniglot/ to run this test")
    assert evaluation.images.shape == (13180, 1, 28, 28)
    assert np.unique(evaluation.labels).shape[0] == 659
    assert evaluation.images.mean() < 60  # Ink is 255 on a 0 background, and most pixels are background.
    assert np.unique(evaluation.groups).shape[0] == 20  # alphabets


def _small_pipeline() -> ImageHiLander:
    return ImageHiLander(
        spec=SMALL_SPEC, encoder_loss="softmax", encoder_epochs=4, encoder_batch_size=32, encoder_lr=5e-3, encoder_fraction=0.5,
        lander=dict(epochs=2, hidden=16, train_knn=((5, 2),), validation_folds=1, validation_fraction=0.3),
    )


def test_pipeline_round_trip(tmp_path):
    torch.set_num_threads(1)
    images, labels = _class_images(10, 12, 16, seed=5)
    new_images, _ = _class_images(4, 12, 16, seed=6)
    model = _small_pipeline().fit(images, labels)
    predicted = model.predict(new_images)
    assert predicted.shape == (48,)
    model.save(tmp_path / "model.safetensors")
    loaded = ImageHiLander.load(tmp_path / "model.safetensors")
    np.testing.assert_array_equal(loaded.predict(new_images), predicted)
    assert loaded.encoder_history_ == model.encoder_history_
    with pytest.raises(ValueError, match="ImageHiLander.load"):
        HiLander.load(tmp_path / "model.safetensors")


def test_pipeline_custom_encoder(tmp_path):
    torch.set_num_threads(1)
    images, labels = _class_images(6, 10, 16, seed=7)
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 16))
    spec = EncoderSpec(image_size=16, embedding_dim=16, blocks=1)
    model = ImageHiLander(spec=spec, encoder=encoder, lander=_small_pipeline().lander).fit(images, labels)
    model.save(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="custom encoder"):
        ImageHiLander.load(tmp_path / "model.safetensors")
    fresh = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 16))
    loaded = ImageHiLander.load(tmp_path / "model.safetensors", encoder=fresh)
    np.testing.assert_array_equal(loaded.predict(images), model.predict(images))


def test_cli_train_and_cluster_images(tmp_path):
    from typer.testing import CliRunner

    from hilander.cli import app

    runner = CliRunner()
    torch.set_num_threads(1)
    images, labels = _class_images(8, 10, 16, seed=8)
    _write_tree(tmp_path / "train", images, labels)
    model = tmp_path / "model.safetensors"
    result = runner.invoke(
        app,
        ["train", str(tmp_path / "train"), "-o", str(model), "--image-size", "16", "--encoder-epochs", "2",
         "--epochs", "2", "--hidden", "16", "--train-knn", "5:2", "--validation-folds", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "model written" in result.output

    new_images, _ = _class_images(3, 6, 16, seed=9)
    folder = tmp_path / "new"
    folder.mkdir()
    for index, image in enumerate(new_images):
        Image.fromarray(image[0]).save(folder / f"{index:02d}.png")
    (folder / "05.png").write_bytes(b"broken")
    output = tmp_path / "clusters.txt"
    result = runner.invoke(app, ["cluster", str(model), str(folder), "-o", str(output)])
    assert result.exit_code == 2
    assert "05.png" in result.output
    assert not output.exists()

    result = runner.invoke(app, ["cluster", str(model), str(folder), "-o", str(output), "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in output.read_text().splitlines()]
    assert len(ids) == 18
    assert ids[5] == -1
    assert min(ids[:5] + ids[6:]) >= 0
    metadata = json.loads((tmp_path / "clusters.txt.json").read_text())
    assert metadata["images"]["skipped"] == [str(folder / "05.png")]

    named = tmp_path / "clusters.tsv"
    result = runner.invoke(app, ["cluster", str(model), str(folder), "-o", str(named), "--skip-bad-images"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in named.read_text().splitlines()]
    assert rows[0] == ["path", "cluster_id"]
    assert rows[6] == [str(folder / "05.png"), "-1"]
    assert [int(cluster) for _, cluster in rows[1:]] == ids

    result = runner.invoke(app, ["cluster", str(model), str(folder), "-o", str(tmp_path / "x.txt"), "--dim", "4"])
    assert result.exit_code == 2
    assert "apply to feature files only" in result.output


def test_cli_train_images_rejects_labels(tmp_path):
    from typer.testing import CliRunner

    from hilander.cli import app

    (tmp_path / "tree" / "a").mkdir(parents=True)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "tree"), "-o", str(tmp_path / "m"), "--labels", "x.meta"])
    assert result.exit_code == 2
    assert "image folder" in result.output


def test_pipeline_split_keeps_groups():
    labels = np.repeat(np.arange(12), 3)
    groups = labels // 3  # four groups of three classes
    pipeline = ImageHiLander(encoder_fraction=0.5)
    encoder_samples, lander_samples = pipeline._split_classes(labels, groups)
    encoder_groups = set(groups[encoder_samples])
    lander_groups = set(groups[lander_samples])
    assert len(encoder_groups) == 2
    assert len(lander_groups) == 2
    assert not encoder_groups & lander_groups
    assert np.array_equal(encoder_samples, ~lander_samples)


def test_pipeline_split_rejects_bad_groups():
    labels = np.repeat(np.arange(4), 2)
    with pytest.raises(ValueError, match="spans 2 groups"):
        ImageHiLander()._split_classes(labels, np.arange(8) % 2)
    with pytest.raises(ValueError, match="encoder_fraction=0.9 of 4 classes leaves 4 classes"):
        ImageHiLander(encoder_fraction=0.9)._split_classes(labels, None)


def test_pipeline_lander_classes_unseen(monkeypatch):
    import hilander.pipeline

    trained_on = []

    def recording_train_encoder(images, labels, *args, **kwargs):
        trained_on.append(np.unique(labels))
        return train_encoder(images, labels, *args, **kwargs)

    monkeypatch.setattr(hilander.pipeline, "train_encoder", recording_train_encoder)
    torch.set_num_threads(1)
    images, labels = _class_images(12, 8, 16, seed=10)
    model = _small_pipeline().fit(images, labels)
    assert model.lander_classes_.shape[0] == 6
    assert trained_on[0].shape[0] == 6
    assert not set(trained_on[0]) & set(model.lander_classes_)


def test_truncated_image_named(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    with pytest.raises(OSError, match="cut.png: OSError: image file is truncated"):
        load_image_list(tmp_path)


def test_image_list_rejects_feature_file(tmp_path):
    np.save(tmp_path / "features.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="is a feature file"):
        load_image_list(tmp_path / "features.npy")


def test_cli_wrong_input_kind(tmp_path):
    from typer.testing import CliRunner

    from hilander.cli import app

    runner = CliRunner()
    features = tmp_path / "f.npy"
    np.save(features, np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    (tmp_path / "images").mkdir()
    result = runner.invoke(app, ["train", str(features), "--labels", str(tmp_path / "images"), "-o", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "is a folder; --labels takes a label file" in result.output


def test_cli_interrupt_names_image_checkpoints(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import hilander.pipeline
    from hilander.cli import app

    images, labels = _class_images(8, 6, 16, seed=11)
    _write_tree(tmp_path / "train", images, labels)
    def interrupted_fit(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hilander.pipeline.HiLander, "fit", interrupted_fit)
    result = CliRunner().invoke(
        app,
        ["train", str(tmp_path / "train"), "-o", str(tmp_path / "m.safetensors"), "--image-size", "16",
         "--encoder-epochs", "1", "--checkpoint-dir", str(tmp_path / "ck")],
    )
    assert result.exit_code == 130
    assert f"encoder epoch 1 in {tmp_path / 'ck' / 'encoder'}" in result.output
    assert "--resume" in result.output
