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


def test_integer_tensors_where_the_model_has_floats_are_refused_not_cast(saved, tmp_path):
    """A cast would load an int32 file into float weights without a word."""
    from safetensors.torch import load_file, save_file

    _, path = saved
    state = load_file(path)
    state["head.weight"] = state["head.weight"].to(torch.int32)
    bad = tmp_path / "int32.safetensors"
    save_file(state, bad)  # no checksum: the dtype check alone must catch it
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"head.weight: model torch.float32, file torch.int32"):
        load_weights(model, bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_flipped_bit_fails_the_checksum_and_files_without_one_still_load(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    model, path = saved
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # then the tensors' bytes
    data[header + (len(data) - header) // 2] ^= 0x04  # one bit of one weight
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    target = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ValueError, match=rf"{flipped} is corrupt: its tensors do not match"):
        load_weights(target, flipped)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    old = tmp_path / "old.safetensors"  # as written before the checksum existed
    save_file(load_file(path), old, metadata={"model": '"coat_lite_tiny_cifar"'})
    load_weights(target, old)
    torch.testing.assert_close(target.head.weight, model.head.weight.half().float())


def test_the_committed_weights_written_without_a_checksum_still_load():
    from pathlib import Path

    from safetensors import safe_open

    path = (Path(__file__).resolve().parents[1] / "results" / "imagenette128_gpu_coat_lite_tiny"
            / "model.safetensors")
    if path.stat().st_size < 1000:  # a Git LFS pointer in a checkout without LFS
        pytest.skip("the committed weights are not in this checkout")
    with safe_open(str(path), framework="pt") as f:
        assert "tensors_sha256" not in (f.metadata() or {})
    meta = read_metadata(path)
    model = ccoat.create_model(meta["model"], num_classes=meta["num_classes"],
                               img_size=meta["img_size"])
    load_weights(model, path)
