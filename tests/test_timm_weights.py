"""timm's ImageNet weights: fetched where the Hub is reachable or cached, refused at once where
not, and restricted to a subset of ImageNet's classes (Imagenette's) without changing a logit."""
import json
import socket
from pathlib import Path

import pytest
import timm
import torch

import ccoat
from ccoat import timm_weights
from ccoat.timm_weights import (
    PretrainedUnavailable,
    imagenet_indices,
    restrict_classes,
    timm_pretrained,
)

IMAGENETTE = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
              "n03417042", "n03425413", "n03445777", "n03888257"]
CLASS_INDEX = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_class_index.json"


def test_restricted_head_gives_the_chosen_columns_of_the_full_logits():
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny").eval()  # a random-weight stand-in
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        indices = imagenet_indices(IMAGENETTE)
        restrict_classes(model, indices)
        subset = model(x)
    assert subset.shape == (2, 10) and model.num_classes == 10
    torch.testing.assert_close(subset, full[:, indices])


@pytest.mark.skipif(not CLASS_INDEX.is_file(), reason="no ImageNet class index in ../shared/data")
def test_imagenet_indices_agree_with_the_published_class_index():
    published = {wnid: int(i) for i, (wnid, _) in json.loads(CLASS_INDEX.read_text()).items()}
    assert imagenet_indices(IMAGENETTE) == [published[w] for w in IMAGENETTE]


def test_unknown_wnids_and_a_head_too_small_are_refused():
    with pytest.raises(ValueError, match="n99999999"):
        imagenet_indices(["n01440764", "n99999999"])
    model = ccoat.create_model("coat_lite_tiny", num_classes=10)
    with pytest.raises(ValueError, match="more than 11 outputs"):
        restrict_classes(model, [0, 11])


def _no_cache(monkeypatch):
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)


def test_offline_without_a_cached_copy_fails_at_once_without_asking_timm(monkeypatch):
    _no_cache(monkeypatch)
    tried = []

    def unreachable(address, timeout=None):
        tried.append((address, timeout))
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was asked"))
    with pytest.raises(PretrainedUnavailable, match="not reachable"):
        ccoat.create_model("coat_lite_tiny", pretrained=True)
    assert len(tried) == 1 and tried[0][1] == 5.0  # one try, bounded: no minute of retries


def test_a_cached_copy_is_loaded_without_the_network(monkeypatch, tmp_path):
    torch.manual_seed(1)
    reference = timm.create_model("coat_lite_tiny")  # stands in for the ImageNet weights
    file = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), file)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache",
                        lambda repo, filename, **k: str(file) if filename == file.name else None)
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: pytest.fail("the network was tried"))
    model = ccoat.create_model("coat_lite_tiny", pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)  # timm's CoaT takes its fixed input size only
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=1e-5, rtol=1e-5)


def test_a_hub_error_after_the_host_answers_is_one_clear_error(monkeypatch):
    _no_cache(monkeypatch)

    class Socket:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Socket())

    def refuse(*args, **kwargs):
        raise OSError("HTTP 503")

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(PretrainedUnavailable, match="could not be loaded: OSError: HTTP 503"):
        timm_pretrained("coat_lite_tiny")


def test_a_model_without_pretrained_weights_is_named():
    with pytest.raises(ValueError, match="no pretrained weights"):
        ccoat.create_model("coat_lite_tiny_cifar", pretrained=True)
    assert timm_weights.PretrainedUnavailable is ccoat.PretrainedUnavailable
