"""Grid token clustering (ccoat.grid_clustering): the local k-means against a plain loop over
tokens, the limit keep = 1, batch independence, the adjoint pair, the rebuild, and bad input."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import ccoat
from ccoat import cost
from ccoat.grid_clustering import (
    GridClusteredStage,
    GridClustering,
    GridRebuild,
    candidates,
    cell_for,
    gather_back,
)
from ccoat.token_clustering import cluster_tokens, record_token_clusters


def loop_kmeans(tokens, size, cell, steps, temperature):
    """One image's local k-means written token by token: ``tokens (N, C)`` -> centroids
    ``(h*w, C)`` and weights ``{(token, centroid): a}``."""
    (H, W), (sh, sw) = size, cell
    h, w = H // sh, W // sw
    own = {r * W + c: (r // sh, c // sw) for r in range(H) for c in range(W)}
    centroids = {(i, j): torch.stack([tokens[r * W + c] for r in range(i * sh, (i + 1) * sh)
                                      for c in range(j * sw, (j + 1) * sw)]).mean(0)
                 for i in range(h) for j in range(w)}
    for _ in range(steps):
        weights = {}
        for t, (i, j) in own.items():
            near = [(i + di, j + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                    if 0 <= i + di < h and 0 <= j + dj < w]
            sims = torch.stack([F.cosine_similarity(tokens[t], centroids[n], dim=0) for n in near])
            for n, a in zip(near, (sims / temperature).softmax(0)):
                weights[(t, n)] = a
        for n in centroids:
            mass = sum(a for (t, m), a in weights.items() if m == n)
            centroids[n] = sum(a * tokens[t] for (t, m), a in weights.items() if m == n) / mass
    return torch.stack([centroids[(i, j)] for i in range(h) for j in range(w)]), weights, (h, w)


@pytest.mark.parametrize("cell,steps", [((2, 2), 1), ((2, 1), 2), ((3, 3), 1)])
def test_local_kmeans_equals_a_loop_over_tokens(cell, steps):
    torch.manual_seed(0)
    size = (6, 6) if cell == (3, 3) else (4, 6)
    tokens = torch.randn(2, size[0] * size[1], 5, dtype=torch.float64)
    clustering = GridClustering(cell, steps=steps, temperature=0.3)
    centroids, weights, coarse = clustering(tokens, size)
    change = torch.randn(2, coarse[0] * coarse[1], 5, dtype=torch.float64)
    rebuilt = GridRebuild(cell)(tokens, change, weights, size, coarse)
    for b in range(2):
        ref, ref_weights, ref_coarse = loop_kmeans(tokens[b], size, cell, steps, 0.3)
        assert coarse == ref_coarse
        torch.testing.assert_close(centroids[b], ref)
        for t in range(tokens.shape[1]):  # token + the weighted change of its centroids
            want = tokens[b, t] + sum(a * change[b, m[0] * coarse[1] + m[1]]
                                      for (u, m), a in ref_weights.items() if u == t)
            torch.testing.assert_close(rebuilt[b, t], want)


def test_candidates_and_gather_back_are_adjoint():
    torch.manual_seed(0)
    grid, shares = torch.randn(2, 3, 5, 4), torch.randn(2, 15, 9, 4)
    lhs = (candidates(grid) * shares).sum()
    rhs = (grid * gather_back(shares, (3, 5))).sum()
    torch.testing.assert_close(lhs, rhs)


def test_every_token_weighs_only_its_neighbourhood_and_its_weights_sum_to_one():
    torch.manual_seed(0)
    clustering = GridClustering((2, 2))
    _, weights, coarse = clustering(torch.randn(3, 64, 8), (8, 8))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    nearest = clustering.nearest(weights, (8, 8), coarse).reshape(3, 8, 8)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    assert ((nearest // 4 - rows // 2).abs() <= 1).all()
    assert ((nearest % 4 - cols // 2).abs() <= 1).all()
    corner = weights[:, 0, :, :]  # the upper-left cell: its candidates above and left are off
    assert (corner[..., [0, 1, 2, 3, 6]] == 0).all()


@pytest.mark.parametrize("keep,cell", [(1.0, (1, 1)), (0.5, (2, 1)), (0.25, (2, 2)),
                                       (0.125, (4, 2)), (1 / 9, (3, 3))])
def test_cell_of_a_budget(keep, cell):
    assert cell_for(keep) == cell


def _model():
    torch.manual_seed(0)
    return ccoat.create_model("coat_lite_tiny", num_classes=10, img_size=64).eval()


def test_keep_one_is_coat_lite():
    model, x = _model(), torch.randn(2, 3, 64, 64)
    grid = cluster_tokens(copy.deepcopy(model), "grid", keep=1.0, stages=(1, 2, 3, 4))
    with torch.no_grad():
        torch.testing.assert_close(grid(x), model(x), atol=1e-5, rtol=0)


def test_a_batch_gets_what_each_image_gets_alone():
    model = cluster_tokens(_model(), "grid", keep=0.25, stages=(1, 2, 3))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(model(x), alone, atol=1e-5, rtol=1e-5)


def test_weights_load_into_either_and_the_stage_runs_on_the_coarse_grid():
    model = _model()
    grid = cluster_tokens(copy.deepcopy(model), "grid", keep=0.25)
    assert isinstance(grid.stages[0], GridClusteredStage)
    assert grid.state_dict().keys() == model.state_dict().keys()
    seen = []
    grid.stages[1].blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    with record_token_clusters(grid) as records, torch.no_grad():
        grid(torch.randn(2, 3, 64, 64))
    assert seen == [(4, 4)]  # stage 2 of a 64 px image: an 8x8 grid, clustered to 4x4
    assert records["stages.0"]["assign"].shape == (2, 256)
    assert records["stages.0"]["sizes"].shape == (2, 64)
    torch.testing.assert_close(records["stages.0"]["sizes"].sum(1), torch.full((2,), 256.0))


def test_fine_tuning_reaches_every_weight():
    model = cluster_tokens(_model().train(), "grid", keep=0.25)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None
               or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_counted_macs_equal_the_analytic_count_and_a_hand_count():
    model = cluster_tokens(_model(), "grid", keep=0.25, stages=(1, 2, 3, 4))
    table = cost.audit(model, 64)
    assert (table.macs == table.macs_analytic).all()
    s1 = table[table.stage == "stage1"].set_index("component").macs
    N, n, C, D = 16 * 16, 8 * 8, 64, 512  # stage 1 of a 64 px image: 16x16 tokens -> 8x8
    assert s1["patch_embed"] == N * C * 3 * 4 * 4  # on the full grid
    assert s1["qkv"] == 2 * 3 * (1 + n) * C * C  # two blocks on the class token + centroids
    assert s1["mlp"] == 2 * 2 * (1 + n) * C * D
    assert s1["cpe"] == 2 * 9 * n * C
    assert s1["clustering"] == 2 * N * 9 * C  # one round: similarities and weighted sums
    assert s1["broadcast"] == N * 9 * C  # the rebuild
    plain = cost.macs(_model(), 64)["total"]
    assert cost.macs(model, 64)["total"] < plain / 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(keep=0.3), r"keep = 1/n"),
    (dict(keep=0.25, scope="block"), r"scope for 'grid' must be one of \('stage',\)"),
    (dict(keep=0.25, steps=0), r"steps .* >= 1, got 0"),
    (dict(keep=0.25, temperature=-1.0), r"temperature must be a finite number > 0"),
    (dict(keep=0.25, temperature=math.nan), r"temperature must be a finite number > 0"),
    (dict(keep=0.25, n_hashes=4), r"unknown options \['n_hashes'\] for token clustering 'grid'"),
])
def test_bad_options_are_named_and_leave_the_model_alone(kwargs, match):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        cluster_tokens(model, "grid", **kwargs)
    assert not any(isinstance(s, GridClusteredStage) for s in model.stages)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mixing_methods_on_a_stage_is_refused():
    grid = cluster_tokens(_model(), "grid", keep=0.25)
    with pytest.raises(ValueError, match="stage 1 is already grid-clustered"):
        cluster_tokens(grid, "pool", keep=0.5, stages=(1,))
    pooled = cluster_tokens(_model(), "pool", keep=0.5, stages=(1,))
    with pytest.raises(ValueError, match="stage 1 has token-clustered blocks"):
        cluster_tokens(pooled, "grid", keep=0.25, stages=(1,))


def test_a_grid_the_cell_does_not_divide_is_named():
    model = cluster_tokens(_model(), "grid", keep=1 / 9, stages=(1,))
    with pytest.raises(ValueError, match=r"cells of 3x3 tokens .* grid is 16x16"):
        model(torch.randn(1, 3, 64, 64))
