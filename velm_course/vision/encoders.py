"""Image encoders with one interface: images in, grid features and a pooled vector out.

Every encoder in the course returns

    grid:   (B, N, D)  one feature vector per image region ("image tokens")
    pooled: (B, D)     one vector for the whole image

so fusion modules and caption decoders never care which encoder sits in front of them.
Encoders carry the input size and the normalisation they expect, take float images in
[0, 1] with 1, 3 or 4 channels (grayscale is repeated, alpha dropped) and normalise inside.

Encoders by name (``build_image_encoder``):

    small_cnn            the course's small CNN (below): an 8×8 grid for 64 px images; trains on a CPU
    course_vit           the course's own ViT (velm_course.vision.vit): patch tokens, class token pooled
    resnet18, resnet50   torchvision ResNets: the last feature map is the grid
    vit_b_16             torchvision's ViT-B/16: patch tokens, class token pooled
    clip                 CLIP ViT-B/32's vision tower (``transformers``): patch tokens, class token pooled

``pretrained=True`` loads torchvision's ImageNet weights (CLIP's own for ``clip``) where they can be downloaded (Colab,
a workstation). Where they cannot (no internet) it raises a clear error, or, only when asked
with ``fallback_to_random=True``, warns loudly and continues from random weights.

Shape letters: B batch, C channels, H/W height/width, N = h*w grid tokens, D feature width.

>>> enc = CNNEncoder(CNNEncoderConfig(d_model=32, image_size=64))
>>> grid, pooled = enc(torch.rand(2, 3, 64, 64))
>>> tuple(grid.shape), tuple(pooled.shape)
((2, 64, 32), (2, 32))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .transforms import IMAGENET_MEAN, IMAGENET_STD, to_rgb

ENCODER_NAMES = ("small_cnn", "course_vit", "resnet18", "resnet50", "vit_b_16", "clip")


class ImageEncoder(nn.Module):
    """What every encoder shares: 3-channel conversion, a size check, normalisation.

    Subclasses implement ``features(x) -> (grid, pooled)`` on normalised images.
    """

    def __init__(self, image_size: int, mean, std, out_dim: int):
        super().__init__()
        self.image_size = image_size  # expected input side
        self.out_dim = out_dim  # D of the grid and pooled outputs
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = to_rgb(images)
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected images of {self.image_size}×{self.image_size}, got {tuple(images.shape[-2:])}"
            )
        return self.features((images - self.mean) / self.std)


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


class CNNEncoder(ImageEncoder):
    """Five 3×3 conv layers, three of stride 2: a 64×64 image becomes an 8×8 grid of D-wide tokens.

    Channels stay narrow while the resolution is high (16 at 1/2 scale), because full-size
    feature maps cost most of the time on a CPU; they widen as the map shrinks. An 8×8 grid
    keeps one token per 8×8 pixels, fine enough to tell a small star from a small cross
    (a 4×4 grid of this size learned shapes markedly worse in our runs), and cross-attention
    over 64 tokens is still cheap. A learned position embedding per grid cell tells the
    decoder where each token sits, which spatial words ("left of") need.
    """

    def __init__(self, config: CNNEncoderConfig):
        if config.image_size % 8:
            raise ValueError(f"image_size={config.image_size} must be a multiple of 8")
        super().__init__(config.image_size, config.mean, config.std, config.d_model)
        self.config = config
        w1, w2, w3, w4 = config.widths
        self.conv_stack = nn.Sequential(
            conv_bn_relu(3, w1, stride=2),  # (B, w1, S/2, S/2)
            conv_bn_relu(w1, w2, stride=2),  # (B, w2, S/4, S/4)
            conv_bn_relu(w2, w3),  # (B, w3, S/4, S/4)
            conv_bn_relu(w3, w4, stride=2),  # (B, w4, S/8, S/8)
            conv_bn_relu(w4, config.d_model),  # (B, D, S/8, S/8)
        )
        self.grid_side = config.image_size // 8
        self.pos_emb = nn.Parameter(torch.zeros(1, self.grid_side**2, config.d_model))
        nn.init.normal_(self.pos_emb, std=0.02)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.conv_stack(x)  # (B, D, h, w)
        grid = fmap.flatten(2).transpose(1, 2) + self.pos_emb  # (B, h*w, D) = (B, N, D)
        return grid, grid.mean(dim=1)  # pooled: (B, D)


class CourseViTEncoder(ImageEncoder):
    """The course's ViT (velm_course.vision.vit) as an encoder: patch tokens and the class token."""

    def __init__(self, d_model: int = 128, image_size: int = 64, patch_size: int = 8, n_layer: int = 4,
                 n_head: int = 4):
        super().__init__(image_size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), d_model)
        from .vit import ViT, ViTConfig

        self.vit = ViT(ViTConfig(image_size=image_size, patch_size=patch_size, d_model=d_model,
                                 n_layer=n_layer, n_head=n_head, mlp_dim=4 * d_model, num_classes=0))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vit.forward_features(x)
        return out.patch_tokens, out.cls_token  # (B, N, D), (B, D)


def load_torchvision_weights(arch: str, pretrained: bool, fallback_to_random: bool) -> dict | None:
    """torchvision's ImageNet state dict for ``arch``, or None for random initialisation.

    The download goes through torchvision's weights API and its cache (~/.cache/torch).
    """
    if not pretrained:
        return None
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=True)
    except Exception as err:  # no network, a proxy, a truncated cache file...
        message = (f"could not load torchvision's ImageNet weights for {arch} ({type(err).__name__}: {err}). "
                   "Without internet use pretrained=False, or fallback_to_random=True to continue "
                   "from random weights.")
        if not fallback_to_random:
            raise RuntimeError(message) from err
        warnings.warn(message + " Continuing from RANDOM weights.", stacklevel=3)
        return None


class TorchvisionResNetEncoder(ImageEncoder):
    """A torchvision ResNet: its last feature map (B, 512 or 2048, h, w) becomes the grid."""

    def __init__(self, arch: str = "resnet50", image_size: int = 224, pretrained: bool = False,
                 fallback_to_random: bool = False):
        import torchvision

        net = torchvision.models.get_model(arch, weights=None)
        super().__init__(image_size, IMAGENET_MEAN, IMAGENET_STD, net.fc.in_features)
        state = load_torchvision_weights(arch, pretrained, fallback_to_random)
        if state is not None:
            net.load_state_dict(state)
        net.fc = nn.Identity()  # the ImageNet classifier is not part of an encoder
        self.net = net

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        fmap = n.layer4(n.layer3(n.layer2(n.layer1(x))))  # (B, D, h, w)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, N, D)
        return grid, grid.mean(dim=1)  # the grid's mean is ResNet's own global average pool


class TorchvisionViTEncoder(ImageEncoder):
    """torchvision's ViT: patch tokens as the grid, the final class token as the pooled vector."""

    def __init__(self, arch: str = "vit_b_16", image_size: int = 224, pretrained: bool = False,
                 fallback_to_random: bool = False):
        import torchvision

        state = load_torchvision_weights(arch, pretrained, fallback_to_random)
        if state is not None and image_size != 224:
            raise ValueError(f"pretrained {arch} expects 224×224 images, got image_size={image_size}")
        net = torchvision.models.get_model(arch, weights=None, image_size=image_size)
        if state is not None:
            net.load_state_dict(state)
        super().__init__(image_size, IMAGENET_MEAN, IMAGENET_STD, net.hidden_dim)
        net.heads = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n._process_input(x)  # (B, N, D): the patch embedding
        cls = n.class_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = n.encoder(torch.cat([cls, x], dim=1))  # (B, 1 + N, D), final LayerNorm included
        return x[:, 1:], x[:, 0]


class Projected(nn.Module):
    """An encoder followed by one linear map to ``d_model``, for grid and pooled alike."""

    def __init__(self, encoder: ImageEncoder, d_model: int):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder.out_dim, d_model)
        # cached features (row numbers in, features out) have no image size
        self.image_size, self.out_dim = getattr(encoder, "image_size", None), d_model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid, pooled = self.encoder(images)
        return self.proj(grid), self.proj(pooled)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the normalisation CLIP was trained with
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_CHECKPOINT = "openai/clip-vit-base-patch32"


class CLIPVisionEncoder(ImageEncoder):
    """CLIP's vision tower (``transformers``): the patch tokens of the last layer as the grid,
    the layer-normed class token (``pooler_output``, what CLIP projects into its joint space)
    as the pooled vector. The grid is not layer-normed; decoders normalise their inputs anyway.

    ``pretrained`` loads ``CLIP_CHECKPOINT`` (ViT-B/32, 224×224 images, a 7×7 grid) from the
    Hugging Face hub or its cache; otherwise the same architecture gets random weights.
    """

    def __init__(self, image_size: int = 224, pretrained: bool = False, fallback_to_random: bool = False):
        from transformers import CLIPVisionConfig, CLIPVisionModel

        model = None
        if pretrained:
            if image_size != 224:
                raise ValueError(f"pretrained CLIP expects 224×224 images, got image_size={image_size}")
            try:
                model = CLIPVisionModel.from_pretrained(CLIP_CHECKPOINT)
            except Exception as err:  # no network and no copy in ~/.cache/huggingface, a proxy...
                message = (f"could not load {CLIP_CHECKPOINT} ({type(err).__name__}: {err}). Without internet "
                           "use pretrained=False, or fallback_to_random=True to continue from random weights.")
                if not fallback_to_random:
                    raise RuntimeError(message) from err
                warnings.warn(message + " Continuing from RANDOM weights.", stacklevel=2)
        if model is None:
            model = CLIPVisionModel(CLIPVisionConfig(image_size=image_size))
        super().__init__(image_size, CLIP_MEAN, CLIP_STD, model.config.hidden_size)
        self.model = model

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=x)
        return out.last_hidden_state[:, 1:], out.pooler_output  # (B, N, D), (B, D)


def build_image_encoder(
    name: str,
    d_model: int | None = None,
    image_size: int | None = None,
    pretrained: bool = False,
    fallback_to_random: bool = False,
) -> nn.Module:
    """The encoder called ``name`` (see the module docstring).

    Its outputs are projected to ``d_model`` when that differs from the backbone's width;
    ``image_size`` defaults to 64 for the course's encoders and 224 for torchvision's.

    >>> build_image_encoder("small_cnn", d_model=64, image_size=64).grid_side
    8
    """
    if name == "small_cnn":
        if pretrained:
            raise ValueError("small_cnn has no pretrained weights: it trains from scratch in minutes")
        return CNNEncoder(CNNEncoderConfig(d_model=d_model or 128, image_size=image_size or 64))
    if name == "course_vit":
        if pretrained:
            raise ValueError("course_vit has no pretrained weights; use vit_b_16 for ImageNet weights")
        return CourseViTEncoder(d_model=d_model or 128, image_size=image_size or 64)
    if name in ("resnet18", "resnet50"):
        encoder = TorchvisionResNetEncoder(name, image_size or 224, pretrained, fallback_to_random)
    elif name == "vit_b_16":
        encoder = TorchvisionViTEncoder(name, image_size or 224, pretrained, fallback_to_random)
    elif name == "clip":
        encoder = CLIPVisionEncoder(image_size or 224, pretrained, fallback_to_random)
    else:
        raise ValueError(f"unknown image encoder {name!r}; choose from {ENCODER_NAMES}")
    return encoder if d_model in (None, encoder.out_dim) else Projected(encoder, d_model)


def as_encoder_input(images: torch.Tensor) -> torch.Tensor:
    """A batch's images as an encoder takes them: uint8 (B, 3, H, W) crosses to the device at a
    quarter of float's bytes and is converted there, to [0, 1] floats in the channels-last
    layout the convolutions run fastest in. Row numbers (B,) into ``CachedFeatures`` pass as
    they are.

    >>> as_encoder_input(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max().item()
    1.0
    >>> as_encoder_input(torch.tensor([3, 1])).tolist()
    [3, 1]
    """
    if images.dim() != 4:  # not pictures: row numbers into cached features
        return images
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    return images.contiguous(memory_format=torch.channels_last)


def encode_images(encoder: nn.Module, images: torch.Tensor, batch_size: int = 64
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an image encoder over images (n, C, H, W), ``batch_size`` at a time, in eval mode
    and without gradients: the features (grid (n, N, Dv), pooled (n, Dv)) of a frozen encoder,
    computed once so training never runs the encoder again.

    uint8 images are scaled to [0, 1] first (the encoders' input range); float images are
    passed as they are. Each batch goes to the encoder's device; the features come back to
    the CPU, where a whole dataset's worth of them is kept. The encoder's training mode is
    restored afterwards.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (n, C, H, W), got {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got {images.dtype}")
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    grids, pooleds = [], []
    was_training = encoder.training
    encoder.eval()  # BatchNorm's running statistics, no dropout: the features are the same in any batch
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device)
                x = x.float() / 255 if x.dtype == torch.uint8 else x  # (b, C, H, W) in [0, 1]
                grid, pooled = encoder(x)  # (b, N, Dv), (b, Dv)
                grids.append(grid.cpu())
                pooleds.append(pooled.cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(grids), torch.cat(pooleds)


class CachedFeatures(nn.Module):
    """A frozen encoder's outputs computed once, served as an encoder that takes image indices.

    Training a decoder on a frozen encoder recomputes the same features every step; computing
    them once and looking them up makes the step cost the decoder's alone. The "images" it
    takes are row numbers (B,) into the tables, so every model, loss and decoding loop that
    calls ``encoder(images)`` works unchanged.

    >>> enc = CNNEncoder(CNNEncoderConfig(d_model=8, image_size=64)).eval()
    >>> images = torch.rand(5, 3, 64, 64)
    >>> cached = CachedFeatures.compute(enc, images)
    >>> grid, pooled = cached(torch.tensor([4, 0]))
    >>> torch.allclose(pooled, enc(images[[4, 0]])[1], atol=1e-6), tuple(grid.shape)
    (True, (2, 64, 8))
    """

    def __init__(self, grid: torch.Tensor, pooled: torch.Tensor):
        super().__init__()
        if grid.shape[0] != pooled.shape[0] or grid.shape[-1] != pooled.shape[-1]:
            raise ValueError(f"grid {tuple(grid.shape)} and pooled {tuple(pooled.shape)} must be (n, N, D) and (n, D)")
        self.register_buffer("grid", grid, persistent=False)  # (n, N, D)
        self.register_buffer("pooled", pooled, persistent=False)  # (n, D)
        self.out_dim = grid.shape[-1]

    @classmethod
    def compute(cls, encoder: nn.Module, images: torch.Tensor, batch_size: int = 256) -> CachedFeatures:
        """The features of uint8 or [0, 1] float images (n, 3, H, W) under ``encoder`` in eval
        mode (``encode_images``), kept on the CPU: move the module to a device like any other."""
        return cls(*encode_images(encoder, images, batch_size))

    @classmethod
    def from_cache(cls, folder, image_ids=None) -> CachedFeatures:
        """All of an on-disk feature cache (``velm_course.vision.feature_cache``) read into memory
        as float32; for a cache larger than memory, serve it mapped with ``MappedFeatures``."""
        from .feature_cache import FeatureCache

        return cls(*FeatureCache.open(folder, image_ids).load())

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_row_numbers(index, type(self).__name__)
        return self.grid[index], self.pooled[index]  # (B, N, D), (B, D)


def check_row_numbers(index: torch.Tensor, who: str = "CachedFeatures") -> None:
    """Cached features are looked up by row numbers (B,); an image batch passed by mistake is a TypeError."""
    if index.dtype not in (torch.int64, torch.int32) or index.dim() != 1:
        raise TypeError(f"{who} takes row numbers (B,) as int64, got {index.dtype} of shape "
                        f"{tuple(index.shape)}; pass the index of each image, not the image")
