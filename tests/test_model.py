import numpy as np
import pytest
import torch

from hilander.data import l2_normalize
from hilander.graph import edge_arrays, knn_graph
from hilander.inference import score_level
from hilander.model import Lander, normalized_edge_weights, predicted_density
from hilander.training import LevelGraph, NeighborhoodSampler


def _random_graph(n=60, dim=6, k=5, seed=0):
    rng = np.random.default_rng(seed)
    features = l2_normalize(rng.normal(size=(n, dim)).astype(np.float32))
    neighbors, similarities = knn_graph(features, k)
    return features, neighbors, similarities


def test_graphconv_equals_concat_layer():
    features, neighbors, similarities = _random_graph()
    n, k = neighbors.shape
    torch.manual_seed(0)
    model = Lander(in_dim=6, hidden=8, num_layers=1)
    source, target, similarity = (torch.from_numpy(a) for a in edge_arrays(neighbors, similarities))
    weight = normalized_edge_weights(similarity, target, n)
    x = torch.from_numpy(features)
    h = model.embed(x, source, target, weight)

    conv = model.convs[0]
    aggregated = (weight.reshape(n, k - 1, 1) * x[source].reshape(n, k - 1, -1)).sum(1)
    concatenated = torch.cat([x, aggregated], dim=1)
    matrix = torch.cat([conv.lin_root.weight, conv.lin_rel.weight], dim=1)
    expected = torch.relu(concatenated @ matrix.T + conv.lin_rel.bias)
    assert torch.allclose(h, expected, atol=1e-5)


def test_edge_weights_sum_to_one_per_centre():
    _, neighbors, similarities = _random_graph()
    n = neighbors.shape[0]
    _, target, similarity = (torch.from_numpy(a) for a in edge_arrays(neighbors, similarities))
    weight = normalized_edge_weights(similarity, target, n)
    sums = torch.zeros(n).index_add_(0, target, weight)
    assert torch.allclose(sums, torch.ones(n), atol=1e-5)
    assert torch.all(weight >= 0)


def test_predicted_density_formula():
    prob_same = torch.tensor([[1.0, 0.0], [0.75, 0.5]])
    similarity = torch.tensor([[0.8, 0.4], [0.6, 1.0]])
    density = predicted_density(prob_same, similarity)
    assert torch.allclose(density, torch.tensor([(0.8 - 0.4) / 2, (0.6 * 0.5 + 0.0) / 2]))


def test_cosine_link_head_formula():
    torch.manual_seed(0)
    model = Lander(in_dim=6, hidden=8, link_head="cosine")
    with torch.no_grad():
        model.cosine_affine.copy_(torch.tensor([4.0, 2.0, -1.0]))
    h = torch.randn(5, 8)
    source, target = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 4])
    similarity = torch.tensor([0.9, 0.2, -0.1])
    prob = torch.softmax(model.link_logits(h, source, target, similarity), dim=1)[:, 1]
    u = model.cosine_proj(h)
    cosine = torch.nn.functional.cosine_similarity(u[source], u[target], dim=1)
    assert torch.allclose(prob, torch.sigmoid(4.0 * cosine + 2.0 * similarity - 1.0), atol=1e-6)
    # The head has no pair classifier: only the projection and the three scalars are learned.
    names = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert names == {"convs", "cosine_proj", "cosine_affine"}


def test_sampled_batch_matches_full_graph():
    # Unsorted seeds: the batch must keep their order in its seed arrays.
    features, neighbors, similarities = _random_graph(n=80, k=6, seed=3)
    torch.manual_seed(0)
    for num_layers, conv, shared in ((1, "graphconv", False), (2, "graphconv", False), (2, "gat", False), (1, "graphconv", True)):
        model = Lander(in_dim=6, hidden=16, num_layers=num_layers, conv=conv, shared_neighbors=shared).eval()
        graph = LevelGraph(
            inputs=features, neighbors=neighbors, similarities=similarities,
            labels=np.zeros(80, dtype=np.int64), density=np.zeros(80, dtype=np.float32),
        )
        prob_full, _ = score_level(model, features, neighbors, similarities)
        seeds = np.array([41, 3, 77, 10])
        batch = NeighborhoodSampler(graph, num_layers, batch_size=4, device="cpu").batch(seeds)
        with torch.no_grad():
            h = model.embed(batch.inputs, batch.source, batch.target, batch.weight, batch.output_sizes)
            logits = model.link_logits(
                h, batch.seed_source, batch.seed_target, batch.seed_similarity.reshape(-1), batch.seed_shared.reshape(-1)
            )
        prob_batch = torch.softmax(logits, 1)[:, 1].reshape(4, 5).numpy()
        assert np.allclose(prob_batch, prob_full[seeds], atol=1e-5), (num_layers, conv)


def test_gat_variant_runs_forward_and_backward():
    features, neighbors, similarities = _random_graph()
    model = Lander(in_dim=6, hidden=8, conv="gat", heads=2)
    source, target, similarity = (torch.from_numpy(a) for a in edge_arrays(neighbors, similarities))
    weight = normalized_edge_weights(similarity, target, 60)
    h = model.embed(torch.from_numpy(features), source, target, weight)
    logits = model.link_logits(h, source, target, similarity)
    logits.sum().backward()
    assert logits.shape == (source.shape[0], 2)
    assert model.convs[0].lin.weight.grad is not None


def test_link_head_shared_neighbor_input():
    torch.manual_seed(0)
    h = torch.randn(5, 8)
    source, target = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 4])
    similarity = torch.tensor([0.9, 0.2, -0.1])
    for head in ("product", "additive", "cosine"):
        model = Lander(in_dim=6, hidden=8, link_head=head, shared_neighbors=True)
        if head == "cosine":
            with torch.no_grad():
                model.shared_weight.fill_(3.0)
        with torch.no_grad():
            low = model.link_logits(h, source, target, similarity, torch.zeros(3))
            high = model.link_logits(h, source, target, similarity, torch.ones(3))
        assert not torch.allclose(low, high), head
        with pytest.raises(ValueError, match="shared-neighbour share"):
            model.link_logits(h, source, target, similarity)
    # Without the flag the head has the same parameters as before the input existed.
    plain = Lander(in_dim=6, hidden=8, link_head="product")
    wide = Lander(in_dim=6, hidden=8, link_head="product", shared_neighbors=True)
    assert wide.classifier[1].in_features == plain.classifier[1].in_features + 1
