"""Convolution three ways, as ratios: Python loops, im2col + one matrix product, ``F.conv2d``.

    python benchmarks/bench_conv.py [--repeats 5]

Notebook 05 builds ``conv2d_loops`` (a loop over output pixels) and ``conv2d_unfold`` (im2col:
copy every window into a column, then one matrix product) and checks both against
``F.conv2d``. This measures what it says about them: loops are slow, im2col is fast but
memory-hungry. Outputs are checked equal before timing. Time: median of interleaved repeats
(``_timing.py``), as a multiple of ``F.conv2d``'s. Memory: the im2col matrix's size against the
input's, counted from the tensors (B·C·k²·L floats against B·C·H·W: about k² times the input at
stride 1). Prints a Markdown table and records it for benchmarks/RESULTS.md (``_record.py``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py

from velm_course.vision.conv import conv2d_loops, conv2d_unfold, im2col

# (batch, in channels, side, out channels, kernel): a tiny layer, and layers of a small CNN at
# the shapes crops' resolution
SHAPES = [(2, 3, 16, 8, 3), (8, 16, 32, 32, 3), (8, 16, 32, 32, 5)]


def measure(B: int, C: int, side: int, n_out: int, k: int, repeats: int) -> tuple[float, float, float]:
    """(loops / F.conv2d time, im2col / F.conv2d time, im2col matrix / input size) for one layer."""
    x, w, b = torch.randn(B, C, side, side), torch.randn(n_out, C, k, k), torch.randn(n_out)
    pad = k // 2  # "same" output size
    ref = F.conv2d(x, w, b, padding=pad)
    assert torch.allclose(conv2d_loops(x, w, b, padding=pad), ref, atol=1e-4)
    assert torch.allclose(conv2d_unfold(x, w, b, padding=pad), ref, atol=1e-4)
    t = time_interleaved({"torch": lambda: F.conv2d(x, w, b, padding=pad),
                          "unfold": lambda: conv2d_unfold(x, w, b, padding=pad),
                          "loops": lambda: conv2d_loops(x, w, b, padding=pad)}, repeats, torch.device("cpu"),
                         warmup=3)
    cols = im2col(F.pad(x, (pad,) * 4), k)  # (B, C*k*k, L)
    return t["loops"] / t["torch"], t["unfold"] / t["torch"], cols.numel() / x.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for B, C, side, n_out, k in SHAPES:
        loops, unfold, memory = measure(B, C, side, n_out, k, args.repeats)
        rows.append({"input (B, C, H, W)": f"({B}, {C}, {side}, {side})", "kernels": f"{n_out} × {k}×{k}",
                     "loops / F.conv2d": f"{loops:,.0f}×", "im2col / F.conv2d": f"{unfold:.1f}×",
                     "im2col matrix / input": f"{memory:.1f}×"})
    report("conv", "three_ways", list(rows[0]), rows, "cpu")

if __name__ == "__main__":
    main()
