"""ResNet, written to match torchvision parameter for parameter.

``ResNet`` follows the layout of ``torchvision.models.resnet`` parameter for parameter
(``conv1``, ``bn1``, ``layer1..layer4``, ``fc``; blocks with ``conv1/bn1/conv2/bn2[/conv3/bn3]``
and an optional ``downsample``), so a torchvision state dict loads with ``strict=True`` and
gives the same outputs. Like torchvision (the "v1.5" variant), a Bottleneck puts its stride
on the 3x3 convolution, not on the first 1x1.

Shape letters:
    B  batch size
    C  channels (of the current feature map)
    H, W  input image height and width
    h, w  feature map height and width (H/32, W/32 at the end of a ResNet)

>>> m = resnet18(num_classes=10)
>>> m(torch.randn(1, 3, 64, 64)).shape
torch.Size([1, 10])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .receptive_field import _conv_spec, receptive_field

# -----------------------------------------------------------------------------
# ResNet building blocks


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a skip connection: ``relu(x + F(x))``.

    When the block changes resolution (stride 2) or width, the skip path needs a 1x1
    strided conv + BN (``downsample``) so the two tensors can be added. ``residual=False``
    drops the skip, ``relu(F(x))``: the same layers as a *plain* block, for the depth
    experiment (``ConvStack``).
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, inplanes: int, planes: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), plus a skip connection.

    The 3x3 conv works on a narrow ``planes`` channels, which is what makes the 50+ layer
    ResNets affordable: the expensive spatial conv never sees the wide 4*planes tensor.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    """The projection shortcut, or None when the identity already has the right shape."""
    if stride == 1 and inplanes == outplanes:
        return None
    # a Sequential so the keys are downsample.0 (conv) and downsample.1 (bn), as in torchvision
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(outplanes),
    )


# -----------------------------------------------------------------------------
# Plain and residual stacks: the experiment behind ResNet


@dataclass
class ConvStackConfig:
    num_classes: int = 6  # outputs of the linear head
    blocks: int = 4  # two-conv blocks after the stem: 2 * blocks + 2 weight layers in all
    residual: bool = True  # add each block's input to its output (ResNet) or not (a plain net)
    width: int = 16  # channels of the stem and of every block
    stem_pool: int = 4  # max-pool after the stem: a 24 px crop becomes a 6x6 map, so deep stacks stay cheap
    in_channels: int = 3  # image channels


class ConvStack(nn.Module):
    """Stem (3x3 conv, BN, ReLU, max-pool), ``blocks`` BasicBlocks of one width, pool, linear.

    With ``residual=False`` the same layers, initialised the same way, have no skip
    connections: He et al. (2016) found that such a *plain* network trains worse as it gets
    deeper (its training loss, not only its test loss, goes up), and that the residual one
    does not. Notebook 05 repeats that experiment on shape crops.

    >>> net = ConvStack(ConvStackConfig(blocks=3, residual=False))
    >>> net.num_layers, net(torch.randn(2, 3, 24, 24)).shape
    (8, torch.Size([2, 6]))
    """

    def __init__(self, config: ConvStackConfig):
        super().__init__()
        if config.blocks < 0 or config.width < 1 or config.stem_pool < 1 or config.num_classes < 1:
            raise ValueError(f"need blocks >= 0 and a positive width, stem_pool and num_classes, got {config}")
        self.config = config
        w = config.width
        self.stem = nn.Sequential(nn.Conv2d(config.in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(config.stem_pool))
        self.blocks = nn.Sequential(*(BasicBlock(w, w, residual=config.residual) for _ in range(config.blocks)))
        self.head = nn.Linear(w, config.num_classes)
        for m in self.modules():  # the ResNet's initialisation, for both kinds of stack
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def num_layers(self) -> int:
        """Weight layers counted as in the ResNet paper: convolutions plus the linear head."""
        return 2 * self.config.blocks + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, C, h, w), h = H / stem_pool
        return self.head(x.mean(dim=(2, 3)))  # (B, num_classes)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass
class ResNetConfig:
    block: str = "basic"  # "basic" (ResNet-18/34) or "bottleneck" (ResNet-50/101/152)
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage; stages 2+ halve the resolution
    widths: tuple[int, ...] = (64, 128, 256, 512)  # "planes" per stage (x4 out for bottleneck)
    num_classes: int = 1000  # size of the final linear classifier
    in_channels: int = 3  # image channels
    stem_width: int = 64  # channels of the 7x7 stem conv


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four residual stages, pool, linear.

    The spatial size shrinks by 32 overall: 2 (stem conv) * 2 (max-pool) * 2 * 2 * 2 (stages).
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        if config.block not in _BLOCKS:
            raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {config.block!r}")
        if len(config.layers) != len(config.widths) or len(config.layers) == 0:
            raise ValueError("layers and widths must be non-empty and of the same length")
        self.config = config
        block = _BLOCKS[config.block]
        self.conv1 = nn.Conv2d(config.in_channels, config.stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = config.stem_width
        for i, (n_blocks, planes) in enumerate(zip(config.layers, config.widths, strict=True)):
            stride = 1 if i == 0 else 2  # the first stage keeps the max-pooled resolution
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(config.layers)
        self.out_channels = inplanes  # channels of the last feature map (512 or 2048)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He (kaiming) init suits ReLU networks; BN starts as the identity map
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before pooling: (B, 3, H, W) -> (B, C, h, w), h = H/32.

        This grid of C-dimensional vectors is what a captioning model can attend over.
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) images, got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x  # (B, C, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)  # (B, C, h, w)
        x = self.avgpool(x).flatten(1)  # (B, C): average over the h*w positions
        return self.fc(x)  # (B, num_classes)

    def receptive_field_layers(self) -> list[tuple[int, int, int, int]]:
        """(kernel, stride, padding, dilation) of the convs and pools along the main path.

        The skip connections never reach further than the main path, so feeding this list to
        ``receptive_field`` gives the theoretical receptive field of the whole network.
        """
        specs = [(7, 2, 3, 1), (3, 2, 1, 1)]  # stem conv, max-pool
        for i in range(self.num_stages):
            for blk in getattr(self, f"layer{i + 1}"):
                for conv in (blk.conv1, blk.conv2, getattr(blk, "conv3", None)):
                    if conv is not None:
                        specs.append(_conv_spec(conv))
        return specs

    def stage_receptive_fields(self) -> dict[str, tuple[int, int, float]]:
        """``{"stem": ..., "layer1": ..., ...}``: (size, jump, start) at the end of each stage.

        The stem is the 7x7/2 conv and the 3x3/2 max-pool; a stage ends after the last conv
        of its last block (the shortcuts are skipped, as in ``receptive_field_layers``).
        """
        fields = receptive_field(self.receptive_field_layers())
        out = {"stem": fields[1]}
        i = 1  # index of the last spec of the previous stage
        for s in range(self.num_stages):
            blocks = getattr(self, f"layer{s + 1}")
            i += sum(3 if hasattr(b, "conv3") else 2 for b in blocks)  # main-path convs
            out[f"layer{s + 1}"] = fields[i]
        return out


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18: basic blocks, 2-2-2-2."""
    return ResNet(ResNetConfig(block="basic", layers=(2, 2, 2, 2), num_classes=num_classes, **kwargs))


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: bottleneck blocks, 3-4-6-3."""
    return ResNet(
        ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3), num_classes=num_classes, **kwargs)
    )
