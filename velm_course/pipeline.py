"""The main job: train a captioner and its blind twin on a captions dataset, score both.

``velm-course train`` and ``make run`` call :func:`train_and_evaluate`; notebook 00 calls it
too, on a very small setting. Everything a run produces lands in one folder:

    runs/<timestamp>/
        config.json            every setting (a RunConfig), written before training starts
        vocab.json             the caption vocabulary and the longest caption in words
        checkpoint.pt          the captioner's latest state (also best.pt, checkpoints/)
        baseline_checkpoint.pt the blind baseline's
        metrics.jsonl          training loss, learning rate, throughput, validation loss
        baseline_metrics.jsonl the same for the baseline
        metrics.json           test-split scores: model, blind baseline, and dataset rows
        captions_test.json     the generated test captions
        loss_curve.png, samples.png

Run it again with ``resume=True`` on the same folder after an interruption and it continues
from the last checkpoint; only the step count may change (see ``engine.config``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from .data.captions import CaptionVocab, normalize_caption
from .data.loader import CaptionPairs, batch_loader, collate_captions
from .data.registry import open_caption_data
from .engine import RunConfig, fit
from .engine.config import ConfigError, resume_conflicts
from .engine.trainer import RunFolderInUse
from .eval.captioning import caption_images, score_split
from .multimodal.captioner import Captioner, CaptionerConfig
from .nn.loss import IGNORE_INDEX, lm_loss
from .plots import plot_caption_grid, plot_loss_curves
from .profiles import Profile, get_profile

IN_MEMORY_LIMIT = 2 * 2**30  # bytes of decoded uint8 images kept in RAM at most


def captioner_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy of a caption batch and the number of tokens it covers."""
    # uint8 crossed to the device; convert there, in the layout the conv kernels like best
    images = batch["images"].float().div_(255).contiguous(memory_format=torch.channels_last)
    logits, _ = model(images, batch["idx"])
    targets = batch["targets"]
    return lm_loss(logits, targets, reduction="sum"), (targets != IGNORE_INDEX).sum()


def new_run_dir(runs_dir: str | Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        path = Path(runs_dir) / (stamp + suffix)
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise RuntimeError(f"could not make a new run folder in {runs_dir}")


def _vocab(run_dir: Path, cfg: RunConfig, train_set) -> tuple[CaptionVocab, int]:
    """The run's vocabulary: built from the training captions once, then read back."""
    path = run_dir / "vocab.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return CaptionVocab(saved["words"]), saved["max_words"]
    refs = [c for caps in train_set.captions_by_id().values() for c in caps]
    vocab = CaptionVocab.build(refs, min_count=cfg.data.min_word_count)
    max_words = cfg.data.max_words or max(len(normalize_caption(c).split()) for c in refs)
    path.write_text(json.dumps({"words": vocab.to_list(), "max_words": max_words}))
    return vocab, max_words


def _uint8_images(dataset, limit: int | None = None) -> torch.Tensor:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset.get_uint8(i)[0] for i in range(n)])  # (n, 3, H, W)


def train_and_evaluate(
    config: RunConfig | Profile | None = None,
    run_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run the whole job and return the run folder (see the module docstring).

    ``config`` defaults to the active profile's. A new run gets ``runs_dir/<timestamp>`` unless
    ``run_dir`` is given; a folder that already holds a run is only continued with ``resume``.
    """
    if isinstance(config, Profile):
        config = config.run
    config = config or get_profile().run
    if run_dir is None and resume:
        raise ValueError("resume needs the run folder to continue (run_dir)")
    config_file = Path(run_dir) / "config.json" if run_dir is not None else None
    if config_file is not None and config_file.exists():
        if not resume:
            raise RunFolderInUse(f"{run_dir} already holds a run; continue it with --resume, or "
                                 "choose a new --run-dir")
        saved = RunConfig.load(config_file)  # a damaged config.json is reported by name, first
        conflicts = resume_conflicts(saved.to_dict(), config.to_dict())
        if conflicts:
            raise ConfigError(f"{config_file}: cannot resume with different settings: {conflicts}")
    elif resume:
        raise FileNotFoundError(f"{config_file}: no such file; nothing to resume in {run_dir}")
    cfg = config
    # the data first: a missing dataset stops here, before a run folder exists
    data = open_caption_data(cfg.data, seed=cfg.train.seed, progress=progress)
    run_dir = new_run_dir(runs_dir) if run_dir is None else Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")  # on resume: the same settings, perhaps with more steps
    vocab, max_words = _vocab(run_dir, cfg, data.train)
    pin = torch.cuda.is_available() and cfg.train.device != "cpu"
    # small datasets are decoded once (8 % of a ci step, benchmarks/RESULTS.md); big ones, such as
    # COCO's 113k training images (~17 GB decoded at 224 px), are decoded by DataLoader workers
    in_memory = cfg.data.in_memory and len(data.train) * 3 * cfg.data.image_size**2 <= IN_MEMORY_LIMIT
    train_pairs = CaptionPairs(data.train, vocab, max_words, in_memory=in_memory, progress=progress)
    val_pairs = CaptionPairs(data.val, vocab, max_words, in_memory=in_memory)

    def val_batches():
        # its own generator: a loader without one draws a seed from the global random state,
        # which belongs to dropout (and must replay exactly on resume)
        return torch.utils.data.DataLoader(val_pairs, batch_size=cfg.train.batch_size, collate_fn=collate_captions,
                                           generator=torch.Generator().manual_seed(0))

    model_cfg = CaptionerConfig(
        vocab_size=len(vocab), d_model=cfg.model.d_model, n_layer=cfg.model.n_layer, n_head=cfg.model.n_head,
        max_len=max_words + 2, dropout=cfg.model.dropout, image_size=cfg.data.image_size,
        encoder=cfg.model.encoder, pretrained=cfg.model.pretrained, freeze_encoder=cfg.model.freeze_encoder,
        fusion=cfg.model.fusion)
    models, histories, seconds = {}, {}, {}
    blind_train = replace(cfg.train, steps=cfg.train.blind_steps, warmup=max(1, cfg.train.blind_steps // 10))
    for name, blind, train_cfg, prefix in [
        ("model", False, cfg.train, ""),
        ("baseline", True, blind_train, "baseline_"),
    ]:
        torch.manual_seed(train_cfg.seed)  # the same initial weights on every run and every resume
        model = Captioner(replace(model_cfg, blind=blind)).to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        histories[name] = fit(
            model, captioner_loss,
            batch_loader(train_pairs, collate_captions, train_cfg.batch_size, train_cfg.seed, train_cfg.steps,
                         train_cfg.grad_accum, cfg.data.num_workers, pin),
            train_cfg, run_dir=run_dir, val_batches=val_batches, config=cfg.to_dict(),
            extra_state={"vocab": vocab.to_list(), "max_words": max_words}, resume=True, prefix=prefix,
            progress=progress, desc=f"training {'blind baseline' if blind else 'captioner'}", unit="tokens",
        )
        seconds[name] = time.perf_counter() - t0
        models[name] = model

    test = data.test
    references = test.captions_by_id()
    ids = test.image_ids
    images = _uint8_images(test)
    generated = {name: dict(zip(ids, caption_images(m, images, vocab, cfg.eval.batch_size), strict=True))
                 for name, m in models.items()}
    content = data.content_scores.get("test")
    metrics = {"split": "test", "n_images": len(ids), **score_split(generated["model"], references, content)}
    metrics["baseline"] = score_split(generated["baseline"], references, content)
    for row, captions in data.reference_rows.get("test", {}).items():
        metrics[row] = score_split(captions, references, content)
    metrics["vision_gain_cider"] = metrics["CIDEr"] / max(metrics["baseline"]["CIDEr"], 1e-9)
    metrics["skipped_images"] = {s: data.split(s).num_skipped for s in ("train", "val", "test")}
    metrics["train_seconds"] = seconds
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "captions_test.json").write_text(json.dumps(
        [{"image_id": i, "caption": generated["model"][i], "baseline": generated["baseline"][i]} for i in ids],
        indent=2))

    import matplotlib.pyplot as plt

    plt.close(plot_loss_curves({"captioner": histories["model"], "blind baseline": histories["baseline"]},
                               run_dir / "loss_curve.png"))
    k = min(cfg.eval.n_samples, len(ids))
    plt.close(plot_caption_grid(images[:k], [generated["model"][i] for i in ids[:k]],
                                [references[i] for i in ids[:k]], run_dir / "samples.png"))
    return run_dir
