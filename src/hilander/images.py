"""Image input for the encoder stage: folders of image files and the Omniglot arrays.

Images are decoded with Pillow, converted to grayscale or RGB and resized to a square of
``image_size`` pixels. In memory they are uint8 arrays of shape (N, C, H, W).

Two layouts are read:

- a labelled tree, one subfolder per class (torchvision's ``ImageFolder`` layout), for the
  meta-training images;
- a flat folder, or a text file with one image path per line, for the images to cluster.

A file that Pillow cannot decode is an error with ``on_error="raise"``. With ``on_error="skip"``
it is left out with a warning that names it, and its path is kept in :attr:`ImageSet.skipped`.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "decode_image",
    "image_paths",
    "iter_image_batches",
    "list_images",
    "load_image_folder",
    "load_image_list",
    "load_omniglot",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
_MODES = {1: "L", 3: "RGB"}
_ON_ERROR = ("raise", "skip")
# Suffixes of the feature files that hilander reads, which an image model cannot take.
_FEATURE_SUFFIXES = frozenset({".npy", ".npz", ".bin", ".pkl", ".pickle", ".csv", ".tsv"})

_OMNIGLOT_HOW_TO_GET = (
    "The Omniglot arrays are not found. Pass the folder that contains 'omniglot/' with --data-dir "
    "(data_dir= in Python) or set HILANDER_DATA. The folder needs images_background.npz and "
    "images_evaluation.npz, each with a bool array 'images' of shape (classes, 20, 105, 105), "
    "True = background, as repacked from github.com/brendenlake/omniglot by "
    "github.com/bitsandscraps/omniglot."
)


@dataclass
class ImageSet:
    """Decoded images with their source and, for a labelled tree, their classes.

    Attributes:
        images: (N, C, H, W) uint8 pixels.
        labels: (N,) int64 class ids, or None for unlabelled images.
        paths: N source paths (or ``omniglot/<split>/<class>/<drawer>`` names).
        class_names: class name by class id, or None.
        skipped: (path, reason) of each file that could not be decoded and was skipped.
        groups: (N,) int64 group of each image, such as the alphabet of an Omniglot character,
            or None.
    """

    images: np.ndarray
    labels: np.ndarray | None
    paths: list[str]
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    groups: np.ndarray | None = None


def _check_options(image_size: int, channels: int, on_error: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def decode_image(path: str | os.PathLike, image_size: int, channels: int) -> np.ndarray:
    """Decode one image file into a (C, image_size, image_size) uint8 array.

    The image is converted to grayscale (``channels=1``) or RGB (``channels=3``) and resized
    with Lanczos filtering, without keeping the aspect ratio.

    Raises:
        OSError: if the file cannot be read or Pillow cannot decode it.
    """
    try:
        with Image.open(path) as image:
            image = image.convert(_MODES[channels]).resize((image_size, image_size), Image.Resampling.LANCZOS)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # Pillow raises these for missing, truncated, corrupt or oversized files; the message
        # of some (such as "image file is truncated") does not name the file.
        name = str(error) if isinstance(error, UnidentifiedImageError) else f"{type(error).__name__}: {error}"
        raise OSError(f"cannot decode image {path}: {name}") from None
    if channels == 1:
        return pixels[None, :, :]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def image_paths(folder: str | os.PathLike) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by name.

    Files are recognised by suffix (:data:`IMAGE_SUFFIXES`, any case). Hidden files are left out.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def _decode_all(
    paths: list[Path], image_size: int, channels: int, on_error: str, progress: Callable | None
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode ``paths``; return the stacked images, the indices decoded and the skipped files."""
    images = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, path in enumerate(paths):
        try:
            images[len(kept)] = decode_image(path, image_size, channels)
        except OSError as error:
            if on_error == "raise":
                raise OSError(f"{error}; pass on_error='skip' (--skip-bad-images) to leave such files out") from None
            skipped.append((str(path), str(error)))
            logger.warning("skipped %s: %s", path, error)
        else:
            kept.append(index)
        if progress is not None:
            progress("reading images", index + 1, len(paths))
    if skipped:
        logger.warning("skipped %d of %d image files that could not be decoded", len(skipped), len(paths))
    return images[: len(kept)], kept, skipped


def load_image_folder(
    root: str | os.PathLike,
    image_size: int = 28,
    channels: int = 1,
    on_error: str = "raise",
    progress: Callable | None = None,
) -> ImageSet:
    """Read a labelled image tree with one subfolder per class.

    Class ids follow the sorted subfolder names, so the same tree always gives the same ids.

    Args:
        root: folder whose subfolders are the classes.
        image_size: side of the square the images are resized to, in pixels.
        channels: 1 for grayscale, 3 for RGB.
        on_error: ``"raise"`` to stop at the first file that cannot be decoded, ``"skip"`` to
            leave it out with a warning.
        progress: optional ``progress(stage, completed, total)`` callback.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
        ValueError: if ``root`` has no class subfolder with an image in it, or fewer than two.
        OSError: for an undecodable file when ``on_error="raise"``.
    """
    _check_options(image_size, channels, on_error)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    paths: list[Path] = []
    path_labels: list[int] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        files = image_paths(class_dir)
        nested = [path.name for path in class_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
        if nested:
            logger.warning(
                "class folder %s contains subfolders (%s); their images are not read, since each class "
                "is one folder of image files", class_dir, ", ".join(sorted(nested)[:5]),
            )
        if not files:
            logger.warning("class folder %s contains no image files; it is left out", class_dir)
            continue
        path_labels.extend([len(class_names)] * len(files))
        class_names.append(class_dir.name)
        paths.extend(files)
    if len(class_names) < 2:
        raise ValueError(
            f"{root} must contain at least two class subfolders with images (one subfolder per "
            f"class, e.g. {root}/cat/001.png), found {len(class_names)}"
        )
    images, kept, skipped = _decode_all(paths, image_size, channels, on_error, progress)
    labels = np.asarray(path_labels, dtype=np.int64)[kept]
    logger.info("read %d images of %d classes from %s", len(kept), len(class_names), root)
    return ImageSet(images, labels, [str(paths[i]) for i in kept], class_names, skipped)


def _list_file_paths(list_file: Path) -> list[Path]:
    paths = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line)
        paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def list_images(source: str | os.PathLike) -> list[Path]:
    """Return the image paths of a flat folder (sorted by name) or of a list file (in its order).

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if it lists no images.
    """
    source = Path(source)
    if source.is_dir():
        paths = image_paths(source)
    elif source.is_file():
        if source.suffix.lower() in _FEATURE_SUFFIXES:
            raise ValueError(
                f"{source} is a feature file, but an image model reads a folder of images or a text "
                "file with one image path per line; cluster feature files with a model trained on features"
            )
        try:
            paths = _list_file_paths(source)
        except UnicodeDecodeError:
            raise ValueError(f"{source} is not a UTF-8 text file with one image path per line") from None
    else:
        raise FileNotFoundError(f"image folder or list file not found: {source}")
    if not paths:
        raise ValueError(
            f"{source} contains no image files (recognised suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return paths


def load_image_list(
    source: str | os.PathLike,
    image_size: int = 28,
    channels: int = 1,
    on_error: str = "raise",
    progress: Callable | None = None,
) -> ImageSet:
    """Read unlabelled images from a flat folder or from a list file.

    Args:
        source: a folder (its image files, sorted by name) or a text file with one image path
            per line. Relative paths in a list file are relative to the list file's folder.
            Empty lines and lines starting with ``#`` are ignored.
        image_size, channels, on_error, progress: as in :func:`load_image_folder`.

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        ValueError: if it lists no images.
        OSError: for an undecodable or missing file when ``on_error="raise"``.
    """
    _check_options(image_size, channels, on_error)
    paths = list_images(source)
    images, kept, skipped = _decode_all(paths, image_size, channels, on_error, progress)
    return ImageSet(images, None, [str(paths[i]) for i in kept], None, skipped)


def iter_image_batches(
    paths: list[str | os.PathLike], batch_size: int, image_size: int, channels: int, on_error: str = "raise"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Decode ``paths`` batch by batch, so that only one batch is held in memory.

    Yields:
        (batch, positions): (B, C, H, W) uint8 images and the (B,) int64 positions in ``paths``
        that they came from. Positions of skipped files are missing.
    """
    _check_options(image_size, channels, on_error)
    for start in range(0, len(paths), batch_size):
        chunk = [Path(p) for p in paths[start : start + batch_size]]
        images, kept, _ = _decode_all(chunk, image_size, channels, on_error, None)
        yield images, start + np.asarray(kept, dtype=np.int64)


def _find_omniglot(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        candidates = [Path(p) for p in (os.environ.get("HILANDER_DATA"),) if p]
        candidates += [Path("shared/data"), Path("../shared/data")]
    required = ("images_background.npz", "images_evaluation.npz")
    for root in candidates:
        folder = root / "omniglot"
        if all((folder / name).is_file() for name in required):
            return folder
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{_OMNIGLOT_HOW_TO_GET} Searched: {searched}.")


def load_omniglot(split: str, data_dir: str | os.PathLike | None = None, image_size: int = 28) -> ImageSet:
    """Load the Omniglot ``"background"`` (964 classes) or ``"evaluation"`` (659 classes) images.

    Pixels are inverted so that ink is 255 and the background 0, then each 105 x 105 image is
    resized to ``image_size`` with Lanczos filtering (28 is the usual size in few-shot work).
    Labels are the class index within the split, and images are ordered by class, then drawer.
    ``groups`` gives each image's alphabet as an index into ``alphabets.csv`` when that file is
    present.

    Raises:
        ValueError: for another ``split``.
        FileNotFoundError: with instructions on how to get the data.
    """
    if split not in ("background", "evaluation"):
        raise ValueError(f"split must be 'background' or 'evaluation', got {split!r}")
    _check_options(image_size, 1, "raise")
    folder = _find_omniglot(data_dir)
    with np.load(folder / f"images_{split}.npz", allow_pickle=False) as arrays:
        background = arrays["images"]
    num_classes, num_drawers = background.shape[:2]
    ink = np.where(background.reshape(-1, *background.shape[2:]), np.uint8(0), np.uint8(255))
    if image_size != ink.shape[-1]:
        ink = np.stack(
            [
                np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.Resampling.LANCZOS))
                for image in ink
            ]
        )
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), num_drawers)
    paths = [f"omniglot/{split}/{c}/{s}" for c in range(num_classes) for s in range(num_drawers)]
    class_names = [f"{split}-{c}" for c in range(num_classes)]
    groups = _omniglot_alphabets(folder / "alphabets.csv", split, num_classes)
    return ImageSet(ink[:, None, :, :], labels, paths, class_names, groups=None if groups is None else groups[labels])


def _omniglot_alphabets(path: Path, split: str, num_classes: int) -> np.ndarray | None:
    """Return the alphabet index of each class of ``split``, or None without ``alphabets.csv``.

    The file lists, per alphabet, its set and its first and last global character index
    (1-based). Evaluation characters are numbered after the 964 background ones.
    """
    if not path.is_file():
        return None
    offset = 0 if split == "background" else 964
    alphabet_of = np.full(num_classes, -1, dtype=np.int64)
    with open(path, newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if row["set"] != split:
                continue
            first, last = int(row["first_char_index"]) - 1 - offset, int(row["last_char_index"]) - offset
            alphabet_of[first:last] = index
    if (alphabet_of < 0).any():
        logger.warning("%s does not assign every %s class to an alphabet; groups are left out", path, split)
        return None
    return alphabet_of
