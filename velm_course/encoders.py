"""Image encoders with one interface: images in, grid features and a pooled vector out.

Every encoder in the course returns

    grid:   (B, N, D)  one feature vector per image region ("image tokens")
    pooled: (B, D)     one vector for the whole image

so fusion modules and caption decoders never care which encoder sits in front of them.
Encoders also carry the input size and the normalisation they expect, and take images as
float tensors in [0, 1]; they normalise internally.

Shape letters: B batch, C channels, H/W height/width, N = h*w grid tokens, D feature width.

>>> enc = CNNEncoder(CNNEncoderConfig(d_model=32, image_size=64))
>>> grid, pooled = enc(torch.rand(2, 3, 64, 64))
>>> tuple(grid.shape), tuple(pooled.shape)
((2, 64, 32), (2, 32))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CNNEncoderConfig:
    d_model: int = 128  # width of the output tokens
    image_size: int = 64  # expected input side; the grid is image_size / 8 per side
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)  # channels at 1/2, 1/4, 1/4 and 1/8 scale
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel input mean, for normalisation
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)  # per-channel input std


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    # bias=False: the BatchNorm right after has its own shift, a conv bias would be redundant
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CNNEncoder(nn.Module):
    """Five 3×3 conv layers, three of stride 2: a 64×64 image becomes an 8×8 grid of D-wide tokens.

    Channels stay narrow while the resolution is high (16 at 1/2 scale), because full-size
    feature maps cost most of the time on a CPU; they widen as the map shrinks. An 8×8 grid
    keeps one token per 8×8 pixels, fine enough to tell a small star from a small cross
    (a 4×4 grid of this size learned shapes markedly worse in our runs), and cross-attention
    over 64 tokens is still cheap. A learned position embedding per grid cell tells the
    decoder where each token sits, which spatial words ("left of") need.
    """

    def __init__(self, config: CNNEncoderConfig):
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        self.features = nn.Sequential(
            conv_bn_relu(3, w1, stride=2),  # (B, w1, S/2, S/2)
            conv_bn_relu(w1, w2, stride=2),  # (B, w2, S/4, S/4)
            conv_bn_relu(w2, w3),  # (B, w3, S/4, S/4)
            conv_bn_relu(w3, w4, stride=2),  # (B, w4, S/8, S/8)
            conv_bn_relu(w4, config.d_model),  # (B, D, S/8, S/8)
        )
        if config.image_size % 8:
            raise ValueError(f"image_size={config.image_size} must be a multiple of 8")
        side = config.image_size // 8
        self.grid_side = side
        self.pos_emb = nn.Parameter(torch.zeros(1, side * side, config.d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.config.d_model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-2:] != (self.config.image_size, self.config.image_size):
            raise ValueError(
                f"expected images of {self.config.image_size}×{self.config.image_size}, got {tuple(images.shape[-2:])}"
            )
        x = (images - self.mean) / self.std
        fmap = self.features(x)  # (B, D, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, h*w, D) = (B, N, D)
        grid = grid + self.pos_emb
        pooled = grid.mean(dim=1)  # (B, D)
        return grid, pooled


ENCODERS = {"small_cnn": (CNNEncoderConfig, CNNEncoder)}


def build_image_encoder(name: str, d_model: int, image_size: int) -> nn.Module:
    """The encoder called ``name``, sized for ``d_model``-wide tokens and ``image_size`` inputs.

    >>> build_image_encoder("small_cnn", d_model=64, image_size=64).grid_side
    8
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown image encoder {name!r}; choose from {sorted(ENCODERS)}")
    config_cls, encoder_cls = ENCODERS[name]
    return encoder_cls(config_cls(d_model=d_model, image_size=image_size))
