"""The cost audit: published MACs, counted = analytic, bad input."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils import flop_counter as torch_flop_counter

import ccoat
from ccoat import cost, measure
from ccoat.clustering import block_index, clusters_per_row
from ccoat.model import CLUSTERED_KINDS

# timm's model cards (huggingface.co/timm/coat_lite_*.in1k): GMACs at 224 and parameters (M).
PUBLISHED = {"tiny": (1.6, 5.7), "mini": (2.0, 11.0), "small": (4.0, 19.8), "medium": (9.8, 44.6)}


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_macs_match_timm_published(size):
    model = ccoat.create_model(f"coat_lite_{size}")
    gmacs, mparams = PUBLISHED[size]
    counted = cost.macs(model, img_size=224, batch_size=1)
    assert counted["total"] == pytest.approx(gmacs * 1e9, rel=0.03)
    assert cost.parameters(model)["total"] == pytest.approx(mparams * 1e6, rel=0.01)


def test_macs_components_add_up_and_name_every_part():
    counted = cost.macs(ccoat.create_model("coat_lite_tiny"))
    assert counted["total"] == sum(v for k, v in counted.items() if k != "total")
    assert set(counted) == {"patch_embed", "cpe", "norm", "qkv", "attention", "crpe", "proj",
                            "mlp", "residual", "head", "total"}
    assert counted["norm"] == counted["residual"] == 0  # no matrix product: ops, not MACs
    assert all(counted[c] > 0 for c in ("patch_embed", "cpe", "qkv", "attention", "crpe",
                                        "proj", "mlp", "head"))


def _as_torch_2_11(monkeypatch):
    """torch's counter as torch 2.11 had it: no formula for the fused attention kernels, which
    then count 0 (issue 17). ccoat's own formulas must make up for it."""
    stripped = {op: f for op, f in torch_flop_counter.flop_registry.items() if "attention" not in str(op)}
    monkeypatch.setattr(torch_flop_counter, "flop_registry", stripped)


TORCH_COUNTERS = ["installed", "without-torch-sdpa-formulas"]


def _sdpa_formula(B, h, n_q, n_k, c):
    return 2 * (2 * B * h * n_q * n_k * c)  # two products, two FLOPs per MAC


@pytest.mark.parametrize("registry", TORCH_COUNTERS)
@pytest.mark.parametrize("route", ["cpu", "cpu-math", "meta"])
def test_attention_count_equals_the_formula_on_every_route(monkeypatch, registry, route):
    if registry != "installed":
        _as_torch_2_11(monkeypatch)
        with torch_flop_counter.FlopCounterMode(display=False) as plain:
            F.scaled_dot_product_attention(*torch.randn(3, 1, 2, 5, 4).unbind(0))
        assert plain.get_total_flops() == 0  # the failure this guards against
    device = "meta" if route == "meta" else "cpu"
    q = torch.randn(2, 8, 65, 8, device=device)
    k, v = torch.randn(2, 2, 8, 33, 8, device=device).unbind(0)
    backend = contextlib.nullcontext()
    if route == "cpu-math":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = sdpa_kernel(SDPBackend.MATH)
    with backend, cost.flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == _sdpa_formula(2, 8, 65, 33, 8)


# The extra arguments each fused kernel needs besides (q, k, v).
_KERNEL_ARGS = {"_scaled_dot_product_efficient_attention": (None, False),
                "_scaled_dot_product_cudnn_attention": (None, False)}


@pytest.mark.parametrize("op", cost.SDPA_OPS, ids=str)
def test_every_fused_attention_kernel_of_this_torch_is_counted_by_the_formula(monkeypatch, op):
    _as_torch_2_11(monkeypatch)
    q = torch.empty(2, 8, 65, 8, device="meta")
    k = v = torch.empty(2, 8, 33, 8, device="meta")
    extra = _KERNEL_ARGS.get(str(op).removeprefix("aten."), ())
    try:
        with cost.flop_counter() as counter:
            op(q, k, v, *extra)
    except (NotImplementedError, RuntimeError) as error:
        if "flop" in str(error).lower():
            raise
        # No meta kernel for this one on this torch: check the registered formula itself.
        flops = counter.flop_registry[op](q, k, v, *extra, out_val=None)
    else:
        flops = counter.get_total_flops()
    assert flops == _sdpa_formula(2, 8, 65, 33, 8)


def test_an_attention_kernel_without_a_formula_is_an_error_not_zero(monkeypatch):
    _as_torch_2_11(monkeypatch)
    monkeypatch.setattr(cost, "_EXTRA_FLOP_FORMULAS", {})
    with pytest.raises(RuntimeError, match="no FLOP formula for aten._scaled_dot_product"):
        with cost.flop_counter():
            F.scaled_dot_product_attention(*torch.randn(3, 1, 2, 5, 4).unbind(0))


@pytest.mark.parametrize("registry", TORCH_COUNTERS)
@pytest.mark.parametrize("kind", ["softmax", "clustered"])
def test_model_count_does_not_depend_on_torchs_attention_formulas(monkeypatch, registry, kind):
    if registry != "installed":
        _as_torch_2_11(monkeypatch)
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny", attention=kind).eval()
    table = cost.audit(model, 64, 1)
    attention = table[table.component == "attention"]
    assert (attention.macs > 0).all()
    assert (attention.macs == attention.macs_analytic).all(), attention


@pytest.mark.parametrize("kind", ["factorized", "softmax"])
@pytest.mark.parametrize("img_size,batch_size", [(224, 1), ((96, 160), 3)])
def test_counted_equals_analytic_per_component(kind, img_size, batch_size):
    model = ccoat.create_model("coat_lite_mini", attention=kind)
    table = cost.audit(model, img_size, batch_size)
    counted = table[table.macs > 0]
    assert len(counted) == 7 * 4 + 1  # 7 components with products in every stage, and the head
    assert (counted.macs / counted.macs_analytic).between(0.98, 1.02).all(), counted
    assert (table[table.macs == 0].macs_analytic == 0).all()


@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
@pytest.mark.parametrize("options", [{}, {"max_clusters": 16}], ids=["adaptive", "capped"])
def test_counted_equals_analytic_for_clustered_kinds(kind, options):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny", attention=kind, **options).eval()
    table = cost.audit(model, (96, 160), 2)
    assert set(cost.CLUSTERING_COMPONENTS) <= set(table.component)
    with_macs = table[table.macs_analytic > 0]
    assert (with_macs.macs / with_macs.macs_analytic).between(0.98, 1.02).all(), with_macs
    assert (table[table.macs_analytic == 0].macs == 0).all()
    clusters = table.attrs["clusters"]
    assert len(clusters) == 8  # every block reported what it formed
    if options:  # the cap's merge step is counted (cdist) as clustering
        assert all(c.padded <= 16 * c.rows for c in clusters.values())
        merged = table[(table.component == "clustering") & (table.macs > 0)]
        assert len(merged) >= 1


def test_clustered_attention_costs_follow_the_padded_cluster_count():
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny", attention="clustered").eval()
    clusters = cost.cluster_counts(model, 224)
    block = clusters[("stage1", 0)]
    assert block.rows == 8 and 1 <= block.total <= block.padded <= 8 * 56 * 56
    # Prototype attention: (1 + K) queries per row against N keys, twice (scores, values).
    analytic = cost.analytic_costs(model, 224, 1, clusters)[("attention", "stage1")]["macs"]
    expected = sum(2 * (c.rows + c.padded) * (1 + 56 * 56) * 8
                   for (stage, _), c in clusters.items() if stage == "stage1")
    assert analytic == expected
    # Without counts, every query is its own cluster: the most a clustered core can cost.
    worst = cost.analytic_costs(model, 224)[("attention", "stage1")]["macs"]
    assert worst > analytic


def test_stage_clusters_per_row_is_the_mean_of_the_stages_blocks_as_recorded():
    torch.manual_seed(0)
    model = ccoat.create_model("ccoat_lite_tiny_cifar").eval()
    images = torch.randn(2, 3, 32, 32)
    clusters = cost.cluster_counts(model, 32, 2, images=images)
    with torch.no_grad(), ccoat.record_clusters(model) as records:
        model(images)  # the same projections, the same clusters
    for stage in range(4):
        blocks = [m for name, m in clusters_per_row(records).items()
                  if block_index(name)[0] == stage]
        assert cost.stage_clusters_per_row(clusters, f"stage{stage + 1}") == \
            pytest.approx(sum(blocks) / len(blocks))
    assert cost.stage_clusters_per_row(clusters, "head") is None  # no block clusters there
    factorized = cost.audit(ccoat.create_model("coat_lite_tiny_cifar"), 32)
    assert cost.stage_clusters_per_row(factorized.attrs.get("clusters")) is None


def test_mixed_kinds_per_stage_are_attributed_to_their_stage():
    model = ccoat.create_model("coat_lite_tiny", attention=["softmax", "factorized"] * 2)
    table = cost.audit(model, 128).set_index(["component", "stage"])
    fact = ccoat.create_model("coat_lite_tiny")
    fact_table = cost.audit(fact, 128).set_index(["component", "stage"])
    assert table.loc[("attention", "stage1"), "macs"] > fact_table.loc[("attention", "stage1"), "macs"]
    assert table.loc[("attention", "stage2"), "macs"] == fact_table.loc[("attention", "stage2"), "macs"]
    assert table.loc[("mlp", "stage1"), "macs"] == fact_table.loc[("mlp", "stage1"), "macs"]


def test_softmax_attention_grows_quadratically_factorized_linearly():
    soft, fact = (ccoat.create_model("coat_lite_tiny", attention=k) for k in ("softmax", "factorized"))
    s1, s2 = (cost.macs(soft, r)["attention"] for r in (256, 512))
    f1, f2 = (cost.macs(fact, r)["attention"] for r in (256, 512))
    assert 15 < s2 / s1 < 16.5  # tokens x4 -> products x16 (the class token aside)
    assert 3.9 < f2 / f1 < 4.1


def test_parameters_per_component_add_up():
    model = ccoat.create_model("coat_lite_tiny")
    params = cost.parameters(model)
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert sum(v for k, v in params.items() if k != "total") == params["total"]
    assert "other" not in params
    by_stage = cost.parameters(model, by_stage=True)
    assert sum(v for k, v in by_stage.items() if k != "total") == params["total"]


@pytest.mark.parametrize("img_size,batch_size,match", [
    (225, 1, "multiple of 32.*225x225"),
    ((224, 100), 1, "multiple of 32.*224x100"),
    (0, 1, "multiple of 32.*0x0"),
    ("224", 1, "img_size must be an int"),
    (224, 0, "batch_size must be an integer >= 1, got 0"),
    (224, -2, "batch_size must be an integer >= 1, got -2"),
    (224, 1.5, "batch_size must be an integer >= 1, got 1.5"),
])
def test_bad_input_says_what_was_expected(img_size, batch_size, match):
    model = ccoat.create_model("coat_lite_tiny")
    for call in (cost.macs, cost.audit, measure.peak_memory, measure.throughput):
        with pytest.raises(ValueError, match=match):
            call(model, img_size, batch_size)


def test_cifar_model_takes_multiples_of_16():
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    assert cost.macs(model, 32)["total"] > 0
    with pytest.raises(ValueError, match="multiple of 16.*24x24"):
        cost.macs(model, 24)


def test_cost_is_reachable_from_the_package():
    import ccoat as package

    assert package.cost.macs(package.create_model("coat_lite_tiny_cifar"), img_size=32)["total"] > 0


# --- token-clustered models (ccoat.token_clustering) -----------------------------------------

def _token_clustered(method, keep, stages=(1,), kind="factorized", **kwargs):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10, attention=kind).eval()
    return ccoat.cluster_tokens(model, method, keep=keep, stages=stages, **kwargs)


def test_a_token_clustered_block_costs_its_sub_layers_at_k_tokens():
    """Stage 1 of CoaT-Lite-Tiny (CIFAR): a 16x16 grid; pool at keep 1/4 cuts it into 8x8
    windows, so qkv, the attention core, proj and the MLP run on 1 + 64 tokens."""
    model, B = _token_clustered("pool", 0.25), 2
    with torch.no_grad(), ccoat.record_token_clusters(model) as records:
        model(torch.randn(B, 3, 32, 32))
    K = records["stages.0.blocks.0"]["sizes"].shape[-1]
    assert K == 64
    block = model.stages[0].blocks[0]
    C, h = block.attn.qkv.in_features, block.attn.num_heads
    D, c, M = block.mlp.fc1.out_features, C // h, 1 + K
    per_block = {
        "qkv": M * C * 3 * C,  # (M x C) @ (C x 3C)
        "attention": h * (M * c * c + M * c * c),  # per head: softmax(k)ᵀ v, then q @ context
        "proj": M * C * C,
        "mlp": M * C * D + M * D * C,  # fc1, fc2
    }
    counted = cost.counted_macs(model, 32, B)
    for component, macs in per_block.items():
        assert counted[(component, "stage1")] == B * len(model.stages[0].blocks) * macs, component
    assert counted.get(("clustering", "stage1"), 0) == 0  # pool's windows come from the shape


@pytest.mark.parametrize("method", ccoat.token_clustering.BLOCK_METHODS)
def test_token_clustering_at_keep_one_counts_what_coat_lite_counts(method):
    plain = cost.macs(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10), 32, 2)
    model = _token_clustered(method, 1.0, stages=(1, 2, 3, 4))
    clustered = cost.macs(model, 32, 2)
    for component, macs in plain.items():
        if component != "total":
            assert clustered[component] == macs, component
    # What LSH adds is its hashing: every token of every block against its 6 projections
    # (LSHOrder's default n_hashes), for each of the 2 images.
    hashing = sum(2 * sh.image_tokens * sh.dim * 6 * sh.depth
                  for sh in cost.stage_shapes(model, 32))
    assert clustered["hashing"] == (hashing if method == "lsh" else 0)
    assert clustered["clustering"] == 0  # nothing to merge at keep=1
    assert clustered["total"] == plain["total"] + clustered["hashing"]


@pytest.mark.parametrize("method", ccoat.token_clustering.BLOCK_METHODS)
@pytest.mark.parametrize("kind, scope", [("factorized", "block"), ("softmax", "stage")])
def test_token_clustered_counted_equals_analytic_per_component(method, kind, scope):
    model = _token_clustered(method, 0.3, stages=(1, 2, 3), kind=kind, scope=scope)
    table = cost.audit(model, 32, 2)
    assert (table.macs == table.macs_analytic).all(), table
    forming = table[table.component.isin(["hashing", "clustering"])].set_index("stage").macs
    if method == "pool":
        assert (forming == 0).all()
    else:  # the forming is counted on its own, in the stages that cluster
        assert forming.sum() > 0 and forming.get("stage4", 0) == 0
    assert (table[table.component.isin(["prototypes", "broadcast"])].ops > 0).all()


def test_token_clustering_makes_the_clustered_stages_cheaper():
    full = cost.macs(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10), 32)
    half = cost.macs(_token_clustered("bipartite", 0.5, stages=(1, 2)), 32)
    for component in ("qkv", "attention", "proj", "mlp"):
        assert half[component] < full[component], component
    assert half["cpe"] == full["cpe"] and half["crpe"] == full["crpe"]  # convolutions: full grid


@pytest.mark.parametrize("make", [
    lambda: ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10, redraw=True),
    lambda: _token_clustered("lsh", 0.5),
], ids=["clustered-redraw", "token-lsh"])
def test_counting_leaves_the_random_state_as_it_found_it(make):
    model = make().eval()
    state = torch.random.get_rng_state()
    cost.macs(model, 32)
    assert torch.equal(torch.random.get_rng_state(), state)
