"""ccoat.token_clustering: merge/unmerge, the three ways to form clusters, and the converted model."""
import copy

import pytest
import torch

import ccoat
from ccoat.token_clustering import (
    BLOCK_METHODS,
    METHODS,
    TokenClusteredBlock,
    bipartite_clusters,
    cluster_tokens,
    merge,
    pool_clusters,
    record_token_clusters,
    unmerge,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ccoat.create_model("coat_lite_tiny_cifar", num_classes=10).eval()


def images(n=2, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_merge_is_the_size_weighted_mean_and_unmerge_broadcasts_it():
    x = torch.tensor([[[1.0, 0], [3, 0], [5, 2]]])
    assign = torch.tensor([[0, 0, 1]])
    prototypes, sizes = merge(x, assign, 2, sizes=torch.tensor([[1.0, 3, 1]]))
    torch.testing.assert_close(prototypes, torch.tensor([[[2.5, 0], [5, 2]]]))
    torch.testing.assert_close(sizes, torch.tensor([[4.0, 1]]))
    torch.testing.assert_close(unmerge(prototypes, assign), torch.tensor([[[2.5, 0], [2.5, 0], [5, 2]]]))


def test_merging_copies_of_one_token_changes_nothing():
    x = torch.randn(2, 4, 8).repeat_interleave(3, dim=1)  # every token three times
    assign = torch.arange(4).repeat_interleave(3).expand(2, -1)
    torch.testing.assert_close(unmerge(merge(x, assign, 4)[0], assign), x)


@pytest.mark.parametrize("method", BLOCK_METHODS)
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.75])
def test_every_method_gives_exactly_the_budget_whatever_the_data(method, keep):
    torch.manual_seed(0)
    m = cluster_tokens(copy.deepcopy(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)),
                       method, keep=keep, stages=(1, 2))
    with record_token_clusters(m) as records:
        m(images(3))
    for name, record in records.items():
        n = record["assign"].shape[1]
        k = record["sizes"].shape[1]
        expected = round(keep * n) if method != "pool" else k  # pool: the nearest grid of windows
        assert k == expected and abs(k - keep * n) <= max(2, 0.15 * keep * n), (name, k, n)
        assert record["assign"].min() >= 0 and record["assign"].max() < k
        assert torch.equal(record["sizes"].sum(1), torch.full((3,), float(n)))


@pytest.mark.parametrize("method", METHODS)
def test_keep_one_is_coat_lite(model, method):
    x = images()
    expected = model(x)
    converted = cluster_tokens(copy.deepcopy(model), method, keep=1.0, stages=(1, 2, 3, 4))
    torch.testing.assert_close(converted(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["factorized", "softmax"])
def test_a_block_on_clusters_of_equal_tokens_equals_the_block_on_all_tokens(kind):
    torch.manual_seed(0)
    net = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10, attention=kind).eval()
    stage = net.stages[0]
    block = stage.blocks[0]
    clustered = TokenClusteredBlock(copy.deepcopy(block), "pool", keep=0.25)
    grid = torch.randn(2, 64, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)  # 2x2 copies
    x = torch.cat([torch.randn(2, 1, 64), grid.flatten(2).transpose(1, 2)], dim=1)
    # The convolutions would tell the copies apart (a window's border sees other neighbours
    # than its inside): without them, the block on clusters computes exactly what it did.
    no_cpe = lambda t, size: t  # noqa: E731
    no_crpe = copy.deepcopy(stage.crpe)
    for conv in no_crpe.convs:
        torch.nn.init.zeros_(conv.weight), torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        torch.testing.assert_close(clustered(x, (8, 8), no_cpe, no_crpe),
                                   block(x, (8, 8), no_cpe, no_crpe), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_each_image_of_a_batch_gets_what_it_gets_alone(model, method):
    m = cluster_tokens(copy.deepcopy(model), method, keep=0.5)
    x = images(4)
    batch = m(x)
    for i in range(4):
        torch.testing.assert_close(m(x[i:i + 1]), batch[i:i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_every_token_and_every_weight(model, method):
    m = cluster_tokens(copy.deepcopy(model), method, keep=0.25).train()
    x = images(2).requires_grad_()
    m(x).square().sum().backward()
    per_pixel = x.grad.abs().sum(1)  # (B, H, W)
    patches = per_pixel.unfold(1, 2, 2).unfold(2, 2, 2).sum((-1, -2))  # every 2x2 patch = a token
    assert (patches > 0).all()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_bipartite_merges_the_most_similar_tokens_first():
    x = torch.tensor([[[1.0, 0], [0, 1], [0.99, 0.1], [1, 0.01]]])
    assign, k = bipartite_clusters(x, (2, 2), 3)
    assert k == 3 and assign[0, 0] == assign[0, 3] and len(set(assign[0].tolist())) == 3


def test_pool_windows_are_neighbours():
    assign, k = pool_clusters(torch.zeros(1, 16, 1), (4, 4), 4)
    assert k == 4
    assert assign[0].view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_a_timm_coat_lite_converts_with_its_weights(model):
    import timm

    reference = timm.create_model("coat_lite_tiny", num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    converted = cluster_tokens(reference, "pool", keep=1.0)
    torch.testing.assert_close(converted(x), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="kmeans"), "method must be one of"),
    (dict(method="pool", keep=0), r"keep must be a fraction in \(0, 1\], got 0"),
    (dict(method="pool", keep=1.5), "got 1.5"),
    (dict(method="pool", stages=(5,)), "stage numbers from 1 to 4, got \\(5,\\)"),
    (dict(method="pool", n_hashes=4), "takes no options"),
    (dict(method="pool", scope="layer"),
     r"scope for 'pool' must be one of \('block', 'stage'\), got 'layer'"),
])
def test_bad_options_are_named(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cluster_tokens(copy.deepcopy(model), **kwargs)


def test_clustered_attention_blocks_are_refused():
    with pytest.raises(ValueError, match="'clustered'"):
        cluster_tokens(ccoat.create_model("ccoat_lite_tiny_cifar"), "pool")


def test_create_model_builds_a_token_clustered_model_for_training():
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10, token_clustering="bipartite",
                               keep=0.5, token_stages=(1,))
    kinds = [type(b).__name__ for stage in model.stages for b in stage.blocks]
    assert kinds[:2] == ["TokenClusteredBlock"] * 2 and "TokenClusteredBlock" not in kinds[2:]
    model(images(2)).sum().backward()
    assert ccoat.cluster_tokens is cluster_tokens


def _merged_around_each_sub_layer(block, x, size, cpe, crpe):
    """The block with its tokens merged before each sub-layer and unmerged after it (clusters
    formed once, from the input after the CPE): the reference for keeping them through it."""
    x = cpe(x, size)
    assign, k = block.form_clusters(x[:, 1:], size)
    prototypes, sizes = merge(x[:, 1:], assign, k)
    y = block.attention(block.norm1(torch.cat([x[:, :1], prototypes], 1)), sizes, assign, size,
                        crpe)
    x = x + torch.cat([y[:, :1], unmerge(y[:, 1:], assign)], 1)
    prototypes, _ = merge(x[:, 1:], assign, k)
    y = block.mlp(block.norm2(torch.cat([x[:, :1], prototypes], 1)))
    return x + torch.cat([y[:, :1], unmerge(y[:, 1:], assign)], 1)


@pytest.mark.parametrize("method", BLOCK_METHODS)
def test_keeping_the_clusters_through_the_block_equals_merging_around_each_sub_layer(model, method):
    converted = cluster_tokens(copy.deepcopy(model), method, keep=0.25)
    stage = converted.stages[0]
    block = stage.blocks[0]
    x = torch.randn(2, 1 + 256, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(block(x, (16, 16), stage.cpe, stage.crpe),
                                   _merged_around_each_sub_layer(block, x, (16, 16), stage.cpe,
                                                                 stage.crpe),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["bipartite", "lsh"])
def test_scope_stage_reuses_the_first_blocks_clusters_through_the_stage(model, method):
    per_block = cluster_tokens(copy.deepcopy(model), method, keep=0.5)
    per_stage = cluster_tokens(copy.deepcopy(model), method, keep=0.5, scope="stage")
    x = images(2)
    with torch.no_grad(), record_token_clusters(per_stage) as staged, \
            record_token_clusters(per_block) as blocked:
        per_stage(x), per_block(x)
    for stage in ("stages.0", "stages.1"):
        first, second = staged[f"{stage}.blocks.0"], staged[f"{stage}.blocks.1"]
        assert torch.equal(first["assign"], second["assign"])  # one clustering per stage
    # the first block sees what it sees per block (later stages' inputs differ already)
    assert torch.equal(staged["stages.0.blocks.0"]["assign"], blocked["stages.0.blocks.0"]["assign"])
    assert not torch.equal(blocked["stages.0.blocks.0"]["assign"],
                           blocked["stages.0.blocks.1"]["assign"])  # per block: its own
    same = cluster_tokens(copy.deepcopy(model), method, keep=1.0, scope="stage")
    torch.testing.assert_close(same(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("option, value", [
    ("n_hashes", 0), ("n_hashes", 2.0), ("bucket_width", 0), ("bucket_width", -1.0),
    ("bucket_width", float("nan")), ("bucket_width", float("inf")), ("bucket_width", "0.5"),
    ("seed", "1"), ("proportional", 1),
])
def test_bad_lsh_options_are_refused_naming_the_option_and_value(model, option, value):
    with pytest.raises(ValueError, match=f"{option} must be .*got {value!r}"):
        cluster_tokens(copy.deepcopy(model), "lsh", **{option: value})


def test_an_unknown_lsh_option_is_named(model):
    with pytest.raises(ValueError, match=r"unknown options \['n_hash'\]"):
        cluster_tokens(copy.deepcopy(model), "lsh", n_hash=4)


def _state(model):
    return [type(b).__name__ for stage in model.stages for b in stage.blocks], {
        k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kwargs", [
    dict(method="lsh", stages=(1, 2), bucket_width=float("nan")),  # refused by an option
    dict(method="pool", stages=(1, 3)),  # refused by stage 3's block, after stage 1's
])
def test_a_refused_call_leaves_the_model_unchanged(kwargs):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10,
                               attention=["factorized", "factorized", "clustered", "factorized"])
    kinds, state = _state(model)
    with pytest.raises(ValueError):
        cluster_tokens(model, **kwargs)
    after_kinds, after_state = _state(model)
    assert after_kinds == kinds and "TokenClusteredBlock" not in kinds
    assert after_state.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(after_state[key], state[key], rtol=0, atol=0)


def test_clustering_a_stage_twice_is_refused_without_touching_the_other_stages(model):
    twice = cluster_tokens(copy.deepcopy(model), "pool", stages=(2,))
    with pytest.raises(ValueError, match="stage 2 block 0 is already token-clustered"):
        cluster_tokens(twice, "pool", stages=(1, 2))
    assert not any(isinstance(b, TokenClusteredBlock) for b in twice.stages[0].blocks)


def test_record_token_clusters_of_no_model_says_what_it_expects():
    with pytest.raises(TypeError, match="expects a model .* got NoneType"):
        record_token_clusters(None)


def test_nested_token_cluster_records_both_see_the_clusters(model):
    clustered = cluster_tokens(copy.deepcopy(model), "bipartite", stages=(1,))
    with torch.no_grad(), record_token_clusters(clustered) as outer:
        with record_token_clusters(clustered) as inner:
            clustered(images(2))
        assert inner.keys() == outer.keys() == {"stages.0.blocks.0", "stages.0.blocks.1"}
        for name in outer:
            assert torch.equal(outer[name]["assign"], inner[name]["assign"])
        clustered(images(1, seed=5))  # only the outer record is still open
    assert outer["stages.0.blocks.0"]["assign"].shape[0] == 1
    assert inner["stages.0.blocks.0"]["assign"].shape[0] == 2
    assert all(not block.records for block in clustered.stages[0].blocks)


def test_a_converted_block_keeps_the_models_eval_mode(model):
    clustered = cluster_tokens(copy.deepcopy(model), "lsh", stages=(1, 2))
    assert not any(m.training for m in clustered.modules())
