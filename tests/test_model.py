"""CoaT-Lite from scratch: parity with timm, limit cases and bad input."""
import pytest
import timm
import torch

import ccoat

SIZES = ["tiny", "mini", "small", "medium"]


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("img_size", [224, 288])
def test_logits_equal_timm(size, img_size):
    torch.manual_seed(0)
    reference = timm.create_model(f"coat_lite_{size}", img_size=img_size).eval()
    model = ccoat.create_model(f"coat_lite_{size}", img_size=img_size).eval()
    ccoat.load_timm_weights(model, reference)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        diff = (model(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5
    assert _count(model) == _count(reference)


def test_load_from_state_dict_equals_load_from_model():
    reference = timm.create_model("coat_lite_tiny").eval()
    a = ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), reference)
    b = ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), reference.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_timm_weights_of_another_size_are_refused():
    with pytest.raises(ValueError, match="shape of"):
        ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), timm.create_model("coat_lite_mini"))


def test_timm_weights_of_full_coat_are_refused():
    with pytest.raises(ValueError, match="not a CoaT-Lite parameter"):
        ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), {"parallel_blocks.0.norm12.weight": torch.ones(3)})


def test_non_square_and_other_sizes_run():
    model = ccoat.create_model("coat_lite_tiny", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 96)).shape == (1, 7)


def test_cifar_variant_has_sane_grids():
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    grids = []
    for stage in model.stages:
        x, size = stage(x)
        grids.append(size)
        x = x[:, 1:].transpose(1, 2).reshape(2, -1, *size)
    assert grids == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_variant_keeps_parameter_count_apart_from_first_patch():
    big, small = ccoat.create_model("coat_lite_tiny"), ccoat.create_model("coat_lite_tiny_cifar")
    # The first patch embedding has 3*4*4 vs 3*2*2 input weights per output channel.
    assert _count(big) - _count(small) == 64 * 3 * (16 - 4)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 1, 224, 224), "expected 3 input channels, got 1"),
        ((2, 3, 225, 225), "divisible by 32, got 225x225"),
        ((2, 3, 224, 200), "divisible by 32, got 224x200"),
        ((3, 224, 224), "expected a 4-D image batch"),
    ],
)
def test_bad_input_says_what_was_expected(shape, message):
    model = ccoat.create_model("coat_lite_tiny")
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_cifar_variant_needs_sides_divisible_by_16():
    model = ccoat.create_model("coat_lite_tiny_cifar")
    with pytest.raises(ValueError, match="divisible by 16, got 40x40"):
        model(torch.randn(1, 3, 40, 40))


def test_gradients_reach_every_parameter():
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_empty_batch_and_bad_class_counts_are_named():
    import ccoat

    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.zeros(0, 3, 32, 32))
    for bad in (2.5, -1, True):
        with pytest.raises(ValueError, match=f"num_classes must be a whole number >= 0, got {bad!r}"):
            ccoat.create_model("coat_lite_tiny_cifar", num_classes=bad)


def test_clustering_options_go_to_the_clustered_stages_of_a_mixed_list():
    import ccoat

    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10, n_hashes=8,
                               attention=["clustered", "factorized", "factorized", "factorized"])
    assert model.attention_kinds == ["clustered", "factorized", "factorized", "factorized"]
    assert model.stages[0].blocks[0].attn.core.hasher.projections.shape[-1] == 8
    model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="need a clustered attention kind"):
        ccoat.create_model("coat_lite_tiny_cifar", n_hashes=8)
