"""hilander: learned hierarchical clustering of embeddings (Hi-LANDER, Xing et al., ICCV 2021).

Fit on labelled embeddings of some classes, then cluster embeddings of classes never seen in
training::

    from hilander import HiLander
    model = HiLander().fit(X_train, y_train)
    cluster_ids = model.predict(X_new)

``ImageHiLander`` runs the whole method from pixels: it trains an image encoder first.
"""

__version__ = "0.1.0"

from .estimator import HiLander  # noqa: E402  (the estimator reads __version__ from this module)
from .pipeline import ImageHiLander  # noqa: E402

__all__ = ["HiLander", "ImageHiLander", "__version__"]
