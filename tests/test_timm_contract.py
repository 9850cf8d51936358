"""ccoat's models behave as timm's do, for every registered name (timm's tests/test_models.py
style: parametrised over names, small inputs): pretrained_cfg and data config, features_only and
feature_info, forward_features/forward_head/forward_intermediates, reset_classifier, gradient
checkpointing that saves memory, torch.fx tracing, torch.compile."""
import functools

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image
from timm.data import create_transform, resolve_data_config

import ccoat
from ccoat.model import ATTENTION_KINDS, CLUSTERED_KINDS
from ccoat.registry import MODEL_NAMES

# timm's own coat_lite_* stay timm's: ccoat builds those through ccoat.create_model only.
TIMM_NAMES = [n for n in MODEL_NAMES if n.startswith("ccoat_") or n.endswith("_cifar")]
SHAPE_STATIC_KINDS = ("factorized", "softmax")


def _side(name: str) -> int:
    return 32  # the smallest input every model takes: its stride (32, or 16 for *_cifar)


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """One model per name for the tests that only read it."""
    torch.manual_seed(0)
    return ccoat.create_model(name).eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pretrained_cfg_resolves_a_data_config_and_transform_that_the_model_takes(name):
    model = _model(name)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "num_classes",
                "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["num_classes"] == model.num_classes == 1000
    first_conv = model.get_submodule(cfg["first_conv"])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg["input_size"][0]
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()

    data_cfg = resolve_data_config(model=model)
    assert data_cfg["input_size"] == cfg["input_size"]
    assert data_cfg["mean"] == cfg["mean"] and data_cfg["interpolation"] == cfg["interpolation"]
    transform = create_transform(**data_cfg)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    x = transform(image).unsqueeze(0)
    assert tuple(x.shape[1:]) == cfg["input_size"]
    with torch.no_grad():
        assert model(x).shape == (1, cfg["num_classes"])


def test_small_image_models_take_cifar10_statistics():
    from ccoat import data, registry

    assert registry.CIFAR10_STATS == data.STATS["cifar10"]
    cfg = _model("ccoat_lite_tiny_cifar").pretrained_cfg
    assert (cfg["mean"], cfg["std"]) == data.STATS["cifar10"] and cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_create_model_gives_the_same_model_and_cfg(name):
    model = timm.create_model(name, num_classes=7, pretrained_cfg_overlay=dict(crop_pct=0.95))
    assert isinstance(model, ccoat.CoaTLite)
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes == 7
    assert cfg["crop_pct"] == 0.95  # the overlay, as timm applies it
    assert {k: v for k, v in cfg.items() if k not in ("num_classes", "crop_pct")} == \
        {k: v for k, v in _model(name).pretrained_cfg.items() if k not in ("num_classes", "crop_pct")}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_intermediates_give_the_four_stage_maps(name):
    model, side = _model(name), _side(name)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        features = model.forward_features(x)
        assert torch.equal(final, features)
        assert torch.equal(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
    assert len(maps) == 4 and len(model.feature_info) == 4
    for fmap, info in zip(maps, model.feature_info):
        assert fmap.shape == (2, info["num_chs"], side // info["reduction"], side // info["reduction"])
        model.get_submodule(info["module"])  # names a real module
    assert all(torch.equal(a, b) for a, b in zip(last_two, maps[2:]))
    tokens = model.norm(torch.cat([final[:, :1], maps[3].flatten(2).transpose(1, 2)], 1))
    assert torch.allclose(normed[0], tokens[:, 1:].transpose(1, 2).reshape_as(maps[3]), atol=1e-6)


def _features_model(name, **kwargs):
    create = timm.create_model if name in TIMM_NAMES else ccoat.create_model
    return create(name, features_only=True, **kwargs).eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_only_gives_the_stage_maps_with_feature_info(name):
    side = _side(name)
    features = _features_model(name)
    x = torch.randn(2, 3, side, side)
    assert features.feature_info.channels() == list(features.model.config.embed_dims)
    assert features.feature_info.reduction() == [f["reduction"] for f in _model(name).feature_info]
    with torch.no_grad():
        maps = features(x)
        # The same weights in the whole model give the same maps.
        full = _model(name)
        features.model.load_state_dict(full.state_dict(), strict=False)
        same = features(x)
        expected = full.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [
        (2, c, side // r, side // r) for c, r in zip(features.feature_info.channels(),
                                                       features.feature_info.reduction())]
    assert all(torch.equal(a, b) for a, b in zip(same, expected))


@pytest.mark.parametrize("name", ["ccoat_lite_tiny_cifar", "coat_lite_mini"])
def test_out_indices_pick_stages_and_drop_the_rest(name):
    features = _features_model(name, out_indices=(1, 3)) if name in TIMM_NAMES else \
        ccoat.create_model(name, features_only=True, out_indices=(1, 3))
    assert features.feature_info.channels() == [features.model.config.embed_dims[i] for i in (1, 3)]
    early = ccoat.create_model(name, features_only=True, out_indices=(0, 1))
    assert len(early.model.stages) == 2 and not isinstance(early.model.head, nn.Linear)
    side = _side(name)
    with torch.no_grad():
        assert len(early(torch.randn(1, 3, side, side))) == 2
    with pytest.raises(ValueError, match="stage indices in -4..3"):
        ccoat.create_model(name, features_only=True, out_indices=(0, 4))


def test_reset_classifier_changes_the_head_as_timm_does():
    model = ccoat.create_model("ccoat_lite_tiny_cifar").train()
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features) and model.num_classes == 0
    model.reset_classifier(7, global_pool="token")
    assert model(x).shape == (2, 7) and model.get_classifier().training
    with pytest.raises(ValueError, match="global_pool must be 'token'"):
        model.reset_classifier(7, global_pool="avg")


def _saved_bytes(model, x) -> tuple[int, dict]:
    """Bytes that autograd saves for the backward in one forward, and the gradients."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).logsumexp(-1).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return total, grads


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_grad_checkpointing_saves_memory_and_keeps_the_gradients(kind):
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny_cifar", attention=kind).train()
    x = torch.randn(4, 3, 32, 32)
    plain_bytes, plain = _saved_bytes(model, x)
    model.set_grad_checkpointing()
    ckpt_bytes, ckpt = _saved_bytes(model, x)
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)
    assert plain.keys() == ckpt.keys()
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)
    model.set_grad_checkpointing(False)
    assert _saved_bytes(model, x)[0] == plain_bytes


def test_grad_checkpointing_refuses_redrawn_projections_with_a_private_seed():
    model = ccoat.create_model("ccoat_lite_tiny_cifar", redraw=True, seed=0)
    with pytest.raises(ValueError, match="redraw other hash projections"):
        model.set_grad_checkpointing()


@pytest.mark.parametrize("kind", SHAPE_STATIC_KINDS)
def test_fx_traces_the_shape_static_kinds(kind):
    model = ccoat.create_model("coat_lite_tiny_cifar", attention=kind).eval()
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 64)  # another size than anything seen before: shapes stay symbolic
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))
    with pytest.raises(ValueError, match="divisible by 16"):
        graph(torch.randn(1, 3, 30, 30))  # the traced model still checks its input


@pytest.mark.parametrize("kind", CLUSTERED_KINDS)
def test_fx_refuses_the_clustered_kinds_and_says_why(kind):
    model = ccoat.create_model("coat_lite_tiny_cifar", attention=kind)
    with pytest.raises(TypeError, match="torch.fx cannot trace .* depends on the query values"):
        torch.fx.symbolic_trace(model)


def _forward_backward(run, model, x):
    out = run(x)
    out.logsumexp(-1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.slow
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_torch_compile_gives_the_eager_forward_and_backward(kind):
    """Every kind compiles (the clustered ones with graph breaks where the cluster count is
    read back). ``aot_eager`` traces forward and backward as inductor does, without inductor's
    C++ code generation, which takes minutes per kind on a 2-core CPU."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    # One block per stage and narrow widths: the same code as every named model, compiled faster.
    config = ccoat.CoaTLiteConfig((16, 32, 32, 32), (1, 1, 1, 1), (2, 2, 2, 2), patch_size=2)
    model = ccoat.CoaTLite(config, num_classes=10, attention=kind).train()
    x = torch.randn(2, 3, 32, 32)
    eager_out, eager_grads = _forward_backward(model, model, x)
    compiled = torch.compile(model, backend="aot_eager")
    out, grads = _forward_backward(compiled, model, x)
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-5)
    for name in eager_grads:
        torch.testing.assert_close(grads[name], eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)


# Every small-image name and one 224 px name (the other sizes differ only in widths; a 224 px
# pass of each takes minutes on a shared cpu).
CFG_NAMES = [n for n in TIMM_NAMES if n.endswith("_cifar")] + ["ccoat_lite_tiny"]


@pytest.mark.parametrize("name", CFG_NAMES)
def test_default_cfg_describes_what_the_model_returns_at_its_default_input_size(name):
    """The fields timm's test_model_default_cfgs reads. forward_features gives the last stage's
    grid as tokens (class token first), not a spatial map, so pool_size is None: what timm's
    own CoaT-Lite says for the same output. (Factorized attention: the shapes and the cfg do
    not depend on the kind, and it is the quickest at 224 px.)"""
    torch.manual_seed(0)
    model = timm.create_model(name, attention="factorized").eval()
    cfg = model.default_cfg
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        features = model.forward_features(x)
        last_map = model.forward_intermediates(x, indices=[-1], intermediates_only=True)[0]
        pre_logits = model.forward_head(features, pre_logits=True)
    side = last_map.shape[-1]
    assert side == cfg["input_size"][-1] // model.config.stride
    assert features.shape == (1, 1 + side * side, model.num_features)
    assert cfg["pool_size"] is None
    assert timm.models.get_pretrained_cfg("coat_lite_tiny").pool_size is None
    assert pre_logits.shape == (1, model.head_hidden_size)
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    assert cfg["num_classes"] == model.num_classes
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == pre_logits.shape
