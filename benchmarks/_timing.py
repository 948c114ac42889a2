"""Timing shared by the benchmark scripts: interleaved repeats, median, GPU-synchronised."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns: dict, repeats: int, device: torch.device, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation (A, B, A, B, ...) after
    a warm-up, so that noise from the machine hits every variant alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
