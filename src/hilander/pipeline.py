"""``ImageHiLander``: the whole method from pixels, an image encoder followed by LANDER.

``fit`` trains the encoder as a classifier on the labelled meta-training images (stage one),
extracts L2-normalised features of those images with it, and fits a :class:`~hilander.HiLander`
on the features (stages two to five). ``predict`` embeds new images with the encoder and
clusters the features with LANDER. ``save`` writes encoder and LANDER into one safetensors file,
which loads without running code from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from . import __version__
from ._files import atomic_path
from ._runtime import runtime_versions
from .encoder import ENCODER_LOSSES, EncoderSpec, build_encoder, train_encoder
from .estimator import HiLander, check_device, read_model_file
from .features import extract_features
from .inference import HierarchyResult

__all__ = ["IMAGE_FORMAT_VERSION", "ImageHiLander"]

logger = logging.getLogger(__name__)

IMAGE_FORMAT_VERSION = 1
_IMAGE_FORMAT_NAME = "hilander-image-model"


class ImageHiLander:
    """Cluster images of unseen classes: a CNN encoder trained on labelled images, then LANDER.

    Args:
        spec: encoder architecture and input size (:class:`~hilander.encoder.EncoderSpec`).
            Default: the 4-block convolutional encoder for 28 x 28 grayscale images, with
            128-d embeddings.
        encoder: a pretrained ``torch.nn.Module`` to use instead of training one. It must map
            (N, C, H, W) float inputs, standardised with ``spec.mean`` and ``spec.std``, to
            (N, spec.embedding_dim) embeddings. It is not trained further.
        encoder_loss: ``"softmax"``, ``"cosface"`` or ``"arcface"``.
        encoder_epochs, encoder_batch_size, encoder_lr: encoder training settings.
        encoder_fraction: share of the training classes that train the encoder. LANDER trains
            on the features of the other classes, which the encoder has not seen, so that it
            learns from features like those of the unseen classes it will cluster. With 1.0 both
            train on all classes, so LANDER learns from features of classes the encoder has
            fitted, which are tighter than those of new classes.
        augment: random rotation, shift and zoom of training images.
        flip: mirror training images left to right too (for natural images, not characters).
        lander: settings of the :class:`~hilander.HiLander` that clusters the features, as a
            dict of its parameters. ``device`` and ``random_state`` are taken from this object.
        batch_size: images per forward pass in feature extraction.
        device: torch device for both stages.
        random_state: seed for both stages.

    Attributes (after ``fit`` or ``load``):
        encoder_: the encoder, in eval mode.
        spec_: its :class:`~hilander.encoder.EncoderSpec`, with the pixel statistics.
        lander_: the fitted :class:`~hilander.HiLander`.
        lander_classes_: the training classes whose features LANDER was fitted on (after ``fit``
            only); with ``encoder_fraction`` below 1 the encoder never saw them.
        encoder_history_: per-epoch loss and throughput of the encoder training (empty for a
            given ``encoder``).
        timings_: seconds spent on each step of ``fit``.
    """

    def __init__(
        self,
        spec: EncoderSpec | None = None,
        encoder: nn.Module | None = None,
        encoder_loss: str = "softmax",
        encoder_epochs: int = 25,
        encoder_batch_size: int = 128,
        encoder_lr: float = 2e-3,
        encoder_fraction: float = 0.7,
        augment: bool = True,
        flip: bool = False,
        lander: dict | None = None,
        batch_size: int = 512,
        device: str = "cpu",
        random_state: int = 0,
    ) -> None:
        self.spec = spec
        self.encoder = encoder
        self.encoder_loss = encoder_loss
        self.encoder_epochs = encoder_epochs
        self.encoder_batch_size = encoder_batch_size
        self.encoder_lr = encoder_lr
        self.encoder_fraction = encoder_fraction
        self.augment = augment
        self.flip = flip
        self.lander = lander
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    def _validate_params(self) -> None:
        if self.encoder_loss not in ENCODER_LOSSES:
            raise ValueError(f"encoder_loss must be one of {', '.join(ENCODER_LOSSES)}, got {self.encoder_loss!r}")
        if self.encoder is not None and not isinstance(self.encoder, nn.Module):
            raise ValueError(f"encoder must be a torch.nn.Module, got {type(self.encoder).__name__}")
        if self.encoder is not None and self.spec is None:
            raise ValueError(
                "a given encoder needs spec=EncoderSpec(...) with its input size, channels, "
                "embedding_dim and the pixel mean and std it expects"
            )
        if not 0.0 < self.encoder_fraction <= 1.0:
            raise ValueError(f"encoder_fraction must be in (0, 1], got {self.encoder_fraction!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.lander is not None and not isinstance(self.lander, dict):
            raise ValueError(f"lander must be a dict of HiLander parameters, got {type(self.lander).__name__}")
        check_device(self.device)

    def _new_lander(self) -> HiLander:
        params = dict(self.lander or {})
        params.update(device=self.device, random_state=self.random_state)
        return HiLander(**params)

    def _split_classes(self, labels: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
        """Split the classes into those that train the encoder and those that train LANDER.

        With ``groups``, whole groups go to one side, so that no group (an alphabet, say) is
        seen by both. Returns two boolean masks over the samples.
        """
        classes, class_of = np.unique(labels, return_inverse=True)
        if groups is None:
            unit_of_class = np.arange(classes.shape[0])
        else:
            groups = np.asarray(groups)
            if groups.shape != labels.shape:
                raise ValueError(f"groups must have one entry per image, shape {labels.shape}, got {groups.shape}")
            group_ids, group_of = np.unique(groups, return_inverse=True)
            unit_of_class = np.full(classes.shape[0], -1)
            for class_index in range(classes.shape[0]):
                members = np.unique(group_of[class_of == class_index])
                if members.shape[0] != 1:
                    raise ValueError(
                        f"class {classes[class_index]!r} spans {members.shape[0]} groups; each class must "
                        "belong to one group"
                    )
                unit_of_class[class_index] = members[0]
        units = np.unique(unit_of_class)
        num_encoder = int(round(self.encoder_fraction * units.shape[0]))
        rng = np.random.default_rng(self.random_state)
        encoder_units = rng.permutation(units)[:num_encoder]
        encoder_classes = np.isin(unit_of_class, encoder_units)
        num_encoder_classes = int(encoder_classes.sum())
        num_lander_classes = classes.shape[0] - num_encoder_classes
        if num_encoder_classes < 2 or num_lander_classes < 2:
            kind = f" in {units.shape[0]} groups" if groups is not None else ""
            raise ValueError(
                f"encoder_fraction={self.encoder_fraction} of {classes.shape[0]} classes{kind} leaves "
                f"{num_encoder_classes} classes for the encoder and {num_lander_classes} for LANDER, and "
                "each needs at least 2; use more classes or encoder_fraction=1.0"
            )
        encoder_samples = encoder_classes[class_of]
        return encoder_samples, ~encoder_samples

    def fit(
        self,
        images: np.ndarray,
        labels,
        progress: Callable | None = None,
        *,
        groups=None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> "ImageHiLander":
        """Train the encoder on labelled images, extract features and fit LANDER on them.

        With ``encoder_fraction`` below 1, the encoder trains on that share of the classes and
        LANDER on the features of the rest.

        Args:
            images: (N, C, H, W) uint8 pixels of the meta-training classes, as read by
                :mod:`hilander.images`.
            labels: (N,) class labels.
            groups: optional (N,) group of each image, such as the alphabet of a character.
                The split between encoder and LANDER classes then keeps each group on one side.
            progress: optional ``progress(stage, completed, total, status=None)`` callback.
            checkpoint_dir: folder for checkpoints of both trainings (``encoder/`` and
                ``lander/`` inside it), so that an interrupted fit can resume.
            resume: continue from the checkpoints in ``checkpoint_dir``.

        Raises:
            ValueError: for invalid parameters, images or labels.
        """
        self._validate_params()
        if resume and checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoints to continue")
        labels = np.asarray(labels)
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        timings: dict[str, float] = {}

        encoder_samples = lander_samples = np.ones(labels.shape[0], dtype=bool)
        if self.encoder is None and self.encoder_fraction < 1.0:
            encoder_samples, lander_samples = self._split_classes(labels, groups)
            num_lander_classes = np.unique(labels[lander_samples]).shape[0]
            logger.info(
                "encoder trains on %d classes, LANDER on %d others",
                np.unique(labels[encoder_samples]).shape[0], num_lander_classes,
            )
            if num_lander_classes < 10:
                logger.warning(
                    "encoder_fraction=%s leaves LANDER only %d classes, too few to validate its settings "
                    "on held-out classes; give more training classes or a lower encoder_fraction "
                    "(--encoder-fraction)", self.encoder_fraction, num_lander_classes,
                )

        started = time.perf_counter()
        if self.encoder is None:
            result = train_encoder(
                images[encoder_samples], labels[encoder_samples], self.spec,
                loss=self.encoder_loss, epochs=self.encoder_epochs, batch_size=self.encoder_batch_size,
                lr=self.encoder_lr, augment=self.augment, flip=self.flip, device=self.device,
                seed=self.random_state, checkpoint_dir=folder / "encoder" if folder else None, resume=resume,
                progress=progress,
            )
            self.encoder_, self.spec_, self.encoder_history_ = result.encoder, result.spec, result.history
        else:
            self.spec_ = EncoderSpec.from_json(self.spec.to_json())
            self.encoder_ = self.encoder.to(self.device).eval()
            self.encoder_history_ = []
        timings["encoder"] = time.perf_counter() - started

        started = time.perf_counter()
        features = extract_features(self.encoder_, self.spec_, images[lander_samples], self.batch_size, progress=progress)
        timings["features"] = time.perf_counter() - started

        started = time.perf_counter()
        lander = self._new_lander()
        lander.fit(
            features, labels[lander_samples], progress=progress,
            checkpoint_dir=folder / "lander" if folder else None, resume=resume,
        )
        self.lander_ = lander
        self.lander_classes_ = np.unique(labels[lander_samples])
        timings["lander"] = time.perf_counter() - started
        self.timings_ = timings
        logger.info("fit took %s", ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "lander_"):
            raise RuntimeError("this ImageHiLander is not fitted yet; call fit(images, labels) or ImageHiLander.load(path) first")

    def transform(self, images: np.ndarray, progress: Callable | None = None) -> np.ndarray:
        """Return the (N, D) float32 unit-norm features of (N, C, H, W) uint8 images."""
        self._check_fitted()
        return extract_features(self.encoder_, self.spec_, images, self.batch_size, progress=progress)

    def predict_hierarchy(self, images: np.ndarray, progress: Callable | None = None) -> HierarchyResult:
        """Cluster images; return the final labels and the assignment after every level."""
        return self.lander_.predict_hierarchy(self.transform(images, progress))

    def predict(self, images: np.ndarray, progress: Callable | None = None) -> np.ndarray:
        """Return one cluster id per image, as (N,) int64."""
        return self.predict_hierarchy(images, progress).labels

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write encoder and LANDER to one safetensors file, atomically.

        A given (not trained) encoder is saved by its weights only, marked ``custom``; loading
        such a file needs the same architecture passed as ``encoder``.
        """
        self._check_fitted()
        lander_metadata, lander_tensors = self.lander_._file_contents()
        spec = self.spec_.to_json()
        if self.encoder is not None:
            spec["architecture"] = "custom"
        metadata = {
            "format": _IMAGE_FORMAT_NAME,
            "format_version": str(IMAGE_FORMAT_VERSION),
            **{f"{library}_version": version for library, version in runtime_versions().items()},
            "lander_format_version": lander_metadata["format_version"],
            "lander_config": lander_metadata["config"],
            "encoder_spec": json.dumps(spec),
            "encoder_training": json.dumps(
                {
                    "loss": self.encoder_loss, "epochs": self.encoder_epochs,
                    "encoder_fraction": self.encoder_fraction, "history": self.encoder_history_,
                }
            ),
        }
        tensors = {f"lander.{name}": value for name, value in lander_tensors.items()}
        for name, value in self.encoder_.state_dict().items():
            tensors[f"encoder.{name}"] = value.detach().cpu().contiguous()
        with atomic_path(Path(path)) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", encoder: nn.Module | None = None) -> "ImageHiLander":
        """Read a model written by :meth:`save`. Loading runs no code from the file.

        Args:
            path: model file.
            device: torch device to put both networks on.
            encoder: for a file saved with a custom encoder, an untrained instance of the same
                architecture; its weights are replaced by the file's.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not an image model, is damaged or is of a newer format.
        """
        path = Path(path)
        metadata, tensors = read_model_file(path, device)
        if metadata.get("format") == "hilander-model":
            raise ValueError(f"{path} is an embedding model without an encoder; load it with HiLander.load")
        if metadata.get("format") != _IMAGE_FORMAT_NAME:
            raise ValueError(f"{path} is a safetensors file but not a hilander image model (no '{_IMAGE_FORMAT_NAME}' header)")
        version = metadata.get("format_version", "")
        if not version.isdigit():
            raise ValueError(f"{path} has an invalid model format version {version!r}; the file is damaged")
        if int(version) > IMAGE_FORMAT_VERSION:
            raise ValueError(
                f"{path} uses image model format {version}, but this hilander {__version__} reads format "
                f"{IMAGE_FORMAT_VERSION} and older; upgrade hilander to load it"
            )
        try:
            estimator = cls._from_file_contents(metadata, tensors, device, encoder)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"{path} is a damaged or mismatched hilander image model ({type(error).__name__}: "
                f"{str(error)[:300]}); train it again or restore it from a backup"
            ) from None
        return estimator

    @classmethod
    def _from_file_contents(cls, metadata: dict, tensors: dict, device: str, encoder: nn.Module | None) -> "ImageHiLander":
        spec_json = json.loads(metadata["encoder_spec"])
        custom = spec_json.get("architecture") == "custom"
        if custom and encoder is None:
            raise ValueError(
                "the file was saved with a custom encoder, whose code it does not contain; pass "
                "encoder= an instance of the same architecture"
            )
        spec = EncoderSpec.from_json(spec_json)

        encoder_tensors = {name[len("encoder."):]: t for name, t in tensors.items() if name.startswith("encoder.")}
        lander_tensors = {name[len("lander."):]: t for name, t in tensors.items() if name.startswith("lander.")}
        if custom:
            network = encoder
            network.load_state_dict(encoder_tensors, strict=True)
        else:
            with torch.device("meta"):
                network = build_encoder(spec)
            network.load_state_dict(encoder_tensors, strict=True, assign=True)

        lander_metadata = {
            "format_version": metadata["lander_format_version"],
            "config": metadata["lander_config"],
            **{key: value for key, value in metadata.items() if key.endswith("_version") and key != "format_version"},
        }
        lander = HiLander._from_file_contents(lander_metadata, lander_tensors, device)

        training = json.loads(metadata.get("encoder_training", "{}"))
        estimator = cls(
            spec=spec, encoder=encoder, encoder_loss=training.get("loss", "softmax"),
            encoder_epochs=training.get("epochs", 25), encoder_fraction=training.get("encoder_fraction", 1.0), device=device, random_state=lander.random_state,
        )
        estimator.spec_ = spec
        estimator.encoder_ = network.to(device).eval()
        estimator.encoder_history_ = training.get("history", [])
        estimator.lander_ = lander
        return estimator
