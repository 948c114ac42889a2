"""COCO-sized captioner training on one GPU: precision, the JPEG data path and the feature cache.

    python benchmarks/bench_coco_gpu.py --device cuda            # the full run, in one call
    python benchmarks/bench_coco_gpu.py --device cpu --smoke     # tiny sizes, a few steps, records nothing

COCO's sizes with synthetic contents: 224×224 images, five captions per image of 12 to 16 words
over a 10,000-word vocabulary, a batch of 128. The model is the course's captioner as a COCO
RunConfig describes it (``pipeline.captioner_config``: ResNet-50 grid projected to d=512, three
cross-attention blocks, random weights) and, as a second decoder, GPT-2 small (768 wide, 12
blocks, random weights, no download) on the same grid. Every training run goes through
``velm_course.engine.fit``; the engine's first logged window (``--warmup`` steps: cuDNN's
choices, compilation, worker start-up) is left out, and each measured window ends on the
engine's host synchronisation (``.item()``), so queued GPU work is counted.

1. Precision. Training images/s from batches already on the device (uint8 images, as the
   loader delivers them) in fp32 (TF32 on, as the engine sets it), bf16 autocast, and bf16 with
   ``torch.compile``, each against fp32 side by side. Target: bf16 >= 2x fp32.
2. The data path. Synthetic JPEGs at COCO's sizes (~640×480, ~140 KB) in COCO's layout
   (``train2014/``, ``annotations/captions_train2014.json``) read through ``CocoCaptions``,
   ``CaptionPairs`` and ``batch_loader`` with worker processes and pinned memory, training in
   bf16: images/s against the device-resident batches of part 1, and the share of step time the
   host spent blocked in ``next()`` on the loader (the engine's ``data_wait``). The measured
   stretch is at least four times the batches the workers prefetch, so the prefetched queue
   cannot hide a slow loader. Also the loader alone (no training): the CPU's decode rate.
   Target: data waiting < 10 % of step time.
3. The feature cache (``velm_course.vision.feature_cache``). Images/s through
   ``build_feature_cache`` (frozen encoder under its autocast, float16 shards on disk), from the
   JPEGs (decoded by the workers) and from images already in memory; then training steps/s
   from the cache memory-mapped on disk (``MappedFeatures``) and loaded into GPU memory
   (``CachedFeatures.from_cache``) against training from pixels with the same frozen encoder,
   bf16. The cached encoder is the captioner's own frozen one, ResNet-50 and its projection to
   d, since a cache must give the decoder's width; ResNet-50's raw 2048-wide grid is 4× the bytes.

4. The recipe (``--profile full --dataset coco``, ``profiles.DATASET_PRESETS``): GPT-2 small with
   its 50,257 BPE tokens, cross-attending to CLIP ViT-B/32's 7×7 grid of 768-wide features held
   in device memory as ``CachedFeatures.from_cache`` serves a feature cache (random values), in
   fp32 and bf16, captions padded to 30 tokens as the run pads them to its longest (an assumed
   length for COCO's captions of up to 16 words): steps/s, and the hours the preset's steps would take at that rate
   (training only: not the cache build, validation or evaluation).

Peak GPU memory (``torch.cuda.max_memory_allocated``) per row. The targets are observations,
never asserts. Rows are recorded for benchmarks/RESULTS.md (``_record.py``); ``--smoke`` does
not record unless ``--record`` is given.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from _record import RESULTS_DIR, markdown, save  # benchmarks/_record.py
from _timing import sync  # benchmarks/_timing.py

from velm_course.data.captions import SPECIALS, CaptionVocab, caption_targets
from velm_course.data.coco import CocoCaptions
from velm_course.data.loader import CaptionPairs, batch_loader, collate_captions
from velm_course.engine import DataConfig, ModelConfig, RunConfig, TrainConfig, fit
from velm_course.multimodal import Captioner
from velm_course.pipeline import captioner_config, captioner_loss

NAME = "coco_gpu"  # benchmarks/results/coco_gpu.json
SCRIPT = "benchmarks/bench_coco_gpu.py"
TARGET_BF16 = 2.0  # bf16 images/s over fp32 images/s, at least
TARGET_WAIT = 0.10  # share of step time blocked on the loader, below

COLUMNS = {
    "precision": ["comparison", "sizes", "images/s", "vs fp32", "data wait", "peak memory", "warm-up", "note"],
    "data_path": ["data path", "sizes", "loader alone (images/s)", "training (images/s)",
                  "vs device-resident batches", "data wait", "peak memory", "note"],
    "feature_cache": ["what", "sizes", "images/s", "steps/s", "vs from pixels", "peak memory", "note"],
    "recipe": ["what", "sizes", "steps/s", "images/s", "vs fp32", "hours for the preset's steps", "peak memory",
               "note"],
    "targets": ["target", "measured", "observation"],
}


@dataclass(frozen=True)
class Sizes:
    image_size: int = 224
    vocab_words: int = 10_000  # COCO's words seen >= 5 times: ~10k
    min_words: int = 12  # caption lengths, uniform in [min_words, max_words]
    max_words: int = 16
    captions_per_image: int = 5
    d_model: int = 512
    n_layer: int = 3
    n_head: int = 8
    gpt2: tuple[int, int, int] = (768, 12, 12)  # GPT-2 small: width, blocks, heads
    gpt2_vocab: int = 50_257  # GPT-2's BPE tokens (the recipe's decoder)
    clip_grid: tuple[int, int] = (49, 768)  # CLIP ViT-B/32 at 224 px: 7×7 grid tokens, width
    # the recipe's batches are padded to its longest caption in GPT-2 tokens (<|endoftext|> at both ends):
    # COCO's longest caption of at most 16 words, about 30 tokens (an assumption, as notebook 12's estimate)
    recipe_tokens: int = 30
    batch_size: int = 128
    warmup: int = 10  # steps of the first logged window, left out; also the logging window
    steps: int = 60  # measured steps (rounded up to whole windows)
    jpegs: int = 2000  # synthetic JPEG files
    jpeg_sizes: tuple[tuple[int, int], ...] = ((640, 480), (640, 427), (480, 640), (500, 375), (640, 512))
    cache_images: int = 8192  # images in memory built into a cache
    cache_batch: int = 256  # images per encoder call while building one

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + self.vocab_words

    def measured_steps(self, steps: int) -> int:
        return self.warmup * math.ceil(steps / self.warmup)


FULL = Sizes()
SMOKE = Sizes(image_size=32, vocab_words=200, d_model=16, n_layer=1, n_head=2, gpt2=(16, 1, 2), gpt2_vocab=300,
              clip_grid=(4, 16), batch_size=2,
              warmup=1, steps=2, jpegs=8, jpeg_sizes=((96, 72), (72, 96)), cache_images=8, cache_batch=4)


# ----------------------------------------------------------------------------------------------
# Synthetic data

def word_list(n: int) -> list[str]:
    """``n`` distinct made-up words (consonant-vowel syllables), shortest first.

    >>> word_list(3)
    ['baba', 'babe', 'babi']
    """
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = ("".join(p) for k in itertools.count(2) for p in itertools.product(syllables, repeat=k))
    return list(itertools.islice(words, n))


def synthetic_captions(n: int, sizes: Sizes, words: list[str], seed: int = 0) -> list[str]:
    """``n`` captions of ``min_words``..``max_words`` words drawn Zipf-like (rank r with weight
    1 / (r + 10)), as caption words are."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(len(words)) + 10.0)
    lengths = rng.integers(sizes.min_words, sizes.max_words + 1, size=n)
    ids = rng.choice(len(words), size=int(lengths.sum()), p=p / p.sum())
    out, start = [], 0
    for length in lengths:
        out.append(" ".join(words[i] for i in ids[start:start + length]))
        start += length
    return out


def synthetic_tokens(n: int, sizes: Sizes, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, targets) of ``n`` random captions as the loader makes them: (n, max_words + 1) each."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((n, sizes.max_words + 2), SPECIALS.index("<pad>"), dtype=torch.long)
    lengths = torch.randint(sizes.min_words, sizes.max_words + 1, (n,), generator=g)
    for row, length in enumerate(lengths.tolist()):
        tokens[row, 0] = SPECIALS.index("<bos>")
        tokens[row, 1:length + 1] = torch.randint(len(SPECIALS), sizes.vocab_size, (length,), generator=g)
        tokens[row, length + 1] = SPECIALS.index("<eos>")
    return caption_targets(tokens)


def random_pixels(sizes: Sizes, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, sizes.image_size, sizes.image_size), dtype=torch.uint8, generator=g)


def device_batches(sizes: Sizes, device: torch.device, images: Callable[[int], torch.Tensor], pool: int = 4):
    """``batches(start_step)`` for the engine: ``pool`` batches already on the device, cycled.
    ``images(k)`` gives batch k's images (uint8 pixels, or row numbers into a feature cache)."""
    made = []
    for k in range(pool):
        idx, targets = synthetic_tokens(sizes.batch_size, sizes, seed=k)
        made.append({"images": images(k).to(device), "idx": idx.to(device), "targets": targets.to(device)})

    def batches(start_step: int):
        yield from itertools.cycle(made)
    return batches


def _write_jpeg(job: tuple[str, int, int, int]) -> int:
    """One smooth random picture with grain (a COCO-like file size) as a JPEG; returns its bytes."""
    from PIL import Image

    path, width, height, seed = job
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (height // 24 + 1, width // 24 + 1, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = rng.integers(-24, 25, (height, width, 3), dtype=np.int16)
    Image.fromarray((smooth + grain).clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def write_coco_jpegs(root: Path, sizes: Sizes, words: list[str], workers: int) -> dict:
    """Synthetic COCO 2014 training data under ``root``: JPEGs in ``train2014/`` named as COCO's
    and ``annotations/captions_train2014.json`` in COCO's format. Returns a summary."""
    folder = root / "train2014"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, jobs = [], []
    for i in range(sizes.jpegs):
        width, height = sizes.jpeg_sizes[i % len(sizes.jpeg_sizes)]
        name = f"COCO_train2014_{i + 1:012d}.jpg"
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        jobs.append((str(folder / name), width, height, i))
    t0 = time.perf_counter()
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            nbytes = list(pool.map(_write_jpeg, jobs, chunksize=16))
    else:
        nbytes = [_write_jpeg(job) for job in jobs]
    k = sizes.captions_per_image
    captions = synthetic_captions(k * sizes.jpegs, sizes, words)
    annotations = [{"id": j + 1, "image_id": j // k + 1, "caption": c} for j, c in enumerate(captions)]
    ann_file = root / "annotations" / "captions_train2014.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations}))
    return {"folder": folder, "ann_file": ann_file, "files": len(jobs), "mean_kb": statistics.mean(nbytes) / 1e3,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------
# Models

def run_config(sizes: Sizes, freeze_encoder: bool = False) -> RunConfig:
    """The RunConfig of a COCO run at these sizes (ResNet-50 grid, random weights)."""
    return RunConfig(
        data=DataConfig(dataset="coco", image_size=sizes.image_size, max_words=sizes.max_words),
        model=ModelConfig(encoder="resnet50", pretrained=False, freeze_encoder=freeze_encoder,
                          d_model=sizes.d_model, n_layer=sizes.n_layer, n_head=sizes.n_head),
        train=TrainConfig(batch_size=sizes.batch_size), profile="full")


def course_captioner(sizes: Sizes, freeze_encoder: bool = False, encoder=None) -> Captioner:
    torch.manual_seed(0)
    cfg = captioner_config(run_config(sizes, freeze_encoder), sizes.vocab_size, sizes.max_words)
    return Captioner(cfg, encoder=encoder).to(memory_format=torch.channels_last)


def gpt2_captioner(sizes: Sizes) -> torch.nn.Module:
    from velm_course.multimodal.hf_gpt2 import GPT2Captioner, GPT2CaptionerConfig

    torch.manual_seed(0)
    width, blocks, heads = sizes.gpt2
    cfg = GPT2CaptionerConfig(vocab_size=sizes.vocab_size, n_embd=width, n_layer=blocks, n_head=heads,
                              max_len=sizes.max_words + 2, image_size=sizes.image_size, encoder="resnet50")
    return GPT2Captioner(cfg).to(memory_format=torch.channels_last)


def recipe_captioner(sizes: Sizes, features) -> torch.nn.Module:
    """The COCO recipe's captioner: GPT-2 (with its BPE vocabulary) on cached grid features."""
    from velm_course.multimodal.hf_gpt2 import GPT2Captioner, GPT2CaptionerConfig

    torch.manual_seed(0)
    width, blocks, heads = sizes.gpt2
    cfg = GPT2CaptionerConfig(vocab_size=sizes.gpt2_vocab, n_embd=width, n_layer=blocks, n_head=heads,
                              max_len=sizes.max_words + 2, freeze_encoder=True)
    return GPT2Captioner(cfg, encoder=features)


def per_image_loss(model, batch):
    """``captioner_loss`` counted in images, so the engine logs images/s."""
    loss_sum, _ = captioner_loss(model, batch)
    return loss_sum, len(batch["idx"])


# ----------------------------------------------------------------------------------------------
# Measuring

class Skipped(Exception):
    """A row that cannot be measured here; the message says why."""


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def train_through_engine(model, batches, sizes: Sizes, device: torch.device, precision: str, steps: int,
                         compile_model: bool = False) -> dict:
    """Train ``model`` for the warm-up window and then whole windows covering ``steps`` steps
    through the engine. The figures come from the engine's logged windows after the first:
    images, seconds, steps, and seconds blocked waiting for a batch."""
    window = sizes.warmup
    cfg = TrainConfig(steps=window + sizes.measured_steps(steps), batch_size=sizes.batch_size, lr=1e-4, warmup=1,
                      device=str(device), precision=precision, compile=compile_model, log_every=window,
                      checkpoint_every=0)
    _reset_memory(device)
    history = fit(model, per_image_loss, batches, cfg, progress=False, unit="images")
    out = {"images": 0, "seconds": 0.0, "wait_seconds": 0.0, "steps": 0, "warmup_seconds": 0.0,
           "peak_mib": _peak_mib(device)}
    previous = 0
    for i, row in enumerate(history):
        n = sizes.batch_size * (row["step"] - previous)  # images in this window
        elapsed = n / row["images_per_s"]
        if i == 0:
            out["warmup_seconds"] = elapsed
        else:
            out["images"] += n
            out["seconds"] += elapsed
            out["wait_seconds"] += row["data_wait"] * elapsed
            out["steps"] += row["step"] - previous
        previous = row["step"]
    return out


def run_row(what: str, fn: Callable[[], dict], device: torch.device, strict: bool) -> tuple[dict | None, str]:
    """(measurement, note) of one row. A ``Skipped`` row has its reason as the note; a row that
    fails raises when ``strict`` (the smoke run) and otherwise is noted as failed, so that one
    broken row of a GPU session does not lose the others. Compiled graphs and cached GPU memory
    are freed after every row."""
    print(what, flush=True)
    t0 = time.perf_counter()
    try:
        out = fn()
    except Skipped as why:
        print(f"    {why}", flush=True)
        return None, str(why)
    except Exception as err:
        if strict:
            raise
        traceback.print_exc()
        first = str(err).splitlines()[0][:160] if str(err) else ""
        return None, f"failed: {type(err).__name__}: {first}"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    print(f"    {time.perf_counter() - t0:.1f} s", flush=True)
    return out, ""


def rates(m: dict) -> dict:
    """images/s, steps/s and the data-wait share of a measurement."""
    s = m["seconds"]
    return {"images_per_s": m["images"] / s, "steps_per_s": m["steps"] / s, "wait": m["wait_seconds"] / s}


def loader_alone(batches, n_batches: int, batch_size: int) -> dict:
    """The loader with nothing consuming, timed over the second half of ``n_batches`` (by then
    the workers' head start is used up, so this is the rate they produce at)."""
    it = iter(batches(0))
    stamps = []
    for _ in range(n_batches):
        next(it)
        stamps.append(time.perf_counter())
    del it
    half = n_batches // 2
    return {"images": (n_batches - 1 - half) * batch_size, "seconds": stamps[-1] - stamps[half]}


def timed_cache_build(encoder, dataset, folder: Path, sizes: Sizes, device: torch.device, workers: int) -> dict:
    """One ``build_feature_cache`` of ``dataset`` into the empty ``folder``, timed whole (the
    weights' and images' fingerprints and the fsynced shard writes included)."""
    from velm_course.vision.feature_cache import build_feature_cache

    _reset_memory(device)
    sync(device)
    t0 = time.perf_counter()
    cache = build_feature_cache(encoder, dataset, folder, batch_size=sizes.cache_batch, encoder_name="resnet50+proj",
                                progress=False, num_workers=workers, autocast=device.type == "cuda")
    sync(device)
    seconds = time.perf_counter() - t0
    return {"images": len(cache), "seconds": seconds, "steps": math.ceil(len(cache) / sizes.cache_batch),
            "wait_seconds": 0.0, "peak_mib": _peak_mib(device), "grid_shape": tuple(cache.grid_shape),
            "megabytes": sum(p.stat().st_size for p in Path(folder).glob("*.npy")) / 1e6}


# ----------------------------------------------------------------------------------------------
# Formatting

def _rate(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n != 1)}"


def _mib(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f} MiB"


# ----------------------------------------------------------------------------------------------
# The run

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (default: cuda where there is one)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and a few steps, to check the script runs (on a CPU in well under a minute)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"measured training steps per row (default {FULL.steps}; {SMOKE.steps} with --smoke)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"warm-up steps left out, also the logging window (default {FULL.warmup})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"images per step (default {FULL.batch_size})")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (default: the CPU count less 2, at most 16; 1 with --smoke)")
    parser.add_argument("--jpegs", type=int, default=None, help=f"synthetic JPEG files (default {FULL.jpegs})")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also bf16 + torch.compile (default: yes; on a GPU it compiles for a minute or two)")
    parser.add_argument("--gpt2", action=argparse.BooleanOptionalAction, default=True,
                        help="also the GPT-2 small decoder in fp32 and bf16 (default: yes)")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                        help="record the rows for RESULTS.md (default: yes, except with --smoke)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the rows are recorded")
    args = parser.parse_args(argv)
    if args.record is None:
        args.record = not args.smoke
    for name in ("steps", "warmup", "batch_size", "jpegs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Measure every row, print the tables and record them (see the module docstring); returns
    {"tables": {id: {"columns", "rows"}}, "raw": {id: [measurements]}, "recorded": path or None}."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    sizes = replace(SMOKE if args.smoke else FULL, **{k: v for k, v in {
        "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "jpegs": args.jpegs}.items()
        if v is not None})
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but there is no CUDA GPU here: use --device cpu --smoke")
    workers = args.workers if args.workers is not None else (
        1 if args.smoke else max(1, min(16, (os.cpu_count() or 2) - 2)))
    threads = torch.get_num_threads()
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # timings mean nothing here, and on a busy small machine threads spin-wait
    try:
        return _run(args, sizes, device, workers, " ".join(["python", SCRIPT, *argv]))
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, sizes: Sizes, device: torch.device, workers: int, command: str) -> dict:
    started = time.perf_counter()
    strict = args.smoke  # a smoke run fails loudly; a GPU run records a failed row and goes on

    bf16_reason = compile_reason = None
    if device.type != "cuda":
        bf16_reason = "skipped: the engine runs bf16 on CUDA only (engine/precision.py)"
        compile_reason = ("skipped: torch.compile is measured on the GPU only (on a CPU it spends minutes "
                          "compiling, and CPU speed is not what this benchmark is about)")
    elif not torch.cuda.is_bf16_supported():
        bf16_reason = compile_reason = "skipped: this GPU has no bf16"
    if not args.compile:
        compile_reason = "skipped: --no-compile"
    fast = "bf16" if bf16_reason is None else "fp32"  # the precision of parts 2 and 3
    fast_label = "bf16" if fast == "bf16" else "fp32 (bf16 is CUDA-only)"

    raw: dict[str, list[dict]] = {t: [] for t in COLUMNS}
    tables: dict[str, list[dict]] = {t: [] for t in COLUMNS}
    recorded: list[Path] = []

    def attempt(what: str, fn: Callable[[], dict]) -> tuple[dict | None, str]:
        return run_row(what, fn, device, strict)

    def publish(table: str) -> None:
        rows = [{**row, "command": command} for row in tables[table]]
        if args.record and rows:
            recorded.append(save(NAME, table, COLUMNS[table], rows, device, results_dir=args.results_dir))

    size_text = (f"{'smoke: ' if args.smoke else ''}batch {sizes.batch_size}, {sizes.image_size} px, "
                 f"captions of {sizes.min_words}–{sizes.max_words} words, V={sizes.vocab_size:,}")
    window_text = f"{sizes.measured_steps(sizes.steps)} steps after {sizes.warmup}"
    print(f"{device}; {size_text}; {window_text}; {_workers(workers)} in the loader", flush=True)

    # 1. precision, from batches already on the device -----------------------------------------
    pixels = device_batches(sizes, device, lambda k: random_pixels(sizes, sizes.batch_size, k))
    tf32 = " (TF32)" if device.type == "cuda" else ""  # the engine turns TF32 on for CUDA
    course = f"captioner d={sizes.d_model}×{sizes.n_layer} on ResNet-50 (all trained)"
    gpt2 = f"GPT-2 {sizes.gpt2[0]}×{sizes.gpt2[1]} on ResNet-50 (all trained)"
    variants = {  # key: (model, label, precision, compile, reason to skip)
        "fp32": (course_captioner, f"{course}, fp32{tf32}", "fp32", False, None),
        "bf16": (course_captioner, f"{course}, bf16 autocast", "bf16", False, bf16_reason),
        "bf16+compile": (course_captioner, f"{course}, bf16 + torch.compile", "bf16", True, compile_reason),
    }
    if args.gpt2:
        variants["gpt2 fp32"] = (gpt2_captioner, f"{gpt2}, fp32{tf32}", "fp32", False, None)
        variants["gpt2 bf16"] = (gpt2_captioner, f"{gpt2}, bf16 autocast", "bf16", False, bf16_reason)
    measured: dict[str, tuple[dict | None, str]] = {}

    def precision_row(key: str) -> None:
        build, label, precision, compile_model, reason = variants[key]

        def run():
            if reason:
                raise Skipped(reason)
            return train_through_engine(build(sizes), pixels, sizes, device, precision, sizes.steps, compile_model)

        measured[key] = attempt(f"[1] {label}", run)
        tables["precision"], raw["precision"] = [], []
        for k, (_, lab, _, _, _) in variants.items():  # the table in the variants' order
            if k not in measured:
                continue
            m, note = measured[k]
            ref = measured.get("gpt2 fp32" if k.startswith("gpt2") else "fp32", (None, ""))[0]
            r = rates(m) if m else {}
            ratio = r["images_per_s"] / rates(ref)["images_per_s"] if m and ref else None
            raw["precision"].append({"key": k, "label": lab, "measurement": m, "vs_fp32": ratio, "note": note, **r})
            tables["precision"].append({
                "comparison": lab, "sizes": f"{size_text}; {window_text}", "images/s": _rate(r.get("images_per_s")),
                "vs fp32": _ratio(ratio), "data wait": _share(r.get("wait")), "peak memory": _mib(m and m["peak_mib"]),
                "warm-up": f"{m['warmup_seconds']:.1f} s" if m else "–", "note": note})
        publish("precision")

    for key in ("fp32", "bf16"):  # the slow and fragile ones (compile, GPT-2) come after parts 2 and 3
        precision_row(key)

    with tempfile.TemporaryDirectory(prefix="bench_coco_gpu_") as tmp:
        tmp = Path(tmp)
        # 2. the data path: synthetic COCO JPEGs through the real DataLoader ---------------------
        words = word_list(sizes.vocab_words)
        print(f"[2] writing {sizes.jpegs:,} synthetic COCO JPEGs", flush=True)
        coco = write_coco_jpegs(tmp / "coco", sizes, words, workers)
        dataset = CocoCaptions(coco["folder"], coco["ann_file"], image_size=sizes.image_size, verify=False)
        pairs = CaptionPairs(dataset, CaptionVocab(SPECIALS + words), sizes.max_words, in_memory=False)
        pinned = device.type == "cuda"
        path_text = (f"{coco['files']:,} synthetic JPEGs ({coco['mean_kb']:.0f} KB mean, {sizes.jpeg_sizes[0][0]}×"
                     f"{sizes.jpeg_sizes[0][1]} and alike) → CocoCaptions → CaptionPairs → batch_loader, "
                     f"{_workers(workers)}, {'pinned' if pinned else 'unpinned'}")
        print(f"    {coco['seconds']:.1f} s; {path_text}", flush=True)
        # on the GPU, at least 4x the 2 batches each worker prefetches: the queue cannot hide a slow loader
        loader_steps = sizes.steps if args.smoke else max(sizes.steps, 8 * workers)

        def loader(steps: int):
            return batch_loader(pairs, collate_captions, sizes.batch_size, 0, steps, 1, workers, pinned)

        def data_path():
            n_alone = max(8, 6 * workers)
            alone = loader_alone(loader(n_alone), n_alone, sizes.batch_size)
            total = sizes.warmup + sizes.measured_steps(loader_steps)
            m = train_through_engine(course_captioner(sizes), loader(total), sizes, device, fast, loader_steps)
            return {**m, "loader_alone": alone}

        data, data_note = attempt(f"[2] loader alone, then training in {fast_label} from the JPEGs", data_path)
        ref = measured["bf16" if fast == "bf16" else "fp32"][0]
        r = rates(data) if data else {}
        alone = rates({**data["loader_alone"], "steps": 0, "wait_seconds": 0.0})["images_per_s"] if data else None
        vs_resident = r["images_per_s"] / rates(ref)["images_per_s"] if data and ref else None
        raw["data_path"] = [{"measurement": data, "loader_alone_images_per_s": alone, "vs_device_resident": vs_resident,
                             "note": data_note, **r}]
        tables["data_path"] = [{
            "data path": path_text,
            "sizes": f"{size_text}, {fast_label}; {sizes.measured_steps(loader_steps)} steps after {sizes.warmup}",
            "loader alone (images/s)": _rate(alone), "training (images/s)": _rate(r.get("images_per_s")),
            "vs device-resident batches": _ratio(vs_resident), "data wait": _share(r.get("wait")),
            "peak memory": _mib(data and data["peak_mib"]), "note": data_note}]
        publish("data_path")

        # 3. the feature cache --------------------------------------------------------------------
        frozen = course_captioner(sizes, freeze_encoder=True)  # its encoder: ResNet-50 and the projection to d
        encoder = frozen.encoder.to(device).eval()
        build_label = "fp16 autocast" if device.type == "cuda" else "fp32"
        folders = {"jpegs": tmp / "cache_jpegs", "in_memory": tmp / "cache_in_memory"}

        def build(source: str):
            from velm_course.vision.feature_cache import ImageList, build_feature_cache

            # cuDNN's choices for this batch size, outside the timing
            build_feature_cache(encoder, ImageList(random_pixels(sizes, sizes.cache_batch, 7)), tmp / "warm",
                                batch_size=sizes.cache_batch, encoder_name="warm-up", progress=False,
                                autocast=device.type == "cuda")
            if source == "jpegs":
                return timed_cache_build(encoder, dataset, folders["jpegs"], sizes, device, workers)
            base = random_pixels(sizes, min(512, sizes.cache_images), seed=99)  # then repeated: quick to make
            images = base.repeat(math.ceil(sizes.cache_images / len(base)), 1, 1, 1)[:sizes.cache_images]
            return timed_cache_build(encoder, ImageList(images), folders["in_memory"], sizes, device, workers)

        builds = {
            "jpegs": attempt(f"[3] build_feature_cache from the {sizes.jpegs:,} JPEGs, {_workers(workers)}, {build_label}",
                             lambda: build("jpegs")),
            "in_memory": attempt(f"[3] build_feature_cache from {sizes.cache_images:,} images in memory, {build_label}",
                                 lambda: build("in_memory")),
        }

        def cached_model(kind: str):
            from velm_course.vision.encoders import CachedFeatures
            from velm_course.vision.feature_cache import MappedFeatures

            if builds["in_memory"][0] is None:
                raise Skipped("skipped: no cache (its build failed)")
            folder = folders["in_memory"]
            features = MappedFeatures(folder) if kind == "mapped" else CachedFeatures.from_cache(folder)
            return course_captioner(sizes, freeze_encoder=True, encoder=features)

        row_numbers = torch.Generator().manual_seed(5)
        cached_batches = device_batches(sizes, device, lambda k: torch.randint(
            0, sizes.cache_images, (sizes.batch_size,), generator=row_numbers))
        trainings = {
            "pixels": ("training from pixels, frozen ResNet-50",
                       lambda: train_through_engine(frozen, pixels, sizes, device, fast, sizes.steps)),
            "mapped": ("training from the cache on disk (MappedFeatures, memory-mapped)",
                       lambda: train_through_engine(cached_model("mapped"), cached_batches, sizes, device, fast,
                                                    sizes.steps)),
            "loaded": ("training from the cache in device memory (CachedFeatures.from_cache)",
                       lambda: train_through_engine(cached_model("loaded"), cached_batches, sizes, device, fast,
                                                    sizes.steps)),
        }
        trained = {key: attempt(f"[3] {label}, {fast_label}", fn) for key, (label, fn) in trainings.items()}

    raw["feature_cache"], tables["feature_cache"] = [], []
    for key, what, n_text in (("jpegs", "feature cache from the JPEGs (build_feature_cache; workers decode)",
                               f"{sizes.jpegs:,} JPEGs"),
                              ("in_memory", "feature cache from images in memory (build_feature_cache of an ImageList)",
                               f"{sizes.cache_images:,} images")):
        m, note = builds[key]
        r = rates(m) if m else {}
        raw["feature_cache"].append({"key": key, "measurement": m, "note": note, **r})
        shape = f"; float16 shards of {m['grid_shape'][0]}×{m['grid_shape'][1]} per image, {m['megabytes']:,.0f} MB" \
            if m else ""
        tables["feature_cache"].append({
            "what": f"{what}, ResNet-50 + projection, {build_label}",
            "sizes": f"{n_text} at {sizes.image_size} px, {sizes.cache_batch} per call, {_workers(workers)}{shape}",
            "images/s": _rate(r.get("images_per_s")), "steps/s": "–", "vs from pixels": "–",
            "peak memory": _mib(m and m["peak_mib"]), "note": note})
    for key, (label, _) in trainings.items():
        m, note = trained[key]
        ref = trained["pixels"][0]
        r = rates(m) if m else {}
        ratio = r["steps_per_s"] / rates(ref)["steps_per_s"] if m and ref else None
        raw["feature_cache"].append({"key": key, "measurement": m, "vs_pixels": ratio, "note": note, **r})
        tables["feature_cache"].append({
            "what": f"{label}, {fast_label}", "sizes": f"{size_text}, d={sizes.d_model}×{sizes.n_layer}; {window_text}",
            "images/s": _rate(r.get("images_per_s")), "steps/s": _rate(r.get("steps_per_s")),
            "vs from pixels": _ratio(ratio), "peak memory": _mib(m and m["peak_mib"]), "note": note})
    publish("feature_cache")

    # 4. the recipe: GPT-2 small on cached CLIP features ------------------------------------------
    from velm_course.profiles import get_profile
    from velm_course.vision.encoders import CachedFeatures

    preset = get_profile("full", dataset="coco").run.train
    n_grid, grid_width = sizes.clip_grid
    generator = torch.Generator().manual_seed(11)
    # CLIP's features as CachedFeatures.from_cache serves a cache: (n, N, D) and (n, D), read as float32
    clip_features = CachedFeatures(torch.randn(sizes.cache_images, n_grid, grid_width, generator=generator),
                                   torch.randn(sizes.cache_images, grid_width, generator=generator))
    rows_for_recipe = torch.Generator().manual_seed(12)
    # captions of 12 to recipe_tokens - 2 tokens, padded to recipe_tokens
    recipe_sizes = replace(sizes, max_words=sizes.recipe_tokens - 2)
    recipe_batches = device_batches(recipe_sizes, device, lambda k: torch.randint(
        0, sizes.cache_images, (sizes.batch_size,), generator=rows_for_recipe))
    recipe_text = (f"GPT-2 {sizes.gpt2[0]}×{sizes.gpt2[1]} (V={sizes.gpt2_vocab:,}) on cached CLIP ViT-B/32 features "
                   f"({n_grid}×{grid_width}, in device memory)")
    recipe = {}
    for precision, label, reason in (("fp32", f"fp32{tf32}", None), ("bf16", "bf16 autocast", bf16_reason)):
        def run(precision=precision, reason=reason):
            if reason:
                raise Skipped(reason)
            model = recipe_captioner(recipe_sizes, clip_features)
            return train_through_engine(model, recipe_batches, recipe_sizes, device, precision, sizes.steps)

        recipe[precision] = (label, *attempt(f"[4] {recipe_text}, {label}", run))
    raw["recipe"], tables["recipe"] = [], []
    for precision, (label, m, note) in recipe.items():
        r = rates(m) if m else {}
        ref = recipe["fp32"][1]
        ratio = r["images_per_s"] / rates(ref)["images_per_s"] if m and ref else None
        hours = preset.steps / r["steps_per_s"] / 3600 if m else None
        same_batch = sizes.batch_size == preset.batch_size
        raw["recipe"].append({"key": precision, "measurement": m, "vs_fp32": ratio, "hours": hours, "note": note, **r})
        tables["recipe"].append({
            "what": f"{recipe_text}, {label}",
            "sizes": f"{size_text}, captions padded to {sizes.recipe_tokens} tokens; {window_text}",
            "steps/s": _rate(r.get("steps_per_s")), "images/s": _rate(r.get("images_per_s")), "vs fp32": _ratio(ratio),
            "hours for the preset's steps": (f"{hours:.2f} h for {preset.steps:,} steps"
                                             + ("" if same_batch else f" (of {sizes.batch_size}, not the preset's "
                                                f"{preset.batch_size})")) if hours is not None else "–",
            "peak memory": _mib(m and m["peak_mib"]), "note": note})
    publish("recipe")
    clip_features = None  # its device memory back before the compiled rows

    # 1, continued: compile and GPT-2 -----------------------------------------------------------
    for key in variants:
        if key not in measured:
            precision_row(key)

    # the targets, as observations -------------------------------------------------------------
    targets = []
    for key in ("bf16", "bf16+compile"):
        row = next(p for p in raw["precision"] if p["key"] == key)
        ratio = row["vs_fp32"]
        targets.append({"target": f"{variants[key][1].split(', ', 1)[1]} ≥ {TARGET_BF16:g}× fp32{tf32}",
                        "measured": _ratio(ratio) if ratio is not None else "–",
                        "observation": ("met" if ratio >= TARGET_BF16 else "not met") if ratio is not None
                        else f"not measured ({row['note'] or 'no fp32 reference'})"})
    wait = raw["data_path"][0].get("wait")
    targets.append({"target": f"data waiting < {TARGET_WAIT:.0%} of step time (JPEGs, {_workers(workers)}, {fast_label})",
                    "measured": _share(wait) if wait is not None else "–",
                    "observation": ("met" if wait < TARGET_WAIT else "not met") if wait is not None
                    else f"not measured ({data_note})"})
    raw["targets"] = tables["targets"] = targets
    publish("targets")

    for table in COLUMNS:
        print(f"\n**{table}**\n\n{markdown(COLUMNS[table], tables[table])}")
    print()
    for t in targets:
        print(f"target: {t['target']}: {t['measured']}, {t['observation']}")
    seconds = time.perf_counter() - started
    print(f"\n{seconds:.0f} s in all; " + (f"recorded in {recorded[-1]}" if recorded else "not recorded"))
    return {"tables": {t: {"columns": COLUMNS[t], "rows": tables[t]} for t in COLUMNS}, "raw": raw,
            "recorded": recorded[-1] if recorded else None, "seconds": seconds, "sizes": sizes}


if __name__ == "__main__":
    main()
