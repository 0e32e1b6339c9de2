"""Feature extraction: images through a trained encoder into L2-normalised float32 vectors.

The output is what the kNN graph and LANDER read. Extraction runs in batches, without gradients.
For sets that do not fit in memory, :func:`extract_features_to_file` decodes image files batch
by batch and writes the rows into a ``.npy`` file on disk, which appears only when complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ._files import atomic_path
from .encoder import EncoderSpec, check_images, normalize_pixels
from .images import iter_image_batches

__all__ = ["extract_features", "extract_features_from_paths", "extract_features_to_file"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def _embed(encoder: nn.Module, spec: EncoderSpec, batch: np.ndarray, device: torch.device) -> np.ndarray:
    inputs = normalize_pixels(torch.from_numpy(batch).to(device), spec)
    embeddings = encoder(inputs).float()
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    return embeddings.cpu().numpy().astype(np.float32, copy=False)


def extract_features(
    encoder: nn.Module,
    spec: EncoderSpec,
    images: np.ndarray,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """Embed images with ``encoder`` and L2-normalise each row.

    Args:
        encoder: trained encoder; it is switched to eval mode.
        spec: the encoder's :class:`~hilander.encoder.EncoderSpec` (input size and pixel statistics).
        images: (N, C, H, W) uint8 pixels.
        batch_size: images per forward pass.
        device: torch device. Default: the device of the encoder's parameters.
        progress: optional ``progress(stage, completed, total)`` callback.

    Returns:
        (N, D) float32 array whose rows have unit L2 norm.

    Raises:
        ValueError: if the images do not match the encoder's input shape.
    """
    check_images(images, spec)
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    encoder.eval().to(device)
    output = np.empty((images.shape[0], spec.embedding_dim), dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        output[start:stop] = _embed(encoder, spec, images[start:stop], device)
        if progress is not None:
            progress("extracting features", stop, images.shape[0])
    return output


def _embedded_batches(encoder, spec: EncoderSpec, paths, batch_size: int, on_error: str, device, progress):
    """Yield (embeddings, positions) per batch of decodable files, reporting progress per batch."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    encoder.eval().to(device)
    batches = iter_image_batches(paths, batch_size, spec.image_size, spec.in_channels, on_error)
    for batch_number, (batch, positions) in enumerate(batches, start=1):
        if batch.shape[0]:
            yield _embed(encoder, spec, batch, device), positions
        if progress is not None:
            progress("extracting features", min(batch_number * batch_size, len(paths)), len(paths))


def extract_features_from_paths(
    encoder: nn.Module,
    spec: EncoderSpec,
    paths: list[str | os.PathLike],
    batch_size: int = 512,
    on_error: str = "raise",
    device: str | torch.device | None = None,
    progress: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode image files batch by batch and embed them, holding only the features in memory.

    Args:
        paths: image files.
        on_error: ``"raise"`` or ``"skip"`` for files that cannot be decoded.
        encoder, spec, batch_size, device, progress: as in :func:`extract_features`.

    Returns:
        (features, positions): (M, D) float32 unit-norm rows and the (M,) int64 positions in
        ``paths`` they belong to. M < len(paths) when files were skipped.
    """
    features = np.empty((len(paths), spec.embedding_dim), dtype=np.float32)
    kept: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    written = 0
    for embeddings, positions in _embedded_batches(encoder, spec, paths, batch_size, on_error, device, progress):
        features[written : written + embeddings.shape[0]] = embeddings
        written += embeddings.shape[0]
        kept.append(positions)
    if written < len(paths):
        logger.warning("%d of %d images could not be decoded and were skipped", len(paths) - written, len(paths))
    return features[:written], np.concatenate(kept)


def extract_features_to_file(
    encoder: nn.Module,
    spec: EncoderSpec,
    paths: list[str | os.PathLike],
    output: str | os.PathLike,
    batch_size: int = 512,
    on_error: str = "raise",
    device: str | torch.device | None = None,
    progress: Callable | None = None,
) -> np.ndarray:
    """Decode image files batch by batch, embed them and write the features to a ``.npy`` file.

    Only one batch of images is in memory at a time. The features go to a memory-mapped file
    beside ``output``, which replaces ``output`` once every row is written.

    Args:
        paths: image files, in the order of the output rows.
        output: ``.npy`` file to write, with shape (number of decoded images, D), float32.
        on_error: ``"raise"`` or ``"skip"`` for files that cannot be decoded.
        encoder, spec, batch_size, device, progress: as in :func:`extract_features`.

    Returns:
        (M,) int64 positions in ``paths`` of the rows written. M < len(paths) when files were skipped.
    """
    output = Path(output)
    if output.suffix != ".npy":
        raise ValueError(f"output must be a .npy file, got {output}")
    kept: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    with atomic_path(output) as temporary:
        rows = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(len(paths), spec.embedding_dim))
        written = 0
        for embeddings, positions in _embedded_batches(encoder, spec, paths, batch_size, on_error, device, progress):
            rows[written : written + embeddings.shape[0]] = embeddings
            written += embeddings.shape[0]
            kept.append(positions)
        rows.flush()
        del rows
        if written < len(paths):
            # Rewrite the file with only the rows that were filled, so that no row is left at zero.
            logger.warning("%d of %d images could not be decoded and were skipped", len(paths) - written, len(paths))
            filled = np.array(np.load(temporary, mmap_mode="r")[:written])
            with open(temporary, "wb") as handle:
                np.save(handle, filled)
    return np.concatenate(kept)
