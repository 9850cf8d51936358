"""Conv-attention: CoaT's attention block and the position encodings it is built from.

CoaT (Xu et al., 2021) gives every stage two depthwise convolutions that are shared by the
stage's blocks:

- the **conv position encoding** (CPE) adds ``DWConv(x)`` to the image tokens before attention;
- the **conv relative position encoding** (CRPE) adds ``q ⊙ DWConv(v)`` to the attention output.

Tokens are laid out as ``[class token, image tokens in row-major order]``. The class token
takes part in attention as query, key and value, but the convolutions see only the image
tokens: the CPE leaves the class token untouched and the CRPE gives it zero.

The attention *core* (what turns ``q, k, v`` into an output) is a small module of its own that
:class:`ConvAttention` receives, as timm's blocks receive their ``attn_layer``: one block can run
CoaT's factorized attention, exact softmax attention, or a clustered kind
(:mod:`ccoat.clustering`) with the very same parameters. The table of kinds, and the function
that builds a core by name, live in :mod:`ccoat.model`, the one module that knows them all.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

# CoaT's CRPE: window size -> number of heads that use it (3 + 3 + 2 = 8 heads).
DEFAULT_CRPE_WINDOWS = {3: 2, 5: 3, 7: 3}


def split_class_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 1 + H*W, C)`` -> class token ``(B, 1, C)`` and image tokens ``(B, H*W, C)``."""
    return x[:, :1], x[:, 1:]


def _check_tokens(n_tokens: int, size: tuple[int, int]) -> None:
    H, W = size
    if n_tokens != 1 + H * W:
        raise ValueError(
            f"expected 1 + H*W = {1 + H * W} tokens (class token + {H}x{W} grid), got {n_tokens}"
        )


torch.fx.wrap("_check_tokens")  # one call in a torch.fx graph, checked when the graph runs


class ConvPosEnc(nn.Module):
    """CPE: ``x + DWConv3x3(x)`` on the image tokens; the class token passes through."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        _check_tokens(N, size)
        cls_token, img_tokens = split_class_token(x)
        feat = img_tokens.transpose(1, 2).reshape(B, C, *size)  # (B, C, H, W)
        feat = feat + self.proj(feat)
        return torch.cat([cls_token, feat.flatten(2).transpose(1, 2)], dim=1)


class ConvRelPosEnc(nn.Module):
    """CRPE: ``q ⊙ DWConv(v)``, with a different window size for different groups of heads.

    ``windows`` maps a window size to the number of heads that use it. The output has the
    shape of ``q``; its class-token row is zero (the convolution sees only the image grid).
    """

    def __init__(self, head_dim: int, num_heads: int, windows: dict[int, int] | None = None):
        super().__init__()
        windows = dict(windows or DEFAULT_CRPE_WINDOWS)
        if sum(windows.values()) != num_heads:
            raise ValueError(
                f"CRPE windows must cover all {num_heads} heads, got {windows} "
                f"({sum(windows.values())} heads)"
            )
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.windows = windows
        self.convs = nn.ModuleList(
            nn.Conv2d(h * head_dim, h * head_dim, w, padding=w // 2, groups=h * head_dim)
            for w, h in windows.items()
        )
        self.channel_splits = [h * head_dim for h in windows.values()]

    def forward(self, q: torch.Tensor, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, h, N, Ch = q.shape  # (B, heads, 1 + H*W, C_head)
        _check_tokens(N, size)
        v_img = v[:, :, 1:].transpose(-1, -2).reshape(B, h * Ch, *size)  # (B, heads*C_head, H, W)
        parts = v_img.split(self.channel_splits, dim=1)  # one group of heads per window size
        conv_v = torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], dim=1)
        conv_v = conv_v.reshape(B, h, Ch, N - 1).transpose(-1, -2)  # (B, heads, H*W, C_head)
        out = q[:, :, 1:] * conv_v
        return F.pad(out, (0, 0, 1, 0))  # zero row for the class token


# ---------------------------------------------------------------------------------------------
# Attention cores: (q, k, v) of shape (B, heads, N, C_head) -> output of the same shape.


def factorized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """CoaT's factorized attention ``scale * q @ (softmax_N(k)ᵀ v)``.

    The softmax runs over the tokens of ``k``, so ``softmax(k)ᵀ v`` is a ``C_head x C_head``
    matrix: the cost is ``O(N C_head²)`` per head, linear in the number of tokens ``N``.
    """
    scale = q.shape[-1] ** -0.5
    context = k.softmax(dim=2).transpose(-1, -2) @ v  # (B, heads, C_head, C_head)
    # Scaling the small C_head x C_head context rather than the N x C_head output saves a pass.
    return q @ (context * scale)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact attention ``softmax(q kᵀ * scale) v``: ``O(N² C_head)`` per head, through SDPA."""
    return F.scaled_dot_product_attention(q, k, v)


class FactorizedCore(nn.Module):
    kind = "factorized"

    def forward(self, q, k, v, size=None):
        return factorized_attention(q, k, v)


class SoftmaxCore(nn.Module):
    kind = "softmax"

    def forward(self, q, k, v, size=None):
        return softmax_attention(q, k, v)


def _keep_own_core_buffers(module, state_dict, prefix, *args) -> None:
    """Let one state dict load into every attention kind of a model.

    All kinds share their parameters (qkv, proj); only the clustered cores have buffers of
    their own (hash projections). Before loading, drop core entries this core does not have
    (a clustered model's state dict into a factorized one) and fill in the ones it has but the
    state dict lacks (a factorized or timm state dict into a clustered one): the core keeps
    its own. Entries that the core has and the state dict has are loaded as usual.
    """
    core_prefix = prefix + "core."
    own = {core_prefix + key: value for key, value in module.core.state_dict().items()}
    for key in [k for k in state_dict if k.startswith(core_prefix) and k not in own]:
        del state_dict[key]
    for key, value in own.items():
        state_dict.setdefault(key, value)


class ConvAttention(nn.Module):
    """CoaT's conv-attention: qkv projection, an attention core, plus CRPE, then projection.

    ``out = proj(core(q, k, v) + crpe(q, v))``. ``core_layer(head_dim)`` builds the core, any
    module with ``forward(q, k, v, size)`` on ``(B, heads, N, C_head)`` tensors (timm's
    ``attn_layer`` idiom; CoaT's factorized attention when none is given). The CRPE module is
    owned by the stage and passed in, because CoaT shares one CRPE among all blocks of a stage.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 core_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # The core is built last, from one head's width, so that a clustered core's hash
        # projections are drawn after the weights above (as every ccoat model has drawn them).
        self.core = FactorizedCore() if core_layer is None else core_layer(dim // num_heads)
        self.register_load_state_dict_pre_hook(_keep_own_core_buffers)

    @property
    def kind(self) -> str:
        return self.core.kind

    def forward(self, x: torch.Tensor, size: tuple[int, int], crpe: ConvRelPosEnc) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, C_head)
        out = self.core(q, k, v, size) + crpe(q, v, size)  # (B, heads, N, C_head)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))
