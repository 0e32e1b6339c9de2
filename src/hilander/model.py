"""The LANDER graph neural network: node embeddings, edge linkage and node density.

Shapes: n nodes, E directed edges neighbour -> centre, d_in input features per node.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch_geometric.nn import GATConv, GraphConv
from torch_geometric.utils import to_torch_csr_tensor

__all__ = ["Lander", "normalized_edge_weights", "predicted_density"]

CONV_TYPES = ("graphconv", "gat")
LINK_HEADS = ("product", "additive", "cosine")


def _csr_adjacency(source, target, weight, size: tuple[int, int]) -> torch.Tensor:
    """Build the transposed adjacency (row = target) as a torch CSR tensor."""
    with warnings.catch_warnings():
        # torch warns that CSR support is beta and that invariant checks are off. The indices
        # come from kNN arrays and are valid, so the warnings only confuse users.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return to_torch_csr_tensor(torch.stack([target, source]), weight, size=size)


def normalized_edge_weights(similarity: torch.Tensor, target: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Row-normalise edge similarities so that the weights into each centre sum to 1.

    Negative similarities are clipped to 0 first, so the aggregate is a similarity-weighted mean of
    the neighbours. A centre whose neighbours all have similarity <= 0 gets equal weights.

    Args:
        similarity: (E,) cosine similarity of each edge.
        target: (E,) int64 centre of each edge.
        num_nodes: number of nodes n.

    Returns:
        (E,) float tensor of weights.
    """
    positive = similarity.clamp(min=0.0)
    row_sum = torch.zeros(num_nodes, dtype=positive.dtype, device=positive.device)
    row_sum.index_add_(0, target, positive)
    degree = torch.zeros(num_nodes, dtype=positive.dtype, device=positive.device)
    degree.index_add_(0, target, torch.ones_like(positive))
    weight = positive / row_sum[target].clamp(min=1e-12)
    uniform = 1.0 / degree[target].clamp(min=1.0)
    return torch.where(row_sum[target] > 1e-12, weight, uniform)


def predicted_density(prob_same: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Compute node density from link probabilities.

    density(i) = mean over the centre's k - 1 edges of sim(j, i) * (P(same) - P(different)), the
    ground-truth density with the hard +1/-1 replaced by the model's belief.

    Args:
        prob_same: (m, k - 1) P(same class) of each centre's incoming edges.
        similarity: (m, k - 1) cosine similarity of the same edges.

    Returns:
        (m,) tensor.
    """
    return (similarity * (2.0 * prob_same - 1.0)).mean(dim=1)


class Lander(nn.Module):
    """Graph network that scores kNN edges as same-class links.

    Each conv layer computes ``ReLU(W1 h_i + W2 sum_j w_ji h_j)`` with row-normalised similarity
    weights ``w_ji`` (PyTorch Geometric's ``GraphConv`` with sum aggregation), which equals a linear
    map of the node's input concatenated with the weighted mean of its neighbours' inputs. The
    ``"gat"`` variant replaces it with graph attention, which ignores the similarities.
    The link head maps the embeddings of an edge's source and target to two logits:
    index 1 means "same class".

    Args:
        in_dim: input features per node (2 * d when the cluster mean is appended to the feature).
        hidden: width of the first conv layer.
        num_layers: conv layers, 1 to 4; widths are hidden, hidden, hidden / 2, hidden / 2.
        conv: ``"graphconv"`` or ``"gat"``.
        heads: attention heads of the ``"gat"`` variant, averaged.
        dropout: dropout probability after each conv layer, during training only.
        link_head: ``"cosine"`` gives P(same) = sigmoid(a * cos(u_i, u_j) + b * s_ij + c), where
            u is a learned linear projection of a node's embedding, s_ij the edge's cosine
            similarity and a, b, c learned scalars. ``"product"`` feeds a two-layer classifier
            the sum of the two ends' projections, the elementwise product of a shared projection
            and s_ij. ``"additive"`` uses only the sum of the source and target projections, as
            the reference implementation does.
        shared_neighbors: the link head also reads each edge's shared-neighbour share (see
            :func:`hilander.graph.shared_neighbor_share`), as one more input of the classifier or,
            for the ``"cosine"`` head, one more learned weight.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 512,
        num_layers: int = 1,
        conv: str = "graphconv",
        heads: int = 1,
        dropout: float = 0.0,
        link_head: str = "product",
        shared_neighbors: bool = False,
    ) -> None:
        super().__init__()
        if link_head not in LINK_HEADS:
            raise ValueError(f"link_head={link_head!r} is not supported; use one of {LINK_HEADS}")
        if conv not in CONV_TYPES:
            raise ValueError(f"conv={conv!r} is not supported; use one of {CONV_TYPES}")
        if not 1 <= num_layers <= 4:
            raise ValueError(f"num_layers={num_layers} is out of range; use 1 to 4")

        widths = [in_dim, hidden, hidden, hidden // 2, hidden // 2][: num_layers + 1]
        self.conv_type = conv
        self.convs = nn.ModuleList()
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            if conv == "graphconv":
                self.convs.append(GraphConv(width_in, width_out, aggr="add"))
            else:
                self.convs.append(
                    GATConv(width_in, width_out, heads=heads, concat=False, add_self_loops=False)
                )
        self.dropout = nn.Dropout(dropout)

        out_dim = widths[-1]
        half = hidden // 2
        self.link_head = link_head
        self.shared_neighbors = bool(shared_neighbors)
        extra = 1 if self.shared_neighbors else 0
        if link_head == "cosine":
            # Metric learning compares samples of unseen classes by the cosine of a learned
            # projection. A classifier on the pair fits the training classes instead, so its
            # links rank the edges of unseen classes worse than their raw cosine does.
            self.cosine_proj = nn.Linear(out_dim, half)
            # Scale of the projected cosine, weight of the input cosine and bias: P(same) starts
            # at 0.5 for a projected cosine of 0.5 and rises steeply above it.
            self.cosine_affine = nn.Parameter(torch.tensor([10.0, 0.0, -5.0]))
            if self.shared_neighbors:
                self.shared_weight = nn.Parameter(torch.zeros(1))
            return
        self.source_proj = nn.Linear(out_dim, half)
        self.target_proj = nn.Linear(out_dim, half)
        classifier_in = half + extra
        if link_head == "product":
            # A shared projection whose elementwise product of the two ends acts as a learned
            # bilinear similarity, which the additive reference head can only approximate.
            self.product_proj = nn.Linear(out_dim, half)
            classifier_in = 2 * half + 1 + extra
        self.classifier = nn.Sequential(
            nn.PReLU(classifier_in), nn.Linear(classifier_in, half), nn.PReLU(half), nn.Linear(half, 2)
        )

    def embed(
        self,
        x: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        output_sizes: list[int] | None = None,
    ) -> torch.Tensor:
        """Embed nodes from their inputs and their neighbours' inputs.

        Args:
            x: (n, in_dim) node inputs.
            source, target: (E,) int64 edge ends; messages flow source -> target.
            weight: (E,) row-normalised similarity of each edge.
            output_sizes: optional, one entry per layer: layer l computes embeddings only for the
                first ``output_sizes[l]`` nodes, reading inputs of the nodes the previous layer
                computed. A mini-batch orders its nodes by hop distance from the seeds, so each
                layer skips the outer hop that no later step reads. ``None`` computes all nodes.

        Returns:
            (n, out_dim) embeddings, or (output_sizes[-1], out_dim) with ``output_sizes``; exact
            for nodes whose full neighbourhood (to the model's depth) is in the graph.
        """
        sizes = output_sizes if output_sizes is not None else [x.shape[0]] * len(self.convs)
        h = x
        for layer, size in enumerate(sizes):
            keep = target < size
            h = self.conv_layer(layer, h, h[:size], source[keep], target[keep], weight[keep])
        return h

    def conv_layer(
        self,
        layer: int,
        h_source: torch.Tensor,
        h_target: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """Apply conv layer ``layer`` (with ReLU and dropout) to a bipartite block of the graph.

        Args:
            h_source: (n_s, width_in) inputs of the nodes that send messages.
            h_target: (n_t, width_in) inputs of the nodes that receive them.
            source: (E,) int64 rows of ``h_source``; target: (E,) int64 rows of ``h_target``.
            weight: (E,) row-normalised similarity of each edge.

        Returns:
            (n_t, width_out) embeddings of the target nodes. Exact when every edge into those
            nodes is given, so a graph can be embedded one block of target rows at a time.
        """
        conv = self.convs[layer]
        if self.conv_type == "graphconv":
            # A CSR adjacency (row = target) keeps memory at O(E) instead of an (E, width) message tensor.
            adjacency_t = _csr_adjacency(source, target, weight, (h_target.shape[0], h_source.shape[0]))
            h = conv((h_source, h_target), adjacency_t)
        else:
            edge_index = torch.stack([source, target])
            h = conv((h_source, h_target), edge_index, size=(h_source.shape[0], h_target.shape[0]))
        return self.dropout(torch.relu(h))

    def link_logits(
        self,
        h: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        similarity: torch.Tensor,
        shared: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score edges from node embeddings.

        Args:
            h: (n, out_dim) node embeddings.
            source, target: (E,) int64 edge ends.
            similarity: (E,) cosine similarity of each edge (read by the ``"product"`` and
                ``"cosine"`` heads).
            shared: (E,) shared-neighbour share of each edge; required when the model was built
                with ``shared_neighbors=True``, ignored otherwise.

        Returns:
            (E, 2) logits; softmax index 1 is P(same class).
        """
        projected = self._project(h)
        return self._score(projected, source, target, similarity, shared)

    def project(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Map (n, out_dim) embeddings to the per-node projections that :meth:`score` reads.

        The projections of a node do not depend on the edge, so a large graph projects its
        nodes once, one block of rows at a time, and scores its edges from the stored result.
        """
        return self._project(h)

    def score(self, projected: tuple[torch.Tensor, ...], source, target, similarity, shared=None) -> torch.Tensor:
        """Return (E, 2) link logits of edges from the node projections of :meth:`project`."""
        return self._score(projected, source, target, similarity, shared)

    def _project(self, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.link_head == "cosine":
            return (nn.functional.normalize(self.cosine_proj(h), dim=1),)
        if self.link_head == "product":
            return self.source_proj(h), self.target_proj(h), self.product_proj(h)
        return self.source_proj(h), self.target_proj(h)

    def _score(self, projected, source, target, similarity, shared=None) -> torch.Tensor:
        if self.shared_neighbors and shared is None:
            raise ValueError(
                "shared is missing: this model reads each edge's shared-neighbour share, so pass "
                "shared=hilander.graph.shared_neighbor_share(neighbors) for the graph's kNN lists"
            )
        if self.link_head == "cosine":
            cosine = (projected[0][source] * projected[0][target]).sum(dim=1)
            scale, weight, bias = self.cosine_affine
            z = scale * cosine + weight * similarity.to(cosine.dtype) + bias
            if self.shared_neighbors:
                z = z + self.shared_weight * shared.to(cosine.dtype)
            return torch.stack([-0.5 * z, 0.5 * z], dim=1)
        combined = projected[0][source] + projected[1][target]
        if self.link_head == "product":
            product = projected[2][source] * projected[2][target]
            combined = torch.cat([combined, product, similarity.unsqueeze(1).to(combined.dtype)], dim=1)
        if self.shared_neighbors:
            combined = torch.cat([combined, shared.unsqueeze(1).to(combined.dtype)], dim=1)
        return self.classifier(combined)

    def link_probabilities(
        self,
        h: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        similarity: torch.Tensor,
        shared: torch.Tensor | None = None,
        chunk_size: int = 1 << 20,
    ) -> torch.Tensor:
        """Return P(same class) of each edge, computed in chunks of edges to bound memory."""
        projected = self._project(h)
        out = torch.empty(source.shape[0], dtype=h.dtype, device=h.device)
        for start in range(0, source.shape[0], chunk_size):
            stop = start + chunk_size
            part = None if shared is None else shared[start:stop]
            logits = self._score(projected, source[start:stop], target[start:stop], similarity[start:stop], part)
            out[start:stop] = torch.softmax(logits, dim=1)[:, 1]
        return out
