"""Convolutional networks: ResNet, receptive fields, and a small CNN classifier.

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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

# -----------------------------------------------------------------------------
# ResNet building blocks


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a skip connection: ``relu(x + F(x))``.

    When the block changes resolution (stride 2) or width, the skip path needs a 1x1
    strided conv + BN (``downsample``) so the two tensors can be added.
    """

    expansion = 1  # output channels = planes * expansion

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
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


# -----------------------------------------------------------------------------
# Receptive fields


def receptive_field(
    layers: Sequence[tuple[int, int, int, int] | tuple[int, int, int]],
) -> list[tuple[int, int, float]]:
    """Theoretical receptive field after each layer of a stack of convs/pools (one axis).

    Each layer is ``(kernel, stride, padding)`` or ``(kernel, stride, padding, dilation)``.
    For every layer we track, in input-pixel units:

    - ``size``: how many input pixels one output unit can see;
    - ``jump``: the distance in the input between two neighbouring output units;
    - ``start``: the centre of the receptive field of the first output unit (can be < 0
      when it hangs over the zero padding).

    With the effective kernel ``k' = d*(k-1)+1`` the recurrences are::

        size_out  = size_in + (k' - 1) * jump_in
        jump_out  = jump_in * stride
        start_out = start_in + ((k' - 1) / 2 - padding) * jump_in

    Output unit i then looks at input pixels centred on ``start + i * jump``.

    >>> receptive_field([(3, 1, 1), (3, 1, 1)])[-1]
    (5, 1, 0.0)
    >>> receptive_field([(7, 2, 3), (3, 2, 1)])[-1]  # the ResNet stem
    (11, 4, 0.0)
    """
    size, jump, start = 1, 1, 0.0  # before any layer: one input pixel, centred on pixel 0
    out = []
    for layer in layers:
        if len(layer) not in (3, 4):
            raise ValueError(f"each layer is (kernel, stride, padding[, dilation]), got {layer!r}")
        k, s, p = layer[:3]
        d = layer[3] if len(layer) == 4 else 1
        if k < 1 or s < 1 or d < 1 or p < 0:
            raise ValueError(f"invalid layer {layer!r}")
        k_eff = d * (k - 1) + 1
        start = start + ((k_eff - 1) / 2 - p) * jump
        size = size + (k_eff - 1) * jump
        jump = jump * s
        out.append((size, jump, start))
    return out


def _conv_spec(m: nn.Module) -> tuple[int, int, int, int]:
    """(kernel, stride, padding, dilation) along the height axis of a conv or pool layer."""

    def first(v):
        return v[0] if isinstance(v, tuple) else v

    if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        if isinstance(m.padding, str):
            raise ValueError("string padding is not supported here; use integer padding")
        dilation = first(getattr(m, "dilation", 1))
        return first(m.kernel_size), first(m.stride), first(m.padding), dilation
    raise ValueError(f"not a conv or pool layer: {type(m).__name__}")


def layer_specs(model: nn.Module) -> list[tuple[int, int, int, int]]:
    """The (kernel, stride, padding, dilation) of every conv/pool in a plain stack, in order.

    Only makes sense for a chain of layers (e.g. an ``nn.Sequential``): there is no branch.
    Layers that do not change the geometry (ReLU, BN) are skipped.
    """
    return [
        _conv_spec(m) for m in model.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d)
    ]


def input_gradient_map(model: nn.Module, input_size: int = 64, in_channels: int = 3) -> torch.Tensor:
    """|d centre unit / d input pixel|, summed over input channels: an (S, S) map.

    We run a (1, C, S, S) input of ones through the model, pick the output unit in the middle
    of the first channel's map, and backpropagate from it alone. Non-zero entries are the
    pixels the unit depends on; their size shows how much each one matters (the "effective"
    receptive field, which is peaked in the middle: more paths lead there).
    The model is put in eval mode.
    """
    model = model.eval()
    x = torch.ones(1, in_channels, input_size, input_size, dtype=torch.float64, requires_grad=True)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float64
    y = model(x.to(dtype))  # (1, C, h, w)
    if y.dim() != 4:
        raise ValueError(f"the model must return a (B, C, h, w) feature map, got {tuple(y.shape)}")
    h, w = y.shape[-2:]
    y[0, 0, h // 2, w // 2].backward()
    return x.grad[0].abs().sum(dim=0)  # (S, S)


def empirical_receptive_field(
    model: nn.Module, input_size: int = 64, in_channels: int = 3
) -> tuple[int, int, tuple[int, int]]:
    """Measure which input pixels influence the centre output unit, using the gradient.

    Input pixels whose gradient (``input_gradient_map``) is non-zero are the ones the centre
    unit depends on. Returns ``(height, width, (row, col))``: the size of the bounding box of
    those pixels and its top-left corner.

    Caveats: max-pool and ReLU only pass gradient to some inputs, so for the empirical
    field to match the theoretical one use linear layers with positive weights. The field
    must also fit in the input, or the border cuts it. The model is put in eval mode.
    """
    touched = input_gradient_map(model, input_size, in_channels) > 0  # (S, S)
    rows = torch.nonzero(touched.any(dim=1)).flatten()
    cols = torch.nonzero(touched.any(dim=0)).flatten()
    if len(rows) == 0:
        raise ValueError("the centre unit does not depend on any input pixel (all-zero gradient)")
    top, left = int(rows[0]), int(cols[0])
    return int(rows[-1]) - top + 1, int(cols[-1]) - left + 1, (top, left)


# -----------------------------------------------------------------------------
# A small CNN classifier for 64x64 images


@dataclass
class SmallCNNConfig:
    num_classes: int = 10  # outputs of the linear head
    in_channels: int = 3  # RGB
    widths: tuple[int, ...] = (32, 64, 128)  # channels per stage; each stage halves H and W
    convs_per_stage: int = 2  # conv-BN-ReLU layers per stage
    dropout: float = 0.1  # dropout before the linear head


class SmallCNN(nn.Module):
    """A few stages of (conv3x3-BN-ReLU) x n followed by a 2x2 max-pool, then pool + linear.

    For 64x64 inputs with three stages the last map is 8x8: each unit sees a good part of
    the image, enough to tell a shape's colour, kind and size.

    >>> SmallCNN(SmallCNNConfig(num_classes=4))(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 4])
    """

    def __init__(self, config: SmallCNNConfig):
        super().__init__()
        if not config.widths or config.convs_per_stage < 1 or config.num_classes < 1:
            raise ValueError("need at least one stage, one conv per stage and one class")
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for width in config.widths:
            for _ in range(config.convs_per_stage):
                # no conv bias: the BN right after has its own shift
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.out_channels = c
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(c, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, h, w), with h = H / 2**len(widths)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) images, got {tuple(x.shape)}"
            )
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=(2, 3))  # (B, C): global average pool
        return self.head(self.dropout(x))  # (B, num_classes)


# -----------------------------------------------------------------------------
# Regions: R-CNN style per-object features, and an object-attribute classifier
#
# More shape letters:
#     K  regions (boxes) over the whole batch
#     oh, ow  size of the pooled grid of each region
#     N  examples (object crops) in a dataset


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO boxes ``[x, y, w, h]`` (top-left corner, size) to corners ``[x0, y0, x1, y1]``.

    >>> xywh_to_xyxy(torch.tensor([[2.0, 3.0, 4.0, 5.0]])).tolist()
    [[2.0, 3.0, 6.0, 8.0]]
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (K, 4), got {tuple(boxes.shape)}")
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)  # (K, 4)


def roi_features(
    features: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    output_size: int | tuple[int, int] = 7,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """Pool a fixed-size (C, oh, ow) grid of features for every box: RoIAlign.

    ``features`` is (B, C, h, w); ``boxes[b]`` is a (K_b, 4) tensor of ``[x0, y0, x1, y1]``
    corners in *image* pixels for image b. ``spatial_scale`` maps image pixels to feature
    cells (1/8 for a map 8 times smaller than the image). Each box is cut into oh x ow bins
    and each bin is the mean of a few bilinear samples, so no box edge is rounded to the
    grid (that rounding is what RoIAlign fixed in the older RoIPool). With
    ``spatial_scale=1`` on an image this is crop-and-resize. Returns (K, C, oh, ow), boxes of
    image 0 first.

    >>> img = torch.arange(16.0).view(1, 1, 4, 4)
    >>> roi_features(img, [torch.tensor([[1.0, 1.0, 3.0, 3.0]])], 2, sampling_ratio=1)[0, 0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """
    from torchvision.ops import roi_align  # heavy import only where it is needed

    if features.dim() != 4:
        raise ValueError(f"expected features of shape (B, C, h, w), got {tuple(features.shape)}")
    if len(boxes) != features.shape[0]:
        raise ValueError(f"got {len(boxes)} box tensors for a batch of {features.shape[0]} images")
    for b in boxes:
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"each box tensor must be (K, 4) [x0, y0, x1, y1], got {tuple(b.shape)}")
        if (b[:, 2:] <= b[:, :2]).any():
            raise ValueError("every box needs x1 > x0 and y1 > y0")
    boxes = [b.to(features.dtype) for b in boxes]
    # aligned=True: a pixel's value sits at its centre (i + 0.5), so a box from pixel 1 to
    # pixel 3 covers exactly pixels 1 and 2, with no half-pixel shift
    return roi_align(features, boxes, output_size, spatial_scale=spatial_scale,
                     sampling_ratio=sampling_ratio, aligned=True)  # (K, C, oh, ow)


ATTRIBUTES = ("shape", "color")  # what object_crops can label an object with


def object_crops(
    root, split: str, attribute: str = "shape", size: int = 24, margin: int = 2,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One (3, size, size) crop per object of a generated shapes split, with its label.

    The boxes come from the annotations (``captions_<split>.json`` lists each image's
    ``objects``), widened by ``margin`` pixels so the shape's outline is visible, and
    resized to ``size`` with ``roi_features``. Resizing removes the object's size, so the
    labels are its ``"shape"`` or its ``"color"``. ``limit`` keeps only the first images.
    Returns ``(crops (N, 3, size, size) in [0, 1], labels (N,), class names)``.
    """
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from velm_course.data.shapes import COLORS, SHAPES

    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    if size < 1 or margin < 0:
        raise ValueError(f"need size >= 1 and margin >= 0, got size={size}, margin={margin}")
    root = Path(root)
    ann_file = root / "annotations" / f"captions_{split}.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"no annotations for split {split!r} ({ann_file.name}) in the dataset")
    classes = list(SHAPES) if attribute == "shape" else list(COLORS)
    crops, labels = [], []
    for info in json.loads(ann_file.read_text())["images"][:limit]:
        if not info["objects"]:
            continue
        image = np.array(Image.open(root / "images" / split / info["file_name"]).convert("RGB"))
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
        boxes = xywh_to_xyxy(torch.tensor([o["bbox"] for o in info["objects"]], dtype=torch.float32))
        boxes = boxes + torch.tensor([-margin, -margin, margin, margin])  # (K, 4) widened
        crops.append(roi_features(x, [boxes], size))  # (K, 3, size, size)
        labels += [classes.index(o[attribute]) for o in info["objects"]]
    if not crops:
        raise ValueError(f"split {split!r} has no objects")
    return torch.cat(crops), torch.tensor(labels), classes


def train_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3, batch_size: int = 64,
    lr: float = 3e-3, seed: int = 0, progress: bool = True,
) -> list[float]:
    """Minibatch AdamW on cross-entropy, with a cosine learning-rate decay; returns the losses.

    The batch order comes from a generator seeded with ``seed``, so a run is repeatable
    (seed torch too, before building the model, for the same initial weights).
    """
    from tqdm.auto import tqdm

    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as examples (and at least one), got {len(x)} and {len(y)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    losses = []
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, desc="training", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    model.eval()  # BN switches to its running statistics, dropout turns off
    return losses


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The arg-max class of every example, in eval mode, in batches: (N,) long."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``m[i, j]`` = how many examples of true class i were predicted as class j.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    y_true, y_pred = torch.as_tensor(y_true).long(), torch.as_tensor(y_pred).long()
    if y_true.shape != y_pred.shape or y_true.dim() != 1:
        raise ValueError("y_true and y_pred must be 1-D and of the same length")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    # each (true, pred) pair is one cell of a K x K grid, numbered true * K + pred
    counts = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)  # (K, K)
