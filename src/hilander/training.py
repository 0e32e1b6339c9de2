"""Training data and training loop for LANDER.

Training graphs come from ground-truth labels: for each (k, levels) pair the labelled features are
clustered level by level with the true density, and every level's kNN graph becomes one training
graph. The model is trained on mini-batches of seed nodes with their full kNN neighbourhoods.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import l2_normalize
from .graph import KnnConfig, ground_truth_density, knn_graph, same_label_mask, shared_neighbor_share
from .inference import cluster_means, decode_level, node_inputs, super_nodes
from .model import Lander, normalized_edge_weights, predicted_density

__all__ = [
    "LevelGraph",
    "build_training_levels",
    "NeighborhoodSampler",
    "batch_loss",
    "epoch_steps",
    "train_epoch",
]

logger = logging.getLogger(__name__)


@dataclass
class LevelGraph:
    """One level of a ground-truth hierarchy, ready for training.

    Attributes:
        inputs: (n, in_dim) float32 GNN inputs of the level's nodes.
        neighbors: (n, k) int64 kNN lists, column 0 being the node itself.
        similarities: (n, k) float32 cosine similarities.
        labels: (n,) class of each node (its peak's class above level 0).
        density: (n,) float32 ground-truth density.
        shared: (n, k - 1) float32 shared-neighbour share of each edge (see
            :func:`hilander.graph.shared_neighbor_share`); computed from ``neighbors`` when omitted.
    """

    inputs: np.ndarray
    neighbors: np.ndarray
    similarities: np.ndarray
    labels: np.ndarray
    density: np.ndarray
    shared: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.shared is None:
            self.shared = shared_neighbor_share(self.neighbors)

    @property
    def num_nodes(self) -> int:
        return int(self.neighbors.shape[0])


def build_training_levels(
    features: np.ndarray,
    labels: np.ndarray,
    k: int,
    levels: int,
    use_cluster_features: bool = True,
    knn_on_means: bool = False,
    link_drop: float = 0.0,
    rng: np.random.Generator | None = None,
    knn: KnnConfig | None = None,
) -> list[LevelGraph]:
    """Build up to ``levels`` training graphs by clustering with the ground truth.

    At each level a node links to its most similar neighbour that is denser (by true density) and
    of the same class. The connected components become super-nodes at their peaks, and the next
    kNN graph is built over the peaks' features. Unlike the reference implementation, which links
    to the most similar denser neighbour of any class, the links here never cross classes, so the
    upper levels show the model clusters as a correct lower level would produce them.
    Building stops early when fewer than 2 nodes remain or a level adds no link.

    Args:
        features: (N, d) float32 L2-normalised features.
        labels: (N,) int64 class labels.
        k: neighbours per node, the node itself included.
        levels: maximum number of graphs to build.
        use_cluster_features: whether GNN inputs append each node's cluster mean.
        knn_on_means: above level 0, build the kNN graph on cluster means (L2-normalised)
            instead of peak features, as inference does with the same setting.
        link_drop: probability of dropping each same-class link before decoding a level, which
            leaves more, smaller clusters for the next level.
        rng: random generator for ``link_drop``; seeded with 0 when omitted.
        knn: how the kNN graphs are searched; ``None`` uses ``KnnConfig()`` (``"auto"``).

    Returns:
        List of :class:`LevelGraph`, level 0 first.
    """
    graphs: list[LevelGraph] = []
    rng = rng if rng is not None else np.random.default_rng(0)
    assignment = np.arange(features.shape[0], dtype=np.int64)
    node_features, means, node_labels = features, features, labels
    for level in range(levels):
        num_nodes = node_features.shape[0]
        if num_nodes < 2:
            break
        knn_features = l2_normalize(means) if (knn_on_means and level > 0) else node_features
        neighbors, similarities = knn_graph(knn_features, min(k, num_nodes), knn)
        density = ground_truth_density(neighbors, similarities, node_labels)
        graphs.append(
            LevelGraph(
                inputs=node_inputs(node_features, means, use_cluster_features),
                neighbors=neighbors,
                similarities=similarities,
                labels=node_labels,
                density=density,
            )
        )
        link_score = np.where(
            same_label_mask(neighbors, node_labels), np.clip(similarities[:, 1:], 0.0, None), 0.0
        )
        if link_drop > 0:
            link_score = np.where(rng.random(link_score.shape) < link_drop, 0.0, link_score)
        parent, cluster = decode_level(neighbors, link_score, density, 0.0)
        if not np.any(parent >= 0):
            break
        assignment = cluster[assignment]
        peaks = super_nodes(parent, cluster)
        node_features = node_features[peaks]
        node_labels = node_labels[peaks]
        means = cluster_means(features, assignment, peaks.shape[0])
    return graphs


@dataclass
class Batch:
    """A seed batch with the subgraph its loss needs, in local node ids."""

    inputs: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    output_sizes: list[int]
    seed_source: torch.Tensor
    seed_target: torch.Tensor
    seed_similarity: torch.Tensor
    seed_shared: torch.Tensor
    seed_density: torch.Tensor
    seed_same: torch.Tensor
    seed_denser: torch.Tensor


class NeighborhoodSampler:
    """Cut mini-batches of seed nodes with their full neighbourhoods out of one level graph.

    Every node of a kNN graph has exactly k - 1 neighbours. Taking all of them (fan-out k - 1) for
    ``num_layers + 1`` hops gives exact embeddings for the seeds and their neighbours, which the
    link loss needs. Memory depends on the batch size, not on the graph size.
    """

    def __init__(self, graph: LevelGraph, num_layers: int, batch_size: int, device) -> None:
        self.graph = graph
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.device = device
        self.inputs = torch.from_numpy(np.ascontiguousarray(graph.inputs, dtype=np.float32))
        self.density = torch.from_numpy(graph.density)

    def __len__(self) -> int:
        return -(-self.graph.num_nodes // self.batch_size)

    def batches(self, rng: np.random.Generator):
        """Yield :class:`Batch` objects covering every node once, in random order."""
        order = rng.permutation(self.graph.num_nodes)
        for start in range(0, order.shape[0], self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def batch(self, seeds: np.ndarray) -> Batch:
        """Build the subgraph of ``seeds`` (unique int64 node ids).

        Local node ids are ordered by hop distance from the seeds: the seeds first, then their
        new neighbours, and so on. Every hop set is then a prefix, so each conv layer computes only
        the prefix that the next step reads.
        """
        neighbors = self.graph.neighbors
        k = neighbors.shape[1]
        hop_sets = [np.unique(seeds)]
        ordered = [hop_sets[0]]
        for _ in range(self.num_layers + 1):
            grown = np.union1d(hop_sets[-1], neighbors[hop_sets[-1], 1:].ravel())
            ordered.append(np.setdiff1d(grown, hop_sets[-1], assume_unique=True))
            hop_sets.append(grown)
        nodes = np.concatenate(ordered)
        sorted_position = np.argsort(nodes, kind="stable")
        sorted_nodes = nodes[sorted_position]

        def local(ids: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(sorted_position[np.searchsorted(sorted_nodes, ids)])

        # Layer l (of L) outputs the nodes within L - l hops of the seeds. The last layer outputs
        # the seeds and their neighbours, which the link head reads.
        hop_sizes = [hop_set.shape[0] for hop_set in hop_sets]
        output_sizes = [hop_sizes[self.num_layers - layer] for layer in range(self.num_layers)]
        centres = nodes[: output_sizes[0]]
        target = torch.from_numpy(np.repeat(np.arange(centres.shape[0]), k - 1))
        similarity = torch.from_numpy(self.graph.similarities[centres, 1:].ravel())
        seed_neighbors = neighbors[seeds, 1:]
        seed_density = self.density[seeds]
        neighbor_density = self.density[seed_neighbors.ravel()].reshape(seed_neighbors.shape)
        labels = self.graph.labels
        same = labels[seed_neighbors] == labels[seeds][:, None]
        to = self.device
        return Batch(
            inputs=self.inputs[nodes].to(to),
            source=local(neighbors[centres, 1:].ravel()).to(to),
            target=target.to(to),
            weight=normalized_edge_weights(similarity, target, centres.shape[0]).to(to),
            output_sizes=output_sizes,
            seed_source=local(seed_neighbors.ravel()).to(to),
            seed_target=local(np.repeat(seeds, k - 1)).to(to),
            seed_similarity=torch.from_numpy(self.graph.similarities[seeds, 1:]).to(to),
            seed_shared=torch.from_numpy(self.graph.shared[seeds]).to(to),
            seed_density=seed_density.to(to),
            seed_same=torch.from_numpy(same).to(to),
            seed_denser=(neighbor_density > seed_density[:, None]).to(to),
        )


def batch_loss(model: Lander, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Compute density MSE plus class-balanced link cross-entropy for one batch.

    The link loss covers the edges whose source is denser than their target (the only edges that
    decoding can keep). The majority class among them is randomly subsampled to the size of the
    minority class. When only one class is present, all of its edges are used.

    Returns:
        ``(loss, parts)`` where ``parts`` contains the float values of ``"density"`` and ``"link"``.
    """
    h = model.embed(batch.inputs, batch.source, batch.target, batch.weight, batch.output_sizes)
    logits = model.link_logits(
        h, batch.seed_source, batch.seed_target, batch.seed_similarity.reshape(-1), batch.seed_shared.reshape(-1)
    )
    num_seeds, degree = batch.seed_similarity.shape
    prob_same = torch.softmax(logits, dim=1)[:, 1].reshape(num_seeds, degree)
    density_loss = F.mse_loss(predicted_density(prob_same, batch.seed_similarity), batch.seed_density)

    masked = batch.seed_denser.reshape(-1)
    same = batch.seed_same.reshape(-1)
    positives = torch.nonzero(masked & same).squeeze(1)
    negatives = torch.nonzero(masked & ~same).squeeze(1)
    if positives.numel() > 0 and negatives.numel() > 0:
        keep = min(positives.numel(), negatives.numel())
        positives = positives[torch.randperm(positives.numel(), generator=generator)[:keep].to(positives.device)]
        negatives = negatives[torch.randperm(negatives.numel(), generator=generator)[:keep].to(negatives.device)]
    chosen = torch.cat([positives, negatives])
    if chosen.numel() > 0:
        link_loss = F.cross_entropy(logits[chosen], same[chosen].long())
    else:
        link_loss = torch.zeros((), device=logits.device)
    loss = density_loss + link_loss
    return loss, {"density": float(density_loss.detach()), "link": float(link_loss.detach())}


def epoch_steps(samplers: list[NeighborhoodSampler], balance_graphs: bool) -> int:
    """Return the number of optimiser steps that :func:`train_epoch` takes."""
    if balance_graphs:
        return len(samplers) * max(len(sampler) for sampler in samplers)
    return sum(len(sampler) for sampler in samplers)


def _cycle(sampler: NeighborhoodSampler, rng: np.random.Generator):
    while True:
        yield from sampler.batches(rng)


def train_epoch(
    model: Lander,
    samplers: list[NeighborhoodSampler],
    optimizer: torch.optim.Optimizer,
    scheduler,
    rng: np.random.Generator,
    generator: torch.Generator,
    balance_graphs: bool = True,
    on_step=None,
) -> dict:
    """Train one epoch, taking one batch from each graph in turn.

    With ``balance_graphs`` the epoch lasts as many rounds as the largest graph has batches, and
    smaller graphs start over when used up, so every graph gets the same number of steps. The
    upper levels of a hierarchy have few nodes, and without balancing they would see a small
    fraction of the updates. Without it, each graph is visited once.

    Returns:
        Mean ``"loss"``, ``"density"`` and ``"link"`` over the epoch's steps.
    """
    model.train()
    if balance_graphs:
        rounds = max(len(sampler) for sampler in samplers)
        cycles = [_cycle(sampler, rng) for sampler in samplers]
        schedule = ([next(cycle) for cycle in cycles] for _ in range(rounds))
    else:
        schedule = _once_each(samplers, rng)
    totals = {"loss": 0.0, "density": 0.0, "link": 0.0}
    steps = 0
    for round_batches in schedule:
        for batch in round_batches:
            loss, parts = batch_loss(model, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            totals["loss"] += float(loss.detach())
            totals["density"] += parts["density"]
            totals["link"] += parts["link"]
            steps += 1
            if on_step is not None:
                on_step()
    return {name: value / max(steps, 1) for name, value in totals.items()}


def _once_each(samplers: list[NeighborhoodSampler], rng: np.random.Generator):
    """Yield rounds of one batch per graph until every graph's batches are used up."""
    iterators = [sampler.batches(rng) for sampler in samplers]
    while iterators:
        round_batches, remaining = [], []
        for iterator in iterators:
            batch = next(iterator, None)
            if batch is not None:
                round_batches.append(batch)
                remaining.append(iterator)
        iterators = remaining
        if round_batches:
            yield round_batches
