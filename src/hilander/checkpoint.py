"""Training checkpoints, so that an interrupted ``fit`` can resume from its last finished epoch.

A checkpoint is one safetensors file, ``checkpoint.safetensors`` in the checkpoint folder. Its
tensors are the model weights, the best weights so far, the optimiser buffers and the torch random
states. Its header contains the epoch, scores, history, scheduler and numpy generator state as
JSON. Like a model file, it loads without running code. It stores every random state that training draws from, so
a resumed fit gives the same model as one that was never interrupted (on CPU, where training is
deterministic).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ._files import atomic_path
from ._runtime import runtime_versions

__all__ = ["CHECKPOINT_FILE", "TrainingCheckpoint", "TrainingState", "checkpoint_epoch", "training_fingerprint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT_VERSION = 1
_FORMAT_NAME = "hilander-checkpoint"


def training_fingerprint(features: np.ndarray, labels: np.ndarray, params: dict) -> str:
    """Return a SHA-256 of the training data and settings that a checkpoint must match.

    The device is left out, so a run may resume on another device.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    settings = {name: value for name, value in params.items() if name != "device"}
    digest.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def _read_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for malformed headers.
        raise ValueError(f"{path} is not a readable checkpoint ({error}); delete it to start over") from None
    if metadata.get("format") != _FORMAT_NAME:
        raise ValueError(f"{path} is not a hilander training checkpoint; delete it or choose another folder")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {version!r}, but this hilander reads format "
            f"{FORMAT_VERSION}; resume with the hilander version that wrote it, or delete it"
        )
    return metadata


def checkpoint_epoch(folder: str | os.PathLike) -> int | None:
    """Return the last finished epoch stored in ``folder``, or None without a readable checkpoint.

    A fit with several validation folds keeps one checkpoint per fold in subfolders ``fold-1``,
    ``fold-2``, ...; the epoch of the last fold that has one is returned.
    """
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        fold_paths = sorted(Path(folder).glob(f"fold-*/{CHECKPOINT_FILE}"), key=lambda p: int(p.parent.name[5:]) if p.parent.name[5:].isdigit() else 0)
        if not fold_paths:
            return None
        path = fold_paths[-1]
    try:
        return int(json.loads(_read_metadata(path)["state"])["epoch"])
    except (ValueError, KeyError):
        return None


@dataclass
class TrainingState:
    """Training progress restored from a checkpoint.

    Attributes:
        epoch: last finished epoch; training goes on at ``epoch + 1``.
        best_score: best validation score so far, or None before the first validation.
        best_state: model weights of that score, or None.
        history: one dict per finished epoch, as in ``HiLander.history_``.
    """

    epoch: int
    best_score: float | None
    best_state: dict | None
    history: list


class TrainingCheckpoint:
    """The checkpoint file of one training run in ``folder``.

    Args:
        folder: checkpoint folder, created when missing.
        fingerprint: :func:`training_fingerprint` of this run.
        resume: continue from the checkpoint in ``folder``. Without it, an existing checkpoint
            is an error rather than being replaced, since it may be the only copy of a long run.

    Raises:
        FileExistsError: if ``folder`` contains a checkpoint and ``resume`` is false.
        ValueError: if the checkpoint there belongs to other data or settings, or is damaged.
        OSError: if ``folder`` cannot be created.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: str, resume: bool) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CHECKPOINT_FILE
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.found = self.path.is_file()
        if self.found and not resume:
            raise FileExistsError(
                f"{self.folder} already contains a checkpoint of epoch {checkpoint_epoch(self.folder)}; "
                "pass resume=True (--resume) to continue that run, or delete "
                f"{self.path} to start over"
            )
        if self.found:
            metadata = _read_metadata(self.path)
            if metadata.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.path} was written for other training data or settings; resume with the "
                    "same data and options, or delete it to start over"
                )
        elif resume:
            logger.warning("no checkpoint in %s yet; training starts at epoch 1", self.folder)

    def restore(self, model, optimizer, scheduler, rng: np.random.Generator, generator: torch.Generator) -> TrainingState | None:
        """Load the checkpoint into the training objects, or return None when there is none."""
        if not self.found:
            return None
        with safe_open(str(self.path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        state = json.loads(metadata["state"])
        model.load_state_dict(_with_prefix(tensors, "model."))
        best_state = _with_prefix(tensors, "best.") or None
        optimizer.load_state_dict(_optimizer_state(state["optimizer"], tensors))
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[name] for name in sorted(tensors) if name.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            # NOTE: this branch has not run yet, since the tests ran on CPU-only machines. The
            # CUDA states matter for dropout on a GPU.
            torch.cuda.set_rng_state_all(cuda_states)
        logger.info("resuming from %s after epoch %d", self.path, state["epoch"])
        return TrainingState(state["epoch"], state["best_score"], best_state, state["history"])

    def save(
        self,
        epoch: int,
        model,
        optimizer,
        scheduler,
        rng: np.random.Generator,
        generator: torch.Generator,
        best_score: float | None,
        best_state: dict | None,
        history: list,
    ) -> None:
        """Write the state after ``epoch`` atomically, replacing the previous checkpoint."""
        tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
        tensors.update({f"best.{name}": value for name, value in (best_state or {}).items()})
        optimizer_json = _split_optimizer_state(optimizer.state_dict(), tensors)
        tensors["rng.generator"] = generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{index:03d}"] = cuda_state
        state = {
            "epoch": epoch,
            "best_score": best_score,
            "history": history,
            "optimizer": optimizer_json,
            "scheduler": scheduler.state_dict(),
            "numpy_rng": rng.bit_generator.state,
        }
        metadata = {
            "format": _FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "fingerprint": self.fingerprint,
            "versions": json.dumps(runtime_versions()),
            "state": json.dumps(state),
        }
        tensors = {name: value.detach().cpu().contiguous() for name, value in tensors.items()}
        with atomic_path(self.path) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
        self.found = True


def _with_prefix(tensors: dict, prefix: str) -> dict:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


def _split_optimizer_state(optimizer_state: dict, tensors: dict) -> dict:
    """Move the optimiser's tensors into ``tensors`` and return the rest as JSON-ready data."""
    other: dict = {}
    for index, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                other.setdefault(str(index), {})[key] = value
    return {"param_groups": optimizer_state["param_groups"], "state": other}


def _optimizer_state(optimizer_json: dict, tensors: dict) -> dict:
    state: dict = {int(index): dict(entries) for index, entries in optimizer_json["state"].items()}
    for name, value in _with_prefix(tensors, "optimizer.").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": optimizer_json["param_groups"]}
