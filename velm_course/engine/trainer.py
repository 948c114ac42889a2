"""The training engine: one loop for every model in the course.

A model family supplies two things: a ``loss_fn(model, batch) -> (loss_sum, count)`` giving
the summed loss of a batch and how many items (tokens, images) it sums over, and the
batches. A loss made of several terms may return ``(loss_sum, count, terms)``, a dict of
its terms summed the same way: each is averaged like the loss and logged as
``loss_<name>``. The engine does the rest:

- AdamW with decoupled weight decay on matrices, linear warm-up then cosine decay
  (``torch.optim.lr_scheduler.LambdaLR``), gradient clipping, gradient accumulation;
- the loss is averaged over the *global* count of a step: all micro-batches and all
  processes together, so 2 processes with batch B/2 take exactly the step 1 process with
  batch B takes, even when captions have different lengths;
- autocast (bf16, or fp16 with a gradient scaler) on CUDA, fp32 on the CPU; TF32 on;
  optional ``torch.compile``;
- the host waits for the device only every ``log_every`` steps (``loss.item()`` blocks);
- validation loss every ``val_every`` steps, ``metrics.jsonl`` in the run folder (loss,
  learning rate, items/s, gradient norm, share of time spent waiting for data), optional
  TensorBoard, a tqdm bar with items/s;
- checkpoints every ``checkpoint_every`` steps, every ``checkpoint_minutes``, at the end, and
  when stopped by Ctrl-C or SIGTERM (which Colab and job schedulers send); a run killed
  outright (SIGKILL) resumes from its last checkpoint, and on a CPU the resumed run ends with
  bit-identical weights to one never interrupted: the data order is a function of the step,
  and the random state (dropout) is saved and restored;
- under ``torchrun`` the model is wrapped in DistributedDataParallel; only rank 0 writes.

One thing no averaging fixes: BatchNorm normalises with the statistics of the batch it sees,
so its outputs depend on how a step's batch is cut into micro-batches or processes (on GPUs,
``torch.nn.SyncBatchNorm`` shares the statistics across processes). Models without BatchNorm
take exactly the same steps whichever way the batch is cut; the tests check that.

>>> import torch
>>> model = torch.nn.Linear(2, 1)
>>> def loss_fn(m, batch):
...     return ((m(batch["x"]) - batch["y"]) ** 2).sum(), torch.tensor(len(batch["x"]))
>>> def batches(start_step):
...     while True:
...         x = torch.randn(8, 2)
...         yield {"x": x, "y": x.sum(1, keepdim=True)}
>>> history = fit(model, loss_fn, batches, TrainConfig(steps=200, lr=0.05, warmup=1), progress=False)
>>> history[-1]["loss"] < 0.01
True
"""

from __future__ import annotations

import functools
import json
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import FORMAT, CheckpointError, CheckpointManager, load_checkpoint
from .config import TrainConfig, config_digest, resume_conflicts
from .precision import autocast, enable_tf32, resolve_precision

Batch = dict
LossFn = Callable[[nn.Module, Batch], tuple]  # (loss_sum, count) or (loss_sum, count, terms)


def _unpack(out) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A loss_fn's result as (loss_sum, count, terms); terms is {} for a plain loss."""
    if len(out) == 2:
        return out[0], out[1], {}
    if len(out) == 3 and isinstance(out[2], dict):
        return out
    raise TypeError("loss_fn must return (loss_sum, count) or (loss_sum, count, {name: term_sum})")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint it can resume from."""


class RunFolderInUse(FileExistsError):
    """The run folder already holds a run, and resuming was not asked for."""


class OutOfMemory(RuntimeError):
    """A step did not fit in device memory; the message says what would."""


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: linear warm-up, then cosine to min_lr_ratio.

    >>> f = lr_lambda(TrainConfig(steps=100, warmup=10, min_lr_ratio=0.0))
    >>> f(0), f(9), round(f(55), 3), f(100)
    (0.1, 1.0, 0.5, 0.0)
    """
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   lr_scale: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (frozen ones, ``requires_grad=False``, are left out).

    ``lr_scale`` maps a parameter-name prefix to a multiplier of the learning rate, e.g.
    ``{"image.": 0.1}`` to fine-tune a pretrained part ten times more gently than a new head;
    the first matching prefix counts, other parameters get 1. The schedule multiplies every
    group's rate alike, so the ratio holds all along.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> opt = make_optimizer(net, TrainConfig(lr=1e-3), lr_scale={"0.": 0.1})
    >>> sorted({g["lr"] for g in opt.param_groups})
    [0.0001, 0.001]
    """
    lr_scale = lr_scale or {}
    for prefix, scale in lr_scale.items():
        if not scale > 0:
            raise ValueError(f"lr_scale[{prefix!r}] = {scale}: a multiplier must be > 0 "
                             "(freeze a part with requires_grad_(False) instead)")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unmatched = [pre for pre in lr_scale if not any(n.startswith(pre) for n, _ in named)]
    if unmatched:
        raise ValueError(f"lr_scale prefixes {unmatched} match no trainable parameter")

    def scale_of(name: str) -> float:
        return next((s for pre, s in lr_scale.items() if name.startswith(pre)), 1.0)

    # decay matrices (linear and conv weights, embeddings) but not biases or norm gains:
    # shrinking a LayerNorm gain towards 0 only fights the normalisation
    groups: dict[tuple[bool, float], list] = {}
    for name, p in named:
        groups.setdefault((p.dim() >= 2, scale_of(name)), []).append(p)
    param_groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * scale}
                    for (decay, scale), ps in sorted(groups.items(), key=lambda kv: (not kv[0][0], -kv[0][1]))]
    params = [p for _, p in named]
    fused = {"fused": True} if all(p.is_cuda for p in params) and params else {}
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.98), **fused)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but no CUDA GPU is available: use --device cpu")
    return device


def move_batch(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of a batch on ``device``; uint8 images travel as uint8 (4× fewer bytes)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class _StopFlag:
    """Turns Ctrl-C and SIGTERM into a request to stop after the current step.

    A second Ctrl-C raises at once, for a step that hangs.
    """

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _own_random_state(fn):
    """Run ``fn`` on a fork of the global random state (CPU and every GPU), restored afterwards:
    training draws its dropout masks from it, and should not move the caller's."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            return fn(*args, **kwargs)
    return wrapper


@_own_random_state
def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_batches: Callable[[int], Iterable[Batch]],
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    val_batches: Callable[[], Iterable[Batch]] | None = None,
    config: dict | None = None,
    extra_state: dict | None = None,
    resume: bool = False,
    prefix: str = "",
    progress: bool = True,
    desc: str = "training",
    unit: str = "items",
    monitor: Callable[[nn.Module, int], dict] | None = None,
    lr_scale: dict[str, float] | None = None,
) -> list[dict]:
    """Train ``model`` for ``cfg.steps`` optimizer steps; returns the history of logged steps.

    ``train_batches(start_step)`` yields micro-batches (dicts of tensors) from optimizer step
    ``start_step`` on, ``cfg.grad_accum`` per step, the same ones whether or not the run was
    interrupted. ``val_batches()`` yields validation batches. With ``run_dir``, checkpoints
    (``{prefix}checkpoint.pt``) and ``{prefix}metrics.jsonl`` go there; ``config`` (the run's settings as a dict)
    and ``extra_state`` (e.g. the vocabulary) are stored in every checkpoint. ``resume=True``
    continues from ``{prefix}checkpoint.pt`` if it exists, refusing a ``config`` whose model or data
    settings differ; without it an existing checkpoint is an error, never overwritten. The
    caller's global random state is the same after ``fit`` as before. ``monitor(model, step)``,
    called at every logged step, returns measurements (floats) that join that step's row, e.g.
    how each term of a loss pulls on the weights; it must leave the model as it found it.
    With ``cfg.patience`` > 0 and validation on, training stops early once the validation loss
    has not improved for that many validations in a row (the row says ``stopped_early``); a
    resumed run that had stopped stays stopped. ``lr_scale`` gives parts of the model their own
    learning rate (see ``make_optimizer``); parameters with ``requires_grad=False`` stay frozen.
    """
    from tqdm.auto import tqdm

    from .. import __version__

    dist = distributed.info()
    device = resolve_device(cfg.device, dist.local_rank)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        enable_tf32()
    model.to(device)
    optimizer = make_optimizer(model, cfg, lr_scale)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    config = config or {"train": vars(cfg).copy()}
    config_hash = config_digest(config)
    if run_dir is not None and dist.is_main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    manager = CheckpointManager(run_dir, cfg.keep_last, prefix) if run_dir is not None else None
    metrics_file = Path(run_dir) / f"{prefix}metrics.jsonl" if run_dir is not None else None

    # one seed for every run of this config: dropout masks differ per rank, repeat per run
    torch.manual_seed(cfg.seed * 1_000_003 + 7919 * dist.rank)
    history: list[dict] = []
    start, best_val = 0, math.inf
    stale, stopped = 0, False  # validations since the best one; whether patience ran out
    if manager is not None and manager.latest.exists():
        if not resume:
            raise RunFolderInUse(f"{run_dir} already holds a run ({manager.latest.name}); resume it with "
                                 "--resume, or choose a new --run-dir")
        state = load_checkpoint(manager.latest, map_location=device)
        conflicts = resume_conflicts(state["config"], config)
        if conflicts:
            raise CheckpointError(f"{manager.latest}: cannot resume with different settings: {conflicts}")
        if state["step"] > cfg.steps:
            raise CheckpointError(f"{manager.latest}: already at step {state['step']}, more than steps={cfg.steps}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # a longer run stretches the cosine: the schedule follows the new step count
        scheduler.lr_lambdas = [lr_lambda(cfg)] * len(optimizer.param_groups)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        rng = state["rng"][dist.rank] if dist.rank < len(state["rng"]) else state["rng"][0]
        _set_rng_state(rng)
        start, history, best_val = state["step"], list(state["history"]), state.get("best_val", math.inf)
        stale, stopped = state.get("stale", 0), state.get("stopped_early", False)
        if dist.is_main and metrics_file is not None and metrics_file.exists():
            # lines logged after the checkpoint belong to steps that will be run again
            lines = [ln for ln in metrics_file.read_text().splitlines()
                     if ln.strip() and json.loads(ln)["step"] <= start]
            metrics_file.write_text("".join(ln + "\n" for ln in lines))

    train_model = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = _try_compile(train_model)
    params = [p for p in model.parameters() if p.requires_grad]
    writer = _tensorboard(run_dir) if (cfg.tensorboard and run_dir and dist.is_main) else None

    def checkpoint(step: int, is_best: bool = False) -> None:
        rngs = distributed.gather_objects(_rng_state())  # every rank's dropout stream
        if manager is None or not dist.is_main:
            return
        manager.save({
            "format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step, "samples_seen": step * cfg.grad_accum * cfg.batch_size * dist.world_size,
            "rng": rngs, "config": config, "config_hash": config_hash, "package_version": __version__,
            "history": history, "best_val": best_val, "world_size": dist.world_size,
            "stale": stale, "stopped_early": stopped,
            **(extra_state or {}),
        }, is_best=is_best)

    def log(row: dict) -> None:
        history.append(row)
        if metrics_file is not None and dist.is_main:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")
        if writer is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(f"{prefix or 'model_'}{k}", v, row["step"])

    # one constant scale for every micro-batch of every rank keeps gradients of a sensible size
    # in backward; the exact division by the global count happens once, after the last one
    pre_scale = 1.0 / (cfg.batch_size * cfg.grad_accum)
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not (progress and dist.is_main),
               dynamic_ncols=True)
    window_loss = torch.zeros((), device=device)
    window_count = torch.zeros((), device=device)
    window_norm = torch.zeros((), device=device)  # summed gradient norms (before clipping)
    window_clipped = torch.zeros((), device=device)  # steps whose gradient was clipped
    window_terms: dict[str, torch.Tensor] = {}  # the loss's named terms, summed like the loss
    window_steps = 0  # steps since the last logged row
    waiting = [0.0]  # host seconds spent waiting for the next batch in this window
    window_start, last_save = time.perf_counter(), time.monotonic()
    batches: Iterator[Batch] = _timed(iter(train_batches(start)), waiting)
    step = start
    with _StopFlag() as stop:
        try:
            while step < cfg.steps and not stopped:
                step_loss, step_count, grad_norm, step_terms = _train_step(
                    train_model, params, loss_fn, batches, cfg, device, precision, scaler,
                    optimizer, pre_scale, dist.world_size)
                for name, value in step_terms.items():
                    window_terms[name] = window_terms.get(name, 0.0) + value
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                scheduler.step()
                step += 1
                window_loss += step_loss
                window_count += step_count
                window_norm += grad_norm
                if cfg.grad_clip:
                    window_clipped += grad_norm > cfg.grad_clip
                window_steps += 1
                bar.update(1)
                row = None
                if step % cfg.log_every == 0 or step == cfg.steps:
                    n = window_count.item()  # the one host synchronisation of a window
                    elapsed = time.perf_counter() - window_start
                    row = {"step": step, "loss": window_loss.item() / max(n, 1),
                           "lr": lr, f"{unit}_per_s": n / max(elapsed, 1e-9),
                           "grad_norm": window_norm.item() / window_steps,
                           "clipped": window_clipped.item() / window_steps,
                           "data_wait": waiting[0] / max(elapsed, 1e-9),
                           **{f"loss_{k}": v.item() / max(n, 1) for k, v in window_terms.items()}}
                    window_terms = {}
                    # refresh=False: the bar redraws at its own pace, not at every logged step
                    bar.set_postfix({"loss": f"{row['loss']:.3f}", f"{unit}/s": f"{row[f'{unit}_per_s']:.0f}"},
                                    refresh=False)
                    if monitor is not None:
                        row.update(monitor(model, step))
                    for t in (window_loss, window_count, window_norm, window_clipped):
                        t.zero_()
                    waiting[0], window_steps = 0.0, 0
                    window_start = time.perf_counter()
                is_best = False
                if val_batches is not None and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                    row = row or {"step": step}
                    row["val_loss"] = evaluate_loss(train_model, loss_fn, val_batches(), cfg.val_batches,
                                                    device, precision)
                    is_best = row["val_loss"] < best_val
                    best_val = min(best_val, row["val_loss"])
                    stale = 0 if is_best else stale + 1
                    # early stopping: the validation loss has not improved for `patience` checks
                    stopped = bool(cfg.patience) and stale >= cfg.patience
                    if stopped:
                        row["stopped_early"] = True
                if row is not None:
                    log(row)
                due = ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps or is_best
                       or stopped)
                timed, stopping = _agree(
                    [time.monotonic() - last_save > 60 * cfg.checkpoint_minutes, stop.signal is not None], device)
                if due or timed or stopping:
                    checkpoint(step, is_best)
                    last_save = time.monotonic()
                if stopping:
                    raise TrainingInterrupted(
                        f"stopped at step {step} by {signal.Signals(stop.signal or signal.SIGTERM).name}; "
                        f"checkpoint saved{f' in {run_dir}' if run_dir else ''}")
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    model.eval()
    return history


def _train_step(model, params, loss_fn, batches, cfg, device, precision, scaler, optimizer,
                pre_scale, world_size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the summed loss, the
    count it sums over, the gradient norm before clipping and the summed terms (all tensors:
    no host sync)."""
    total_loss = torch.zeros((), device=device)
    total_count = torch.zeros((), device=device)
    total_terms: dict[str, torch.Tensor] = {}
    for i in range(cfg.grad_accum):
        batch = move_batch(next(batches), device)
        last = i == cfg.grad_accum - 1
        # DDP averages gradients across ranks in backward: only on the last micro-batch
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        try:
            with sync:
                with autocast(precision, device):
                    loss_sum, count, terms = _unpack(loss_fn(model, batch))
                scaler.scale(loss_sum.float() * pre_scale).backward()
        except torch.OutOfMemoryError as err:
            b, a = cfg.batch_size, cfg.grad_accum
            raise OutOfMemory(
                f"out of memory on {device} with batch_size={b} per process and grad_accum={a}. "
                f"The same effective batch in smaller pieces: --batch-size {max(1, b // 2)} "
                f"--grad-accum {a * 2}" + (" (or --precision bf16)" if precision == "fp32" and device.type == "cuda" else "")
            ) from err
        total_loss += loss_sum.detach().float()
        total_count += torch.as_tensor(count, device=device, dtype=torch.float32)
        for name, value in terms.items():
            total_terms[name] = total_terms.get(name, 0.0) + value.detach().float()
    names = sorted(total_terms)
    # global sums, in one all-reduce: loss, count and the terms
    stats = distributed.all_reduce_sum(torch.stack([total_loss, total_count, *(total_terms[k] for k in names)]))
    total_loss, total_count = stats[0], stats[1]
    total_terms = {k: stats[2 + i] for i, k in enumerate(names)}
    scaler.unscale_(optimizer)
    # gradients now hold pre_scale * sum over this rank's items, averaged over ranks by DDP:
    # rescale them to the mean over every item of the step, whichever rank saw it
    factor = world_size / (pre_scale * total_count.clamp(min=1))
    grads = [p.grad for p in params if p.grad is not None]
    torch._foreach_mul_(grads, factor)
    # with grad_clip=0 the norm is still measured (inf never clips) for the log
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return total_loss, total_count, grad_norm, total_terms


@torch.no_grad()
def evaluate_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable[Batch], max_batches: int,
                  device: torch.device, precision: str = "fp32") -> float:
    """Mean loss per item over at most ``max_batches`` batches, in eval mode (all ranks together)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=device)
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        with autocast(precision, device):
            loss_sum, count, _ = _unpack(loss_fn(model, move_batch(batch, device)))
        totals += torch.stack([loss_sum.float(), torch.as_tensor(count, device=device, dtype=torch.float32)])
    totals = distributed.all_reduce_sum(totals)
    model.train(was_training)
    return (totals[0] / totals[1].clamp(min=1)).item()


def _timed(batches: Iterator[Batch], waiting: list[float]) -> Iterator[Batch]:
    """Yield from ``batches``, adding the seconds spent waiting for each one to ``waiting[0]``."""
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        waiting[0] += time.perf_counter() - t0
        yield batch


def _agree(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on any (a stop signal or a timer may reach
    one rank only); one all-reduce for all of them, none in a single process."""
    if distributed.info().world_size == 1:
        return flags
    t = distributed.all_reduce_sum(torch.tensor([float(f) for f in flags], device=device))
    return [bool(v > 0) for v in t.tolist()]


def _try_compile(model: nn.Module) -> nn.Module:
    try:
        return torch.compile(model)
    except Exception as err:  # no compiler toolchain, unsupported platform: eager still works
        warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); training without it", stacklevel=3)
        return model


def _tensorboard(run_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: pip install tensorboard; logging to metrics.jsonl only",
                      stacklevel=3)
        return None
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))
