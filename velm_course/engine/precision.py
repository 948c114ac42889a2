"""Numeric precision: fp32 on a CPU, bf16 autocast on GPUs that support it, fp16 with a
gradient scaler on older GPUs.

Autocast runs matrix multiplies and convolutions in 16-bit while keeping the weights, the
optimizer and numerically touchy ops (softmax, losses) in fp32. bf16 has fp32's exponent
range, so gradients never underflow; fp16 does not, so its loss is scaled up before backward
and the gradients scaled back down (``torch.amp.GradScaler``), skipping steps that overflow.

>>> resolve_precision("auto", torch.device("cpu"))
'fp32'
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision actually used: "auto" picks bf16 or fp16 on CUDA and fp32 elsewhere."""
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {name!r}: use auto, fp32, bf16 or fp16")
    if device.type != "cuda":
        if name in ("bf16", "fp16"):
            raise ValueError(f"precision {name} needs a CUDA device; on {device.type} use fp32")
        return "fp32"
    if name == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return name


def autocast(precision: str, device: torch.device):
    """The context manager a forward pass runs in."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def enable_tf32() -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on Ampere and newer GPUs
    (10-bit mantissa products, fp32 accumulation): several times faster, accurate enough
    for training."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
