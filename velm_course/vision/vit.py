"""Vision Transformer (ViT): an image as a sequence of patch tokens.

Cut the image into P x P patches, flatten each one and project it linearly to a D-dim
token, prepend a learned class token, add learned position embeddings, and run a stack of
pre-norm Transformer blocks (self-attention + MLP). The class token's final state is a
summary of the image; the patch tokens are a grid of local features, which a captioning
decoder can cross-attend to.

``vit_state_dict_from_torchvision`` renames the keys of a ``torchvision.models.
VisionTransformer`` state dict into ours; with the same config the two models give the same
outputs.

Shape letters:
    B  batch size              C  image channels       H, W  image height and width
    P  patch side (pixels)     g  patches per side, H / P
    N  number of patches, g*g  T  tokens, N + 1 (with the class token)
    D  model width (d_model)   nh heads                 hs  head size, D / nh

>>> model = ViT(ViTConfig(image_size=32, patch_size=8, d_model=64, n_head=2, n_layer=1))
>>> feats = model.forward_features(torch.randn(2, 3, 32, 32))
>>> feats.patch_tokens.shape, feats.cls_token.shape
(torch.Size([2, 16, 64]), torch.Size([2, 64]))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn import Block, BlockConfig


@dataclass
class ViTConfig:
    image_size: int = 32  # side of the (square) input image
    patch_size: int = 8  # side of a square patch; must divide image_size
    in_channels: int = 3  # RGB
    d_model: int = 64  # token width D
    n_layer: int = 2  # Transformer blocks
    n_head: int = 2  # attention heads; must divide d_model
    mlp_dim: int = 128  # hidden width of each block's MLP (often 4 * d_model)
    num_classes: int = 10  # classifier outputs on the class token; 0 for no head
    dropout: float = 0.0  # dropout on embeddings, attention output and MLP
    ln_eps: float = 1e-6  # LayerNorm epsilon (1e-6 as in the original ViT)

    def block_config(self) -> BlockConfig:
        """The shared Transformer block of these settings: not causal, every patch sees all."""
        return BlockConfig(d_model=self.d_model, n_head=self.n_head, mlp_hidden=self.mlp_dim,
                           dropout=self.dropout, ln_eps=self.ln_eps, causal=False)


# -----------------------------------------------------------------------------
# Patch embedding, two ways


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut (B, C, H, W) images into flattened patches (B, N, C*P*P), row by row.

    Each patch is flattened channel first, then row, then column: the same order as the
    weights of a ``Conv2d(C, D, P)``, so ``patchify(x) @ W.reshape(D, -1).T`` is that conv.

    >>> patchify(torch.zeros(1, 3, 32, 32), 8).shape
    torch.Size([1, 16, 192])
    """
    B, C, H, W = images.shape
    P = patch_size
    if H % P or W % P:
        raise ValueError(f"image size {H}x{W} is not divisible by patch size {P}")
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, g_h, P, g_w, P): split each axis
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, g_h, g_w, C, P, P): patch grid first
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C*P*P)


class PatchEmbed(nn.Module):
    """Linear projection of every P x P patch to a D-dim token.

    A conv with kernel P and stride P visits each patch exactly once and applies the same
    linear map to it, so it *is* "flatten the patch and multiply by a matrix". ``forward``
    uses the conv; ``forward_unfold`` does the flatten + matmul explicitly with the same
    weights (a test checks they agree).
    """

    def __init__(self, patch_size: int, in_channels: int, d_model: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, g, g): one D-vector per patch
        return x.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order

    def forward_unfold(self, x: torch.Tensor) -> torch.Tensor:
        patches = patchify(x, self.patch_size)  # (B, N, C*P*P)
        weight = self.proj.weight.flatten(1)  # (D, C, P, P) -> (D, C*P*P)
        return F.linear(patches, weight, self.proj.bias)  # (B, N, D)


def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resize learned position embeddings (1, 1+g*g, D) to a new grid (1, 1+new_grid**2, D).

    The patch embeddings form a g x g image with D channels; we resize that image with
    bicubic interpolation (corners aligned, as torchvision does) so that a model trained at
    one resolution can run at another. The class token has no position: it is kept as is.

    >>> interpolate_pos_embed(torch.randn(1, 17, 8), 6).shape
    torch.Size([1, 37, 8])
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"expected (1, 1 + N, D) position embeddings, got {tuple(pos_embed.shape)}")
    _, T, D = pos_embed.shape
    g = math.isqrt(T - 1)
    if g * g != T - 1:
        raise ValueError(f"{T - 1} patch positions do not form a square grid")
    if new_grid < 1:
        raise ValueError("new_grid must be >= 1")
    if new_grid == g:
        return pos_embed
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]  # (1, 1, D), (1, N, D)
    grid = grid.transpose(1, 2).reshape(1, D, g, g)  # (1, D, g, g): embeddings as an image
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=True)
    grid = grid.reshape(1, D, new_grid * new_grid).transpose(1, 2)  # (1, N', D)
    return torch.cat([cls_pos, grid], dim=1)  # (1, 1 + N', D)


# -----------------------------------------------------------------------------
# Transformer encoder


class ViTFeatures(NamedTuple):
    cls_token: torch.Tensor  # (B, D) final state of the class token
    patch_tokens: torch.Tensor  # (B, N, D) final states of the patches, row-major
    attentions: list[torch.Tensor] | None  # one (B, nh, T, T) map per block, if asked


class ViT(nn.Module):
    """The Vision Transformer of Dosovitskiy et al. (2020), classifier on the class token."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"patch_size {config.patch_size} must divide image_size {config.image_size}"
            )
        if config.d_model % config.n_head:
            raise ValueError(f"n_head {config.n_head} must divide d_model {config.d_model}")
        self.config = config
        n_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = PatchEmbed(config.patch_size, config.in_channels, config.d_model)
        # the class token starts at 0 and learns to gather a summary through attention
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        # one learned vector per position; attention alone cannot tell patches apart otherwise
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n_patches, config.d_model) * 0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config.block_config()) for _ in range(config.n_layer)])
        self.ln = nn.LayerNorm(config.d_model, eps=config.ln_eps)
        self.head = nn.Linear(config.d_model, config.num_classes) if config.num_classes else None

    def forward_features(self, x: torch.Tensor, return_attention: bool = False) -> ViTFeatures:
        """Encode (B, C, H, W) images into a class token (B, D) and patch tokens (B, N, D)."""
        c = self.config
        if x.dim() != 4 or x.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(
                f"expected (B, {c.in_channels}, {c.image_size}, {c.image_size}) images, got "
                f"{tuple(x.shape)}; for another size call resize_pos_embed(new_size) first"
            )
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, T, D), class first
        x = self.drop(x + self.pos_embed)  # (B, T, D)
        attentions = [] if return_attention else None
        for block in self.blocks:
            if attentions is None:
                x = block(x)  # (B, T, D)
            else:
                x, weights = block(x, need_weights=True)
                attentions.append(weights.self_attn)  # (B, nh, T, T)
        x = self.ln(x)  # (B, T, D)
        return ViTFeatures(cls_token=x[:, 0], patch_tokens=x[:, 1:], attentions=attentions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes), or the class token (B, D) when there is no head."""
        cls = self.forward_features(x).cls_token  # (B, D)
        return cls if self.head is None else self.head(cls)

    @torch.no_grad()
    def resize_pos_embed(self, image_size: int) -> None:
        """Adapt the model in place to square images of side ``image_size``."""
        if image_size % self.config.patch_size:
            raise ValueError(
                f"patch_size {self.config.patch_size} must divide image_size {image_size}"
            )
        new = interpolate_pos_embed(self.pos_embed.data, image_size // self.config.patch_size)
        self.pos_embed = nn.Parameter(new.clone())
        # a new config object, so a config shared with other models is left untouched
        self.config = replace(self.config, image_size=image_size)


# -----------------------------------------------------------------------------
# Loading torchvision weights

# torchvision key pattern -> our key; the groups of each pattern are reused in the target
_TORCHVISION_KEYS = [
    (r"class_token", r"cls_token"),
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.pos_embedding", r"pos_embed"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.ln_([12])\.(weight|bias)", r"blocks.\1.ln_\2.\3"),
    # torchvision stacks the projections as [q; k; v]: split below into q_proj and kv_proj
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)",
     r"blocks.\1.attn.in_proj.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.(weight|bias)",
     r"blocks.\1.attn.out_proj.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc.\2"),
    (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.(weight|bias)", r"blocks.\1.mlp.proj.\2"),
    (r"encoder\.ln\.(weight|bias)", r"ln.\1"),
    (r"heads\.head\.(weight|bias)", r"head.\1"),
]


def vit_state_dict_from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``torchvision.models.VisionTransformer`` state dict to this module's keys.

    Only names differ, except attention's input projection: torchvision keeps q, k and v in one
    (3D, D) matrix, our shared ``MultiHeadAttention`` has q (D, D) apart from k, v (2D, D), so
    it is cut after the first D rows. A key we do not know (for instance ``heads.pre_logits``
    of a model built with ``representation_size``) is an error rather than silently dropped.

    >>> vit_state_dict_from_torchvision({"conv_proj.weight": torch.zeros(1)}).keys()
    dict_keys(['patch_embed.proj.weight'])
    """
    out = {}
    for key, value in state_dict.items():
        for pattern, target in _TORCHVISION_KEYS:
            m = re.fullmatch(pattern, key)
            if m:
                name = m.expand(target)
                if ".attn.in_proj." in name:
                    d = value.shape[0] // 3  # rows stacked as [q; k; v]
                    out[name.replace("in_proj", "q_proj")] = value[:d]
                    out[name.replace("in_proj", "kv_proj")] = value[d:]
                else:
                    out[name] = value
                break
        else:
            raise KeyError(f"no ViT equivalent for torchvision key {key!r}")
    return out
