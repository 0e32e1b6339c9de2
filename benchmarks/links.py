"""Link ranking on unseen classes: the AUC of each link score over the kNN edges, side by side.

A decoder can only keep the right edges if its link score ranks same-class edges above the
others. This benchmark fits LANDER with and without the shared-neighbour input (see
``hilander.graph.shared_neighbor_share``) on the meta-train classes. On the test classes' kNN
graph it then reports, for each k, the area under the ROC curve (AUC) of four scores: each
model's P(same class), the raw cosine similarity and the shared-neighbour share alone. It also
clusters the test classes with each model's own chosen settings.

Usage (from the repository root)::

    python -m benchmarks.links --features omniglot_seed0.npz --output benchmarks/results/links_omniglot.json
    python -m benchmarks.links --dataset clinc150

``--features`` reads a file that ``python -m benchmarks.omniglot --features-dir DIR`` writes
(arrays train, train_labels, test, test_labels); ``--dataset`` loads a shared dataset's split.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from hilander import HiLander
from hilander.data import l2_normalize
from hilander.graph import knn_graph, same_label_mask, shared_neighbor_share
from hilander.inference import score_first_level
from hilander.metrics import evaluate

from .quality import load_benchmark_split, write_results

logger = logging.getLogger("benchmarks.links")

VARIANTS = {"LANDER with shared neighbours": True, "LANDER without": False}


def load_features(args) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (name, train, train_labels, test, test_labels) from --features or --dataset."""
    if args.features is not None:
        with np.load(args.features, allow_pickle=False) as data:
            arrays = [data[name] for name in ("train", "train_labels", "test", "test_labels")]
        return args.features.stem, *arrays
    split = load_benchmark_split(args.dataset, args.data_dir)
    return args.dataset, split.train_features, split.train_labels, split.test_features, split.test_labels


def edge_aucs(models: dict[str, HiLander], test: np.ndarray, test_labels: np.ndarray, k: int) -> dict:
    """Return the same-class share of the k-NN edges and each score's AUC on them."""
    neighbors, similarities = knn_graph(test, k)
    same = same_label_mask(neighbors, test_labels).ravel()
    scores = {name: score_first_level(model.model_, test, k).prob_same.ravel() for name, model in models.items()}
    scores["cosine similarity"] = similarities[:, 1:].ravel()
    scores["shared-neighbour share"] = shared_neighbor_share(neighbors).ravel()
    return {"k": k, "same_class_share": float(same.mean()),
            "auc": {name: float(roc_auc_score(same, score)) for name, score in scores.items()}}


def markdown(dataset: str, rows: list[dict], clusterings: dict[str, dict]) -> str:
    """Format the AUC rows and the two models' clusterings as two markdown tables."""
    names = list(rows[0]["auc"])
    lines = [
        "| dataset | k | same-class edges | " + " | ".join(f"AUC: {name}" for name in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in rows:
        lines.append(f"| {dataset} | {row['k']} | {row['same_class_share']:.3f} | "
                     + " | ".join(f"{row['auc'][name]:.3f}" for name in names) + " |")
    lines += ["", "| dataset | model | setting | pairwise F | BCubed F | clusters (true) | fit (s) |",
              "|---|---|---|---|---|---|---|"]
    for name, run in clusterings.items():
        metrics = run["metrics"]
        lines.append(f"| {dataset} | {name} | {run['setting']} | {metrics['pairwise_f']:.3f} | "
                     f"{metrics['bcubed_f']:.3f} | {metrics['n_clusters']} ({metrics['n_classes']}) | {run['fit_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.links", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", type=Path, help="A .npz file with arrays train, train_labels, test, test_labels.")
    source.add_argument("--dataset", help="A shared dataset (clinc150, banking77, ...).")
    parser.add_argument("--data-dir", default=None, help="Folder that contains the dataset folder.")
    parser.add_argument("--seed", type=int, default=0, help="random_state of both models.")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 40], help="Neighbours per node of the test graphs whose edges are scored.")
    parser.add_argument("--output", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument(
        "--hilander-params", type=json.loads, default={}, metavar="JSON",
        help='Other HiLander arguments of both models, e.g. \'{"epochs": 2}\' for a quick check.',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("hilander").setLevel(logging.WARNING)

    dataset, train, train_labels, test, test_labels = load_features(args)
    test = l2_normalize(np.asarray(test, dtype=np.float32))
    models, clusterings = {}, {}
    for name, shared in VARIANTS.items():
        started = time.perf_counter()
        params = {**args.hilander_params, "shared_neighbors": shared, "random_state": args.seed}
        model = HiLander(**params).fit(train, train_labels)
        fit_seconds = time.perf_counter() - started
        metrics = evaluate(test_labels, model.predict(test))
        models[name] = model
        clusterings[name] = {"setting": model.chosen_settings(), "metrics": metrics, "fit_seconds": fit_seconds}
        logger.info("%s: %s, pairwise F %.3f, BCubed F %.3f", name, model.chosen_settings(),
                    metrics["pairwise_f"], metrics["bcubed_f"])
    rows = [edge_aucs(models, test, test_labels, k) for k in args.k]
    print(markdown(dataset, rows, clusterings))
    if args.output is not None:
        write_results(args.output, rows, dataset=dataset, seed=args.seed, hilander_params=args.hilander_params,
                      clusterings=clusterings)


if __name__ == "__main__":
    main()
