import numpy as np
import pytest

from hilander.datasets import find_data_root


def blobs(num_classes: int, per_class: int, dim: int = 16, spread: float = 0.25, seed: int = 0):
    """Return unit-norm Gaussian blobs around random centres, with their class labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centres[labels] + spread * rng.normal(size=(labels.shape[0], dim))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), labels


@pytest.fixture(scope="session")
def clinc_root():
    try:
        return find_data_root("clinc150")
    except FileNotFoundError:
        pytest.skip("CLINC150 not found: set HILANDER_DATA to the folder that contains clinc150/ to run this test")
