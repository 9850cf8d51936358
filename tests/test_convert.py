"""ccoat.convert: timm's CoaT-Lite converted gives its logits, a ccoat model converts in place
keeping every weight, per-stage kinds, refusals, and what a converted token-clustered model
computes."""
import copy

import pytest
import timm
import torch

import ccoat
from ccoat.model import CLUSTERED_KINDS


def _images(n=2, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _cores(model):
    return [block.attn.core for stage in model.stages for block in stage.blocks]


def test_convert_timm_to_factorized_gives_timm_logits_and_leaves_timm_alone():
    torch.manual_seed(0)
    reference = timm.create_model("coat_lite_tiny").eval()
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    model = ccoat.convert_attention(reference, "factorized")
    assert isinstance(model, ccoat.CoaTLite) and not model.training
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in reference.state_dict().items())
    assert type(reference.serial_blocks1[0].factoratt_crpe).__name__ == "FactorAttnConvRelPosEnc"


def test_convert_with_tiny_bucket_width_equals_softmax():
    torch.manual_seed(0)
    reference = timm.create_model("coat_lite_tiny").eval()
    softmax = ccoat.convert_attention(reference, "softmax")
    clustered = ccoat.convert_attention(reference, "clustered", bucket_width=1e-6, n_hashes=4)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clustered(x), softmax(x), atol=1e-5, rtol=0)


def test_convert_ccoat_model_in_place_keeps_every_weight():
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    before = {n: p.clone() for n, p in model.named_parameters()}
    same = ccoat.convert_attention(model, "clustered", bucket_width=1.0)
    assert same is model and model.attention_kinds == ["clustered"] * 4
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert model.stages[0].blocks[1].attn.core.hasher.bucket_width == 1.0
    ccoat.convert_attention(model, "factorized")
    assert model.attention_kinds == ["factorized"] * 4


def test_convert_refuses_what_it_cannot_convert():
    with pytest.raises(ValueError, match="expected a ccoat CoaTLite or a timm CoaT-Lite"):
        ccoat.convert_attention(torch.nn.Linear(2, 2), "clustered")
    with pytest.raises(ValueError, match="parallel blocks"):
        ccoat.convert_attention(timm.create_model("coat_tiny"), "clustered")
    with pytest.raises(ValueError, match="attention kind must be one of"):
        ccoat.convert_attention(ccoat.create_model("coat_lite_tiny_cifar"), "linear")


def test_a_list_of_four_kinds_gives_each_stage_its_kind():
    torch.manual_seed(0)
    kinds = ["clustered", "softmax", "factorized", "clustered_factorized"]
    model = ccoat.convert_attention(ccoat.create_model("coat_lite_tiny_cifar"), kinds,
                                    bucket_width=2.0)
    assert model.attention_kinds == kinds
    assert all(block.attn.kind == kind for stage, kind in zip(model.stages, kinds)
               for block in stage.blocks)
    assert model.stages[3].blocks[0].attn.core.hasher.bucket_width == 2.0


def test_a_tuple_of_kinds_converts_a_timm_coat_lite_as_create_model_builds_it():
    torch.manual_seed(0)
    kinds = ("softmax", "factorized", "softmax", "factorized")
    reference = timm.create_model("coat_lite_tiny", num_classes=10).eval()
    converted = ccoat.convert_attention(reference, kinds)
    assert converted.attention_kinds == list(kinds)


@pytest.mark.parametrize("kind, message", [
    (["factorized"] * 3, "need 4 entries, got 3"),
    (["factorized", "softmax", "linear", "softmax"], "attention kind must be one of .* got \\["),
    ([["softmax"]] * 4, "attention kind must be one of"),
    ({"factorized"}, "attention kind must be one of"),
])
def test_bad_per_stage_kinds_are_named(kind, message):
    model = ccoat.create_model("coat_lite_tiny_cifar")
    cores = _cores(model)
    with pytest.raises(ValueError, match=message):
        ccoat.convert_attention(model, kind)
    assert all(a is b for a, b in zip(_cores(model), cores))


def test_options_for_a_model_with_no_clustered_stage_are_refused_before_any_change():
    model = ccoat.create_model("coat_lite_tiny_cifar")
    cores = _cores(model)
    with pytest.raises(ValueError, match="need a clustered attention kind"):
        ccoat.convert_attention(model, "softmax", bucket_width=1.0)
    with pytest.raises(ValueError, match="max_clusters must be None or an integer >= 1"):
        ccoat.convert_attention(model, ["softmax", "clustered", "softmax", "softmax"],
                                max_clusters=0)
    assert all(a is b for a, b in zip(_cores(model), cores))


@pytest.fixture(scope="module")
def token_clustered():
    torch.manual_seed(0)
    return ccoat.create_model("coat_lite_tiny_cifar", num_classes=10, token_clustering="pool",
                              token_stages=(1, 2, 3, 4)).eval()


@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
def test_a_token_clustered_model_refuses_a_clustered_kind_and_stays_as_it_was(
        token_clustered, kind):
    model = copy.deepcopy(token_clustered)
    with torch.no_grad():
        before = model(_images())
    with pytest.raises(ValueError, match=f"stage 1 block 0 \\(TokenClusteredBlock\\) computes "
                                         f"only \\('factorized', 'softmax'\\) attention, got "
                                         f"'{kind}'"):
        ccoat.convert_attention(model, kind)
    assert model.attention_kinds == ["factorized"] * 4
    with torch.no_grad():
        torch.testing.assert_close(model(_images()), before, rtol=0, atol=0)


def test_a_token_clustered_model_computes_the_kind_it_reports(token_clustered):
    """Softmax on prototypes differs from factorized on prototypes; back to factorized, the
    model computes what it computed before (the same weights)."""
    model = copy.deepcopy(token_clustered)
    with torch.no_grad():
        factorized = model(_images())
        softmax = ccoat.convert_attention(model, "softmax")(_images())
        assert model.attention_kinds == ["softmax"] * 4
        assert (softmax - factorized).abs().max() > 1e-3
        back = ccoat.convert_attention(model, "factorized")(_images())
    torch.testing.assert_close(back, factorized, rtol=0, atol=0)


def test_a_core_swapped_in_by_hand_is_refused_when_the_block_runs(token_clustered):
    model = copy.deepcopy(token_clustered)
    block = model.stages[0].blocks[0]
    block.attn.core = ccoat.model.make_core("clustered", head_dim=8)
    with pytest.raises(ValueError, match="token-clustered block runs .* got 'clustered'"):
        model(_images())
