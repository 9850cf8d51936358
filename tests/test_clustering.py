"""Adaptive clustering attention: prototypes, broadcast, the clustered cores and models."""
import pytest
import timm
import torch
import torch.nn.functional as F

import ccoat
from ccoat.attention import factorized_attention
from ccoat.clustering import (
    ClusteredCore,
    ClusteredFactorizedCore,
    block_index,
    broadcast,
    clusters_per_row,
    clusters_per_stage,
    limit_clusters,
    prototypes,
    record_clusters,
)
from ccoat.hashing import E2LSH
from ccoat.model import CLUSTERED_KINDS, make_core


def _qkv(B=2, h=2, N=1 + 7 * 7, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, N, C, generator=g) for _ in range(3)]


# --- prototypes and broadcast ---------------------------------------------------------------

def test_prototypes_are_cluster_means_and_broadcast_gives_each_token_its_cluster_row():
    x = torch.randn(2, 3, 40, 5)
    clusters = E2LSH(5, 3, 1.0, seed=0)(x)
    protos = prototypes(x, clusters)
    for b in range(2):
        for h in range(3):
            for k in range(clusters.max_clusters):
                members = x[b, h][clusters.ids[b, h] == k]
                expected = members.mean(0) if len(members) else torch.zeros(5)
                torch.testing.assert_close(protos[b, h, k], expected)
    out = broadcast(protos, clusters)
    for b in range(2):
        for h in range(3):
            torch.testing.assert_close(out[b, h], protos[b, h][clusters.ids[b, h]])


def test_prototype_gradient_is_shared_equally_among_members():
    x = torch.randn(1, 1, 30, 4, requires_grad=True)
    clusters = E2LSH(4, 2, 2.0, seed=1)(x.detach())
    w = torch.randn(1, 1, clusters.max_clusters, 4)
    (prototypes(x, clusters) * w).sum().backward()
    ids = clusters.ids[0, 0]
    expected = w[0, 0][ids] / clusters.counts[0, 0][ids].unsqueeze(-1)
    torch.testing.assert_close(x.grad[0, 0], expected)


# --- the cores: limits and equivalences -----------------------------------------------------

def test_tiny_bucket_width_makes_clustered_equal_softmax():
    q, k, v = _qkv()
    core = ClusteredCore(8, n_hashes=8, bucket_width=1e-6, seed=0)
    torch.testing.assert_close(core(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=0)
    fcore = ClusteredFactorizedCore(8, n_hashes=8, bucket_width=1e-6, seed=0)
    torch.testing.assert_close(fcore(q, k, v), factorized_attention(q, k, v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("how", ["identical queries", "huge bucket width"])
def test_one_cluster_gives_every_image_token_the_attention_of_the_mean_query(how):
    q, k, v = _qkv()
    if how == "identical queries":
        q[:, :, 1:] = q[:, :, 1:2]
        core = ClusteredCore(8, bucket_width=0.01, seed=0)
    else:
        core = ClusteredCore(8, n_hashes=2, bucket_width=1e6, seed=0)
    out = core(q, k, v)
    mean_query = q[:, :, 1:].mean(2, keepdim=True)
    expected = F.scaled_dot_product_attention(mean_query, k, v).expand(-1, -1, q.shape[2] - 1, -1)
    torch.testing.assert_close(out[:, :, 1:], expected)
    # The class token is a cluster of its own: its exact attention row.
    torch.testing.assert_close(out[:, :, :1], F.scaled_dot_product_attention(q[:, :, :1], k, v))


@pytest.mark.parametrize("core_cls", [ClusteredCore, ClusteredFactorizedCore])
def test_permuting_image_tokens_permutes_the_output(core_cls):
    q, k, v = _qkv(N=1 + 64)
    core = core_cls(8, n_hashes=4, bucket_width=1.5, seed=0)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(64)])
    out = core(q, k, v)
    out_perm = core(q[:, :, perm], k[:, :, perm], v[:, :, perm])
    torch.testing.assert_close(out_perm, out[:, :, perm])


@pytest.mark.parametrize("core_cls", [ClusteredCore, ClusteredFactorizedCore])
def test_batch_equals_per_sample_loop(core_cls):
    q, k, v = _qkv(B=3)
    core = core_cls(8, n_hashes=4, bucket_width=1.0, seed=0)
    batch = core(q, k, v)
    for b in range(3):
        torch.testing.assert_close(batch[b:b + 1], core(q[b:b + 1], k[b:b + 1], v[b:b + 1]))


def test_clustered_factorized_is_the_cluster_mean_of_factorized_outputs():
    # Factorized attention is linear in q, so a prototype's output is the members' mean output.
    q, k, v = _qkv()
    core = ClusteredFactorizedCore(8, n_hashes=4, bucket_width=2.0, seed=0)
    clusters = core.cluster(q[:, :, 1:])
    exact = factorized_attention(q, k, v)[:, :, 1:]
    torch.testing.assert_close(core(q, k, v)[:, :, 1:],
                               broadcast(prototypes(exact, clusters), clusters))


def test_core_grad_reaches_queries_keys_values():
    q, k, v = (t.requires_grad_() for t in _qkv())
    ClusteredCore(8, n_hashes=4, bucket_width=1.0, seed=0)(q, k, v).square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and t.grad.abs().sum() > 0


# --- the cap on the number of clusters ------------------------------------------------------

def test_cap_is_respected_and_merges_small_clusters_into_the_nearest_kept_one():
    x = torch.randn(2, 3, 200, 8)
    clusters = E2LSH(8, 8, 0.5, seed=0)(x)
    assert clusters.num_clusters.min() > 10
    capped = limit_clusters(x, clusters, 10)
    assert (capped.num_clusters == 10).all() and capped.max_clusters == 10
    assert torch.equal(capped.counts.sum(-1), torch.full((2, 3), 200))
    protos = prototypes(x, clusters)
    for b in range(2):
        for h in range(3):
            counts = clusters.counts[b, h]
            kept = torch.argsort(counts, descending=True, stable=True)[:10]
            for old in range(clusters.num_clusters[b, h].item()):
                members = clusters.ids[b, h] == old
                new = capped.ids[b, h][members]
                assert (new == new[0]).all()  # a cluster is merged as a whole
                if old in kept.tolist():
                    target = old
                else:
                    target = kept[(protos[b, h, kept] - protos[b, h, old]).norm(dim=-1).argmin()].item()
                # the new cluster is the one that contains the target's members
                assert (capped.ids[b, h][clusters.ids[b, h] == target] == new[0]).all()


def test_cap_above_the_count_changes_nothing():
    x = torch.randn(1, 2, 50, 8)
    clusters = E2LSH(8, 4, 2.0, seed=0)(x)
    assert limit_clusters(x, clusters, 1000) is clusters


def test_core_with_cap_uses_at_most_that_many_prototypes():
    q, k, v = _qkv(N=1 + 100)
    model_core = ClusteredCore(8, n_hashes=16, bucket_width=0.3, max_clusters=5, seed=0)
    with torch.no_grad():
        model_core(q, k, v)
    assert (model_core.cluster(q[:, :, 1:]).num_clusters <= 5).all()


def test_the_clustered_kinds_are_the_table_kinds_whose_core_takes_clustering_options():
    assert CLUSTERED_KINDS == ("clustered", "clustered_factorized")
    for kind in ccoat.ATTENTION_KINDS:
        if kind in CLUSTERED_KINDS:
            assert make_core(kind, head_dim=8, n_hashes=2).hasher.n_hashes == 2
        else:
            with pytest.raises(ValueError, match="takes no options"):
                make_core(kind, n_hashes=2)


# --- bad input ------------------------------------------------------------------------------

def test_unknown_kinds_and_options_are_refused():
    with pytest.raises(ValueError, match="attention kind must be one of"):
        make_core("clusterd")
    with pytest.raises(ValueError, match="needs head_dim"):
        make_core("clustered")
    with pytest.raises(ValueError, match="unknown clustering options"):
        make_core("clustered", head_dim=8, n_hash=4)
    with pytest.raises(ValueError, match="takes no options"):
        make_core("softmax", n_hashes=4)
    with pytest.raises(ValueError, match="n_hashes must be an integer >= 1"):
        ccoat.create_model("ccoat_lite_tiny_cifar", n_hashes=0)
    with pytest.raises(ValueError, match="bucket_width must be a finite number > 0"):
        ccoat.create_model("ccoat_lite_tiny_cifar", bucket_width=-1.0)
    with pytest.raises(ValueError, match="max_clusters must be None or an integer >= 1"):
        make_core("clustered", head_dim=8, max_clusters=0)


def test_wrong_shapes_are_refused():
    core = ClusteredCore(8)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"expected q of shape \(B, heads, N, C_head\)"):
        core(q[0], k, v)
    with pytest.raises(ValueError, match="expected C_head = 8"):
        core(q[..., :4], k[..., :4], v[..., :4])
    with pytest.raises(ValueError, match="k, v of one shape"):
        core(q, k, v[:, :, :10])


def test_non_finite_queries_raise_with_their_count():
    q, k, v = _qkv()
    q[0, 1, 5, 2] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/inf values"):
        ClusteredCore(8)(q, k, v)


# --- models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10, attention=kind,
                               bucket_width=0.5)
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_model_batch_equals_per_sample_loop():
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10, bucket_width=0.5).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        batch = model(x)
        for b in range(3):
            torch.testing.assert_close(batch[b:b + 1], model(x[b:b + 1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
def test_autocast_runs_on_cpu(dtype, kind):
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10, attention=kind).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=dtype):
            out = model(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_timm_weights_load_into_a_clustered_model():
    reference = timm.create_model("coat_lite_tiny")
    model = ccoat.load_timm_weights(ccoat.create_model("ccoat_lite_tiny"), reference)
    assert torch.equal(model.stages[2].blocks[1].attn.qkv.weight,
                       reference.serial_blocks3[1].factoratt_crpe.qkv.weight)


def test_record_clusters_keeps_each_block_for_the_pass_and_nothing_outside():
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_clusters(model) as records:
        model(x)
    assert sorted(records) == [f"stages.{i}.blocks.{j}" for i in range(4) for j in range(2)]
    first = records["stages.0.blocks.0"]
    assert first["ids"].shape == (2, 8, 16 * 16)
    K = first["counts"].shape[-1]
    assert first["prototypes"].shape == (2, 8, K, 8)
    assert torch.equal(first["counts"].sum(-1), torch.full((2, 8), 256))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert records["stages.0.blocks.0"] is first  # nothing recorded outside the context
    assert all(not m._recorders for m in model.modules() if hasattr(m, "_recorders"))


def test_nested_records_both_see_the_clusters_and_the_outer_keeps_recording():
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10).eval()
    with torch.no_grad(), record_clusters(model) as outer:
        with record_clusters(model) as inner:
            model(torch.randn(2, 3, 32, 32))
        assert sorted(outer) == sorted(inner) and len(outer) == 8
        for name in outer:
            assert torch.equal(outer[name]["ids"], inner[name]["ids"])
        model(torch.randn(1, 3, 32, 32))  # the inner record is closed, the outer one is not
    assert outer["stages.0.blocks.0"]["ids"].shape[0] == 1
    assert inner["stages.0.blocks.0"]["ids"].shape[0] == 2


def test_record_clusters_of_no_model_says_what_it_expects():
    with pytest.raises(TypeError, match="expects a model .* got NoneType"):
        record_clusters(None)


@pytest.mark.parametrize("stage, block", [(0, 0), (1, 1)])
def test_block_qkv_gives_what_the_block_computes(stage, block):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar").eval()
    seen = {}
    attn = model.stages[stage].blocks[block].attn
    attn.qkv.register_forward_hook(lambda m, i, o: seen.setdefault("qkv", o))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
        q, k, v, size = ccoat.clustering.block_qkv(model, x, stage, block)
    B, N, _ = seen["qkv"].shape
    expected = seen["qkv"].reshape(B, N, 3, 8, -1).permute(2, 0, 3, 1, 4)
    assert size == (16 // 2 ** stage, 16 // 2 ** stage)
    for got, want in zip((q, k, v), expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="expected stage in 0..3"):
        ccoat.clustering.block_qkv(model, x, 4, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("redraw", [False, True])
def test_cuda_equals_cpu(redraw):
    q, k, v = _qkv(N=1 + 256)
    cpu = ClusteredCore(8, n_hashes=16, bucket_width=1.0, max_clusters=40, redraw=redraw, seed=0)
    gpu = ClusteredCore(8, n_hashes=16, bucket_width=1.0, max_clusters=40, redraw=redraw, seed=0).cuda()
    expected = cpu(q, k, v)
    got = gpu(q.cuda(), k.cuda(), v.cuda())
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-4)


def test_block_index_reads_a_block_path_and_refuses_others():
    assert block_index("stages.0.blocks.1") == (0, 1)
    assert block_index("stages.3.blocks.12.attn.core") == (3, 12)
    for bad in ("stages.0", "head", "stages.x.blocks.1", "stages.0.cpe.proj"):
        with pytest.raises(ValueError, match="expected a block path 'stages.i.blocks.j'"):
            block_index(bad)


def test_clusters_per_row_is_the_mean_over_images_and_heads_in_block_order():
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10).eval()
    with torch.no_grad(), record_clusters(model) as records:
        model(torch.randn(2, 3, 32, 32))
    means = clusters_per_row(records)
    assert list(means) == [f"stages.{s}.blocks.{b}" for s in range(4) for b in range(2)]
    for name, mean in means.items():
        assert mean == pytest.approx(records[name]["num_clusters"].float().mean().item())


def test_clusters_per_stage_is_the_mean_over_images_heads_and_blocks_of_each_stage():
    model = ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10).eval()
    with torch.no_grad(), record_clusters(model) as records:
        model(torch.randn(2, 3, 32, 32))
    per_stage = clusters_per_stage(records)
    assert list(per_stage) == ["stage1", "stage2", "stage3", "stage4"]
    for stage, mean in per_stage.items():
        counts = torch.cat([r["num_clusters"].flatten() for name, r in records.items()
                            if f"stage{block_index(name)[0] + 1}" == stage])
        assert mean == pytest.approx(counts.float().mean().item())
    assert clusters_per_stage({}) == {}
