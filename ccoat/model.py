"""CoaT-Lite (Xu et al., 2021), written from its concepts, and its Clustering CoaT variants.

A CoaT-Lite is four stages. Each stage

1. embeds patches of the previous feature map (a strided convolution, then LayerNorm),
2. puts a learned class token in front of the image tokens,
3. runs serial blocks ``x += ConvAttention(LN(CPE(x))); x += MLP(LN(x))``, whose CPE and CRPE
   convolutions are shared by all blocks of the stage,
4. drops the class token and hands the image grid to the next stage.

The class token of the last stage, after a LayerNorm, is classified by a linear head.

The patch strides are ``patch_size, 2, 2, 2``, so an input side must be divisible by
``8 * patch_size``: 32 for the ImageNet models (``patch_size=4``), 16 for the small-image
models named ``*_cifar`` (``patch_size=2``, grids 16, 8, 4, 2 for a 32x32 image).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_

from .attention import DEFAULT_CRPE_WINDOWS, ConvAttention, ConvPosEnc, ConvRelPosEnc


@dataclass(frozen=True)
class CoaTLiteConfig:
    """The numbers that tell one CoaT-Lite from another."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]  # serial blocks per stage
    mlp_ratios: tuple[float, float, float, float]
    num_heads: int = 8
    patch_size: int = 4  # first stage's patch; stages 2-4 use 2
    crpe_windows: dict = field(default_factory=lambda: dict(DEFAULT_CRPE_WINDOWS))

    @property
    def stride(self) -> int:
        """Total downsampling of the last stage; input sides must be divisible by it."""
        return self.patch_size * 8


# The four CoaT-Lite sizes, as in the paper and timm.
CONFIGS = {
    "tiny": CoaTLiteConfig((64, 128, 256, 320), (2, 2, 2, 2), (8, 8, 4, 4)),
    "mini": CoaTLiteConfig((64, 128, 320, 512), (2, 2, 2, 2), (8, 8, 4, 4)),
    "small": CoaTLiteConfig((64, 128, 320, 512), (3, 4, 6, 3), (8, 8, 4, 4)),
    "medium": CoaTLiteConfig((128, 256, 320, 512), (3, 6, 10, 8), (4, 4, 4, 4)),
}
# Small-image (CIFAR, 32x32) variants: the same sizes with a 2x2 first patch.
CIFAR_PATCH_SIZE = 2


def config_for(size: str, small_image: bool = False) -> CoaTLiteConfig:
    config = CONFIGS[size]
    return replace(config, patch_size=CIFAR_PATCH_SIZE) if small_image else config


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution, flattened to tokens, then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as CoaT's patch embedding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, C, H, W)
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size  # (B, H*W, C)


class Mlp(nn.Module):
    """The transformer's feed-forward network: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SerialBlock(nn.Module):
    """``x = CPE(x); x += ConvAttention(LN(x)); x += MLP(LN(x))``.

    CPE and CRPE belong to the stage and are passed in: CoaT shares them among its blocks.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 attention: str = "factorized", **attention_options):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ConvAttention(dim, num_heads, kind=attention, **attention_options)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int], cpe: ConvPosEnc,
                crpe: ConvRelPosEnc) -> torch.Tensor:
        x = cpe(x, size)
        x = x + self.drop_path(self.attn(self.norm1(x), size, crpe))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Patch embedding, class token, and serial blocks that share one CPE and one CRPE."""

    def __init__(self, in_chans: int, dim: int, depth: int, patch_size: int, num_heads: int,
                 mlp_ratio: float, crpe_windows: dict, drop_paths: list[float],
                 attention: str = "factorized", **attention_options):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cpe = ConvPosEnc(dim)
        self.crpe = ConvRelPosEnc(dim // num_heads, num_heads, crpe_windows)
        self.blocks = nn.ModuleList(
            SerialBlock(dim, num_heads, mlp_ratio, drop_paths[i], attention, **attention_options)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H_in, W_in)`` -> tokens ``(B, 1 + H*W, C)``, class token first, and ``(H, W)``."""
        x, size = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x, size, self.cpe, self.crpe)
        return x, size


def _as_stage_list(value, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != 4:
            raise ValueError(f"{name} per stage needs 4 entries, got {len(value)}: {value!r}")
        return list(value)
    return [value] * 4


class CoaTLite(nn.Module):
    """CoaT-Lite with a choice of attention core per stage.

    ``attention`` is one kind for all stages or a list of four; clustering options
    (``n_hashes``, ``bucket_width``, ``max_clusters``, ...) go to the clustered kinds.
    """

    def __init__(self, config: CoaTLiteConfig, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, attention="factorized", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, **attention_options):
        super().__init__()
        self.config = config
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.default_img_size = img_size
        self.num_features = config.embed_dims[-1]
        kinds = _as_stage_list(attention, "attention")
        drop_paths = torch.linspace(0, drop_path_rate, sum(config.depths)).tolist()

        stages, in_dim, first = [], in_chans, 0
        for i, (dim, depth) in enumerate(zip(config.embed_dims, config.depths)):
            stages.append(Stage(
                in_dim, dim, depth, config.patch_size if i == 0 else 2, config.num_heads,
                config.mlp_ratios[i], config.crpe_windows, drop_paths[first:first + depth],
                kinds[i], **attention_options,
            ))
            in_dim, first = dim, first + depth
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for stage in self.stages:
            trunc_normal_(stage.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"stages.{i}.cls_token" for i in range(4)}

    @property
    def attention_kinds(self) -> list[str]:
        return [stage.blocks[0].attn.kind for stage in self.stages]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` saying what was expected when ``x`` is not a valid image batch."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"a {x.dim()}-D tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) \
                else type(x).__name__
            raise ValueError(f"expected a 4-D image batch (B, C, H, W), got {got}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")
        H, W = x.shape[-2:]
        stride = self.config.stride
        if H % stride or W % stride or H == 0 or W == 0:
            raise ValueError(f"image side must be divisible by {stride}, got {H}x{W}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> last stage's normalised tokens ``(B, 1 + H/32*W/32, C)``."""
        self.check_input(x)
        B = x.shape[0]
        for i, stage in enumerate(self.stages):
            x, size = stage(x)
            if i < len(self.stages) - 1:  # drop the class token, back to an image grid
                x = x[:, 1:].transpose(1, 2).reshape(B, -1, *size)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])  # the class token
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
