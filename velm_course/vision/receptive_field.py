"""Receptive fields: which input pixels can reach one output unit, in theory and in practice.

``receptive_field`` computes the theoretical size, stride and start offset of a stack of
convolutions and poolings from their kernel sizes, strides, paddings and dilations;
``empirical_receptive_field`` measures it with the gradient of one output unit with respect
to the input. The effective field (where the gradient is large) is much smaller than the
theoretical one.

>>> receptive_field([(3, 1, 1, 1), (3, 1, 1, 1)])[-1][0]
5
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

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
