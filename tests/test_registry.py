"""ccoat.registry: model names, create_model's options, registration with timm."""
import pytest
import timm

import ccoat
from ccoat.registry import MODEL_NAMES, parse_name


def test_names_parse():
    assert parse_name("ccoat_lite_small_cifar") == ("ccoat_lite", "small", True)
    assert parse_name("coat_lite_medium") == ("coat_lite", "medium", False)
    assert len(MODEL_NAMES) == 16


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model name 'coat_lite_huge'.*coat_lite_tiny"):
        ccoat.create_model("coat_lite_huge")


def test_small_image_variant_registered_with_timm():
    model = timm.create_model("coat_lite_tiny_cifar", num_classes=10)
    assert isinstance(model, ccoat.CoaTLite) and model.config.patch_size == 2


def test_ccoat_models_are_registered_with_timm_and_default_to_clustered():
    model = timm.create_model("ccoat_lite_tiny", num_classes=5)
    assert model.attention_kinds == ["clustered"] * 4
    other = ccoat.create_model("coat_lite_mini_cifar", attention="clustered_factorized",
                               n_hashes=8, bucket_width=2.0, max_clusters=16)
    core = other.stages[1].blocks[0].attn.core
    assert other.attention_kinds == ["clustered_factorized"] * 4
    assert (core.hasher.n_hashes, core.hasher.bucket_width, core.max_clusters) == (8, 2.0, 16)
    assert core.hasher.dim == 128 // 8
