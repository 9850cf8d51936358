"""ccoat.weights: half-precision files that load into any attention kind, or say why not."""
import pytest
import torch

import ccoat
from ccoat.weights import load_weights, read_metadata, save_weights


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10).eval()
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_weights(model, path, metadata={"model": "coat_lite_tiny_cifar", "epochs": 3})
    return model, path


def test_round_trip_equals_the_model_up_to_half_precision(saved):
    model, path = saved
    loaded = load_weights(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10).eval(), path)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(b, a.half().to(a.dtype), msg=name)
    assert path.stat().st_size < 12e6
    assert read_metadata(path) == {"model": "coat_lite_tiny_cifar", "epochs": 3, "num_classes": 10}


@pytest.mark.parametrize("name, attention", [("coat_lite_tiny_cifar", "softmax"),
                                             ("ccoat_lite_tiny_cifar", None)])
def test_any_attention_kind_takes_the_same_file(saved, name, attention):
    model, path = saved
    other = ccoat.create_model(name, num_classes=10, attention=attention)
    own_buffers = {k: v.clone() for k, v in other.state_dict().items() if ".attn.core." in k}
    load_weights(other, path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value.half().to(value.dtype))
    for key, value in own_buffers.items():  # a clustered core keeps its own hash projections
        assert torch.equal(other.state_dict()[key], value)


@pytest.mark.parametrize("name, classes, message", [
    ("coat_lite_tiny_cifar", 100, r"head.weight: model \(100, 320\), file \(10, 320\)"),
    ("coat_lite_mini_cifar", 10, "of another shape"),
])
def test_another_size_or_class_count_is_refused_and_nothing_is_loaded(saved, name, classes, message):
    _, path = saved
    other = ccoat.create_model(name, num_classes=classes)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_weights(other, path)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_corrupt_or_missing_file_is_a_clear_error(tmp_path):
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_weights(model, bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(model, tmp_path / "missing.safetensors")
