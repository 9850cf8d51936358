"""ccoat.convert: per-stage kinds, and what a converted token-clustered model computes."""
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
