"""Stage one of Hi-LANDER: a CNN encoder trained as a classifier on the meta-training images.

The encoder maps (N, C, H, W) images to (N, D) embeddings. During training a classification head
sits on top: a plain softmax layer, or a margin loss of the face-recognition family (CosFace or
ArcFace, from pytorch-metric-learning). After training the head is dropped and only the encoder
is kept; :func:`hilander.features.extract_features` then turns images into the L2-normalised
vectors that the kNN graph and LANDER read.

An encoder is described by a JSON-ready :class:`EncoderSpec`, so that a model file stores the
architecture as settings and its weights as tensors, and loading it runs no code from the file.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import TrainingCheckpoint, training_fingerprint

__all__ = [
    "ENCODER_LOSSES",
    "ConvEncoder",
    "EncoderSpec",
    "EncoderTrainingResult",
    "augment_batch",
    "build_encoder",
    "check_images",
    "normalize_pixels",
    "train_encoder",
]

logger = logging.getLogger(__name__)

ENCODER_LOSSES = ("softmax", "cosface", "arcface")
# "custom" marks a user's own module, whose code a model file does not contain.
ENCODER_ARCHITECTURES = ("conv", "resnet18", "resnet34", "resnet50", "custom")


class ConvEncoder(nn.Module):
    """A stack of 3x3 convolution blocks followed by a linear embedding layer.

    Each block is Conv2d - BatchNorm2d - ReLU - MaxPool2d(2). Global average pooling after the
    last block makes the encoder accept any image size of at least ``2 ** blocks`` pixels. With
    4 blocks, 28 x 28 inputs reach the pooling as 1 x 1 maps, which is the "Conv-4" network of
    few-shot learning with a linear layer added.

    Args:
        in_channels: image channels C.
        width: channels of every convolution.
        blocks: number of convolution blocks.
        embedding_dim: output dimension D.

    Shapes:
        input (N, C, H, W) float; output (N, D) float, not normalised.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, blocks: int = 4, embedding_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(blocks):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.blocks = nn.Sequential(*layers)
        self.embed = nn.Linear(width, embedding_dim)
        self.norm = nn.BatchNorm1d(embedding_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.blocks(images).mean(dim=(2, 3))
        return self.norm(self.embed(pooled))


@dataclass
class EncoderSpec:
    """Architecture and input preprocessing of an encoder, stored in model files as JSON.

    Attributes:
        architecture: ``"conv"`` (:class:`ConvEncoder`) or a torchvision ResNet name
            (``"resnet18"``, ``"resnet34"``, ``"resnet50"``, which need torchvision), or
            ``"custom"`` for a module the user passes.
        in_channels: image channels, 1 (grayscale) or 3 (RGB).
        image_size: side of the square input images, in pixels.
        embedding_dim: output dimension.
        width, blocks: width and depth of the ``"conv"`` architecture.
        mean, std: per-channel pixel statistics on the 0-1 scale, used to standardise inputs.
    """

    architecture: str = "conv"
    in_channels: int = 1
    image_size: int = 28
    embedding_dim: int = 128
    width: int = 64
    blocks: int = 4
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, config: dict) -> "EncoderSpec":
        spec = cls(**config)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        if self.architecture not in ENCODER_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ENCODER_ARCHITECTURES)}, got {self.architecture!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        for name in ("image_size", "embedding_dim", "width", "blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.architecture == "conv" and self.image_size < 2**self.blocks:
            raise ValueError(
                f"image_size {self.image_size} is too small for {self.blocks} pooling blocks; use images "
                f"of at least {2 ** self.blocks} pixels or fewer blocks"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"mean and std need one value per channel ({self.in_channels}), got {self.mean} and {self.std}")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")


def build_encoder(spec: EncoderSpec) -> nn.Module:
    """Create an untrained encoder for ``spec``.

    Raises:
        ImportError: for a ResNet architecture when torchvision is not installed.
    """
    spec.validate()
    if spec.architecture == "custom":
        raise ValueError("a custom encoder cannot be built from its spec; pass the module itself")
    if spec.architecture == "conv":
        return ConvEncoder(spec.in_channels, spec.width, spec.blocks, spec.embedding_dim)
    try:
        from torchvision import models
    except ImportError as error:
        raise ImportError(
            f"architecture {spec.architecture!r} needs torchvision ({error}); install the torchvision "
            "build that matches your torch, or use architecture='conv'"
        ) from None
    # NOTE: the ResNet path has not run in this project's tests, because the torchvision on
    # PyPI does not import beside the CPU build of torch 2.13 used there.
    network = getattr(models, spec.architecture)(weights=None, num_classes=spec.embedding_dim)
    if spec.in_channels != 3:
        network.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return network


def normalize_pixels(images: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    """Turn (N, C, H, W) uint8 pixels into standardised float32 inputs."""
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    rotation: float = 10.0,
    shift: float = 0.1,
    scale: float = 0.1,
    flip: bool = False,
) -> torch.Tensor:
    """Apply a random affine transform to each image of a float batch.

    Args:
        images: (N, C, H, W) float images.
        generator: CPU random generator, so that runs are reproducible.
        rotation: maximum rotation, in degrees.
        shift: maximum translation, as a fraction of the image side.
        scale: maximum relative zoom in or out.
        flip: also mirror half of the images left to right (for natural images, not characters).

    Returns:
        (N, C, H, W) transformed images; pixels moved in from outside repeat the border.
    """
    n = images.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(rotation))
    zoom = 1 + uniform(scale)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, uniform(2 * shift)], dim=1),
            torch.stack([sin * mirror, cos, uniform(2 * shift)], dim=1),
        ],
        dim=1,
    ).to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _SoftmaxHead(nn.Module):
    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.linear(embeddings), labels)


def _classification_head(loss: str, embedding_dim: int, num_classes: int, margin: float | None, scale: float) -> nn.Module:
    if loss == "softmax":
        return _SoftmaxHead(embedding_dim, num_classes)
    from pytorch_metric_learning import losses

    # pytorch-metric-learning's margin losses hold the class weight matrix W themselves. Their
    # default margins are 0.35 (CosFace, cosine) and 28.6 degrees (ArcFace, angle).
    if loss == "cosface":
        return losses.CosFaceLoss(num_classes, embedding_dim, margin=0.35 if margin is None else margin, scale=scale)
    return losses.ArcFaceLoss(num_classes, embedding_dim, margin=28.6 if margin is None else margin, scale=scale)


class _EncoderWithHead(nn.Module):
    """Encoder and classification head as one module, so that checkpoints hold both."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head


@dataclass
class EncoderTrainingResult:
    """A trained encoder and its per-epoch history.

    Attributes:
        encoder: the trained encoder in eval mode, on the training device; the head is dropped.
        spec: its :class:`EncoderSpec`, with the pixel statistics of the training images.
        history: one dict per epoch: epoch, loss (mean over the epoch), accuracy of the head on
            the training batches (softmax only, else None), images_per_second, seconds.
    """

    encoder: nn.Module
    spec: EncoderSpec
    history: list[dict]


def _pixel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation on the 0-1 scale, from up to 10,000 images."""
    sample = images[:: max(1, images.shape[0] // 10_000)].astype(np.float64) / 255.0
    mean = sample.mean(axis=(0, 2, 3))
    std = sample.std(axis=(0, 2, 3))
    return [float(m) for m in mean], [float(max(s, 1e-3)) for s in std]


def check_images(images: np.ndarray, spec: EncoderSpec) -> None:
    """Raise ValueError unless ``images`` is a (N, C, H, W) uint8 array of the encoder's input shape."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"images must be a (N, C, H, W) uint8 array, got {dtype} of shape {shape}")
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if images.shape[1:] != expected:
        raise ValueError(
            f"images have shape {images.shape[1:]} per image but the encoder expects {expected}; "
            f"read them with image_size={spec.image_size} and channels={spec.in_channels}"
        )


def _check_training_inputs(images: np.ndarray, labels: np.ndarray, spec: EncoderSpec) -> None:
    check_images(images, spec)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), one per image, got {labels.shape}")
    if np.unique(labels).shape[0] < 2:
        raise ValueError("the encoder needs images of at least two classes to train a classifier")


def train_encoder(
    images: np.ndarray,
    labels: np.ndarray,
    spec: EncoderSpec | None = None,
    *,
    loss: str = "softmax",
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 5e-4,
    margin: float | None = None,
    scale: float = 30.0,
    augment: bool = True,
    flip: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: Callable | None = None,
) -> EncoderTrainingResult:
    """Train an encoder with a classification head on labelled images, then drop the head.

    AdamW with a one-cycle learning-rate schedule; on a CUDA device the forward and backward
    passes run in float16 mixed precision with gradient scaling. Runs are reproducible on CPU
    for the same seed and thread count.

    Args:
        images: (N, C, H, W) uint8 pixels, as read by :mod:`hilander.images`.
        labels: (N,) class ids.
        spec: architecture; its ``mean`` and ``std`` are replaced by the statistics of ``images``.
            Default: :class:`EncoderSpec` for the channels and size of ``images``.
        loss: ``"softmax"``, ``"cosface"`` or ``"arcface"``.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        margin, scale: margin and logit scale of the CosFace and ArcFace losses.
        augment: random rotation, shift and zoom of each training image.
        flip: also mirror images left to right (for natural images, not characters).
        device: torch device.
        seed: seed of initialisation, batch order and augmentation.
        checkpoint_dir: folder for a checkpoint written after every epoch.
        resume: continue from the checkpoint in ``checkpoint_dir``.
        progress: optional ``progress(stage, completed, total, status)`` callback, called after
            every batch; ``status`` gives the running loss and throughput.

    Raises:
        ValueError: for invalid images, labels or settings.
    """
    if loss not in ENCODER_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(ENCODER_LOSSES)}, got {loss!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if spec is None and isinstance(images, np.ndarray) and images.ndim == 4:
        spec = EncoderSpec(in_channels=images.shape[1], image_size=images.shape[2])
    spec = EncoderSpec(**(spec or EncoderSpec()).to_json())
    labels = np.asarray(labels)
    _check_training_inputs(images, labels, spec)
    classes, targets = np.unique(labels, return_inverse=True)
    spec.mean, spec.std = _pixel_statistics(images)
    spec.validate()
    device = torch.device(device)

    torch.manual_seed(seed)
    network = _EncoderWithHead(build_encoder(spec), _classification_head(loss, spec.embedding_dim, len(classes), margin, scale))
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    checkpoint = None
    history: list[dict] = []
    first_epoch = 1
    if checkpoint_dir is not None:
        settings = {
            "spec": spec.to_json(), "loss": loss, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "margin": margin, "scale": scale, "augment": augment, "flip": flip, "seed": seed,
        }
        fingerprint = training_fingerprint(images.reshape(images.shape[0], -1), targets, settings)
        checkpoint = TrainingCheckpoint(Path(checkpoint_dir), fingerprint, resume)
        state = checkpoint.restore(network, optimizer, scheduler, rng, generator)
        if state is not None:
            history = state.history
            first_epoch = state.epoch + 1

    pixels = torch.from_numpy(images)
    target_tensor = torch.from_numpy(targets.astype(np.int64))
    total_steps = epochs * steps_per_epoch
    for epoch in range(first_epoch, epochs + 1):
        network.train()
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(images.shape[0]))
        loss_sum, correct, seen = 0.0, 0, 0
        for step, start in enumerate(range(0, images.shape[0], batch_size), start=1):
            index = order[start : start + batch_size]
            if index.shape[0] < 2:
                continue  # BatchNorm cannot train on a batch of one image.
            batch = normalize_pixels(pixels[index].to(device), spec)
            if augment:
                batch = augment_batch(batch, generator, flip=flip)
            batch_targets = target_tensor[index].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                embeddings = network.encoder(batch)
            batch_loss = network.head(embeddings.float(), batch_targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(batch_loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(batch_loss.detach()) * index.shape[0]
            seen += index.shape[0]
            if loss == "softmax":
                with torch.no_grad():
                    correct += int((network.head.linear(embeddings.float()).argmax(1) == batch_targets).sum())
            if progress is not None:
                rate = seen / max(time.perf_counter() - started, 1e-9)
                status = f"epoch {epoch}/{epochs} loss {loss_sum / seen:.3f} {rate:,.0f} img/s"
                progress("training encoder", (epoch - 1) * steps_per_epoch + step, total_steps, status)
        seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1) if loss == "softmax" else None,
            "images_per_second": seen / max(seconds, 1e-9),
            "seconds": seconds,
        }
        history.append(record)
        logger.info(
            "encoder epoch %d/%d: loss %.4f, %.0f images/s, %.1f s",
            epoch, epochs, record["loss"], record["images_per_second"], seconds,
        )
        if checkpoint is not None:
            checkpoint.save(epoch, network, optimizer, scheduler, rng, generator, None, None, history)

    encoder = network.encoder.eval()
    return EncoderTrainingResult(encoder, spec, history)
