"""Learning curves of character language models, in the scoreboard's units.

``train_curve`` trains any character LM of the track (a GPT, an RNN/LSTM/GRU) through the
training engine, on random windows of the training text with warm-up and cosine decay, and
every ``eval_every`` steps scores the *whole* validation text in bits per character with the
scoreboard (a sliding window for a model with a context limit, the carried state for a
recurrent one). Each row also says how much compute the model had by then: training tokens,
the 6 x parameters x tokens estimate of floating-point operations, and the seconds spent
training (evaluation excluded). Notebook 04's live run and ``benchmarks/lm_curves.py``'s
recorded run both come from here, so their rows can share a plot.

>>> import torch
>>> from velm_course.text.gpt import GPT, GPTConfig
>>> ids = torch.arange(200) % 5  # a text that repeats "01234"
>>> gpt = GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=16))
>>> rows = train_curve(gpt, ids, ids[:41], start_id=4, config=CurveConfig(
...     steps=60, batch_size=8, block_size=8, lr=1e-2, warmup=5, eval_every=30), progress=False)
>>> [row["step"] for row in rows], rows[-1]["val_bpc"] < 0.5 < rows[0]["val_bpc"]
([0, 30, 60], True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import TrainConfig, fit
from ..engine.trainer import resolve_device
from ..nn import lm_objective
from .chars import window_batches
from .rnn import sequence_bits
from .scoreboard import train_flops, window_bits


@dataclass(frozen=True)
class CurveConfig:
    steps: int  # optimizer steps
    batch_size: int  # training windows per step
    block_size: int  # characters per training window
    lr: float  # peak learning rate (linear warm-up, then cosine decay)
    warmup: int  # warm-up steps
    eval_every: int  # steps between scorings of the validation text
    log_every: int = 0  # steps between rows of the training history (0: eval_every)
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    seed: int = 0  # initialisation is the caller's; this seeds the windows and dropout
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    precision: str = "auto"  # bf16 on a GPU, fp32 on the CPU
    val_streams: int = 64  # a recurrent model reads the validation text as this many streams
    score_start: bool = True  # also score the untrained model (the curve's first row, step 0)


def validation_bits(model: torch.nn.Module, val_ids: torch.Tensor, start_id: int, val_streams: int = 64) -> float:
    """Total bits of ``val_ids`` (N,): sliding windows for a model with ``config.block_size`` (a
    GPT) or ``config.context`` (the fixed-window MLP), the carried state (``val_streams``
    pieces side by side) for a recurrent model."""
    device = next(model.parameters()).device
    block = getattr(model.config, "block_size", None)
    if block is not None:
        return window_bits(model, val_ids.to(device), start_id, block_size=block)
    context = getattr(model.config, "context", None)
    if context is not None:  # a fixed-window MLP: each scored position has its whole window inside
        return window_bits(model, val_ids.to(device), start_id, block_size=context - 1 + 256, stride=256)
    return sequence_bits(model, val_ids.to(device), start_id, n_streams=val_streams)


def train_curve(
    model: torch.nn.Module,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    start_id: int,
    config: CurveConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "LM",
) -> list[dict]:
    """Train ``model`` (already initialised) and return its curve: one row at step 0 (unless
    ``config.score_start`` is off) and one every ``eval_every`` steps, each {"step", "tokens", "train_flops", "train_seconds",
    "val_bpc", "train_loss"} (``train_loss``: nats per token over the steps since the last
    history row; None at step 0). The engine's history, a row every ``log_every`` steps, is in
    ``rows[-1]["history"]``.

    With ``run_dir`` the engine checkpoints there and an interrupted run resumes; the curve's
    rows so far live in the checkpoint's history, so nothing is measured twice.
    """
    log_every = config.log_every or config.eval_every
    if config.eval_every < 1 or config.eval_every % log_every:
        raise ValueError(f"eval_every={config.eval_every} must be a positive multiple of log_every={log_every}: "
                         "the validation text is scored at logged steps")
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * config.block_size
    n_chars = len(val_ids)

    def monitor(m: torch.nn.Module, step: int) -> dict:
        if step % config.eval_every and step != config.steps:
            return {}
        was_training = m.training
        bits = validation_bits(m, val_ids, start_id, config.val_streams)
        m.train(was_training)
        return {"val_bpc": bits / n_chars}

    cfg = TrainConfig(
        steps=config.steps, batch_size=config.batch_size, lr=config.lr, warmup=config.warmup,
        min_lr_ratio=config.min_lr_ratio, weight_decay=config.weight_decay, grad_clip=1.0,
        seed=config.seed, device=config.device, precision=config.precision,
        log_every=log_every, checkpoint_every=config.eval_every if run_dir else 0, val_every=0)
    model.to(resolve_device(cfg.device))  # the engine's rule: "auto" picks cuda when present
    first = ([{"step": 0, "val_bpc": validation_bits(model, val_ids, start_id, config.val_streams) / n_chars}]
             if config.score_start else [])
    history = fit(model, lm_objective, window_batches(train_ids, config.batch_size, config.block_size, config.seed),
                  cfg, run_dir=run_dir, resume=run_dir is not None, monitor=monitor, progress=progress,
                  desc=desc, unit="tokens")
    rows, seconds, previous = [], 0.0, 0
    for row in first + history:
        step = row["step"]
        if step:  # the engine's throughput over the steps since the last row: training time only
            seconds += (step - previous) * tokens_per_step / row["tokens_per_s"]
        previous = step
        if "val_bpc" not in row:
            continue
        rows.append({"step": step, "tokens": step * tokens_per_step,
                     "train_flops": train_flops(n_params, step * tokens_per_step),
                     "train_seconds": round(seconds, 3), "val_bpc": row["val_bpc"],
                     "train_loss": row.get("loss")})
    rows[-1]["history"] = history
    return rows
