"""Checkpoints: one file holding everything a run needs to continue, written so a crash never
leaves a broken one.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: no pickled code runs when you open someone's checkpoint.
It is written to a temporary file, flushed to disk (fsync) and renamed over the old one; a
rename is atomic, so a reader sees the old file or the new one, never half of one.

In a run folder:

    checkpoint.pt              the latest state (what ``--resume`` reads)
    checkpoints/step-N.pt      the last ``keep_last`` states (hard links: no extra disk)
    best.pt                    the state with the lowest validation loss so far

A second model trained in the same folder (the captioning job's blind baseline) puts a
prefix before each name: ``baseline_checkpoint.pt``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     save_checkpoint(Path(d) / "c.pt", {"model": {}, "step": 3})
...     load_checkpoint(Path(d) / "c.pt", required=("model", "step"))["step"]
3
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

# what every training checkpoint holds; a file without one of these is refused by name
REQUIRED_KEYS = ("format", "model", "optimizer", "scheduler", "step", "rng", "config", "config_hash",
                 "package_version", "history")
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` atomically: temporary file, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic


def load_checkpoint(path, required=REQUIRED_KEYS, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file, or
    one without a required entry, raises ``CheckpointError`` naming the file and the entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled code: all unusable
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a checkpoint must hold a dict, got {type(state).__name__}")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path}: missing entr{'y' if len(missing) == 1 else 'ies'} {missing}")
    if "format" in required and state["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r}, this package reads {FORMAT}")
    return state


class CheckpointManager:
    """Saves to ``RUN_DIR/checkpoint.pt``, keeps the last N step files and the best one."""

    def __init__(self, run_dir, keep_last: int = 2, prefix: str = ""):
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.latest = self.run_dir / f"{prefix}checkpoint.pt"
        self.best = self.run_dir / f"{prefix}best.pt"
        self.step_dir = self.run_dir / f"{prefix}checkpoints"

    def save(self, state: dict, is_best: bool = False) -> None:
        save_checkpoint(self.latest, state)
        if self.keep_last:
            self.step_dir.mkdir(exist_ok=True)
            step_file = self.step_dir / f"step-{state['step']:08d}.pt"
            _link_or_copy(self.latest, step_file)
            for old in sorted(self.step_dir.glob("step-*.pt"))[: -self.keep_last]:
                old.unlink()
        if is_best:
            _link_or_copy(self.latest, self.best)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        os.link(src, tmp)  # a second name for the same bytes: instant, no extra disk
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
