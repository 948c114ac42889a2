"""Weight initialisation, applied by each model to the modules it owns and to nothing else.

A model that wraps a pretrained part (an ImageNet encoder, a Hugging Face decoder) must not
re-initialise it: ``init_transformer_`` takes the modules to touch explicitly, so a caller
passes its own embeddings, blocks and heads, never the encoder.

>>> lin = nn.Linear(4, 4)
>>> init_transformer_([lin], n_layer=1)
>>> bool((lin.bias == 0).all())
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn


def init_transformer_(modules: Iterable[nn.Module], n_layer: int) -> None:
    """GPT-2's initialisation, in place: N(0, 0.02) for Linear and Embedding weights, zero
    biases, LayerNorm at (1, 0), and the two projections that write into the residual stream
    (``out_proj`` of attention, ``proj`` of the MLP) scaled by 1/sqrt(2 n_layer), so the sum
    of 2 n_layer branches starts with about the variance of one."""
    residual_std = 0.02 / math.sqrt(2 * max(1, n_layer))
    for module in modules:
        for name, sub in module.named_modules():
            if isinstance(sub, nn.Linear):
                last = name.rsplit(".", 1)[-1]
                nn.init.normal_(sub.weight, std=residual_std if last in ("out_proj", "proj") else 0.02)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.Embedding):
                nn.init.normal_(sub.weight, std=0.02)
            elif isinstance(sub, nn.LayerNorm):
                if sub.weight is not None:
                    nn.init.ones_(sub.weight)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
