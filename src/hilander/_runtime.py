"""Versions of hilander and of the libraries that decide its results, for models and outputs."""

from __future__ import annotations

import faiss
import numpy as np
import torch

from . import __version__


def runtime_versions() -> dict[str, str]:
    """Return the versions of hilander, torch, faiss and numpy in this process."""
    return {
        "hilander": __version__,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }
