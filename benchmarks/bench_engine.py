"""The training engine against a plain loop, and its precision and data path on a GPU.

    python benchmarks/bench_engine.py                     # CPU: engine vs plain loop
    python benchmarks/bench_engine.py --device cuda       # GPU: also fp32 vs bf16, data waiting

1. The captioner's training step through ``velm_course.engine.fit`` against the loop the
   course used before the engine (forward, backward, clip, AdamW step, ``loss.item()`` every
   step), same model, same batches, at the profile's sizes. Each timed call trains ``--steps``
   steps from a fresh model; the two variants alternate (A, B, A, B, ...) and the median is
   kept, so machine noise hits both alike. Target: the engine is not slower.
2. (GPU) images per second of the same training through the engine in fp32 (TF32 on) and in
   bf16 autocast, reading the shapes data through the real DataLoader path (workers, pinned
   memory, uint8 transfer), and the share of step time the host spent waiting for a batch
   (the engine logs it as ``data_wait``). Targets: bf16 >= 2x fp32; data waiting < 10 %.

Prints Markdown rows and records them for benchmarks/RESULTS.md (``_record.py``).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace

import torch
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py

from velm_course.data.captions import caption_targets
from velm_course.data.loader import tensor_batches
from velm_course.engine import fit
from velm_course.engine.trainer import make_optimizer
from velm_course.multimodal import Captioner, CaptionerConfig
from velm_course.pipeline import captioner_loss
from velm_course.profiles import get_profile


def synthetic_batches(n: int, image_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    tokens = torch.randint(4, 64, (n, 20), generator=g)
    tokens[:, 0], tokens[:, -1] = 1, 2
    idx, targets = caption_targets(tokens)
    return {"images": images, "idx": idx, "targets": targets}


def make_model(profile, device) -> Captioner:
    torch.manual_seed(0)
    m = profile.run.model
    cfg = CaptionerConfig(vocab_size=64, d_model=m.d_model, n_layer=m.n_layer, n_head=m.n_head, max_len=20,
                          image_size=profile.image_size)
    return Captioner(cfg).to(device, memory_format=torch.channels_last)


def engine_vs_plain(profile, device, steps: int, repeats: int) -> tuple[float, float]:
    train = replace(profile.run.train, steps=steps, device=str(device), precision="fp32", log_every=steps,
                    checkpoint_every=0, warmup=1)
    data = synthetic_batches(4 * train.batch_size, profile.image_size)

    def engine():
        fit(make_model(profile, device), captioner_loss, tensor_batches(data, train.batch_size, 0, steps), train,
            progress=False)

    def plain():
        model = make_model(profile, device)
        opt = make_optimizer(model, train)
        batches = tensor_batches(data, train.batch_size, 0, steps)(0)
        model.train()
        for _ in range(steps):
            b = {k: v.to(device) for k, v in next(batches).items()}
            images = b["images"].float().div_(255).contiguous(memory_format=torch.channels_last)
            _, loss = model(images, b["idx"], b["targets"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            opt.step()
            loss.item()  # the old loop read the loss back every step (twice, in fact)

    t = time_interleaved({"engine": engine, "plain": plain}, repeats, device, warmup=1)
    return t["engine"] / steps, t["plain"] / steps


def in_memory_vs_decoding(profile, batches: int = 60) -> tuple[float, float]:
    """Seconds per training batch of the shapes data: images decoded once into RAM vs decoded
    from PNG at every step (no workers, as in the ci profile)."""
    import time

    from velm_course.data.captions import CaptionVocab
    from velm_course.data.loader import CaptionPairs, batch_loader, collate_captions
    from velm_course.data.registry import open_caption_data

    cfg = profile.run
    data = open_caption_data(cfg.data, seed=cfg.train.seed, progress=True)
    vocab = CaptionVocab.build(c for caps in data.train.captions_by_id().values() for c in caps)
    out = []
    for in_memory in (True, False):
        pairs = CaptionPairs(data.train, vocab, max_words=18, in_memory=in_memory)
        loader = batch_loader(pairs, collate_captions, cfg.train.batch_size, 0, batches)
        t0 = time.perf_counter()
        for _ in loader(0):
            pass
        out.append((time.perf_counter() - t0) / batches)
    return out[0], out[1]


def precision_and_data(profile, device, steps: int, precisions=("fp32", "bf16")) -> list[tuple[str, float, float]]:
    """(precision, images/s, data-wait share) through the real data path of the captioning job."""
    from velm_course.data.captions import CaptionVocab
    from velm_course.data.loader import CaptionPairs, batch_loader, collate_captions
    from velm_course.data.registry import open_caption_data

    cfg = profile.run
    data = open_caption_data(cfg.data, seed=cfg.train.seed, progress=True)
    refs = [c for caps in data.train.captions_by_id().values() for c in caps]
    vocab = CaptionVocab.build(refs)
    pairs = CaptionPairs(data.train, vocab, max_words=18, in_memory=False)  # decode per step: the real cost
    out = []
    for precision in precisions:
        train = replace(cfg.train, steps=steps, precision=precision, device=str(device), log_every=steps // 2,
                        checkpoint_every=0)
        model = Captioner(CaptionerConfig(vocab_size=len(vocab), d_model=cfg.model.d_model, n_layer=cfg.model.n_layer,
                                          n_head=cfg.model.n_head, max_len=20, image_size=cfg.data.image_size))
        model = model.to(memory_format=torch.channels_last)
        batches = batch_loader(pairs, collate_captions, train.batch_size, 0, steps, 1, cfg.data.num_workers,
                               device.type == "cuda")
        def per_image(model, batch):  # the same loss, counted in images so the engine logs images/s
            loss_sum, _ = captioner_loss(model, batch)
            return loss_sum, torch.tensor(len(batch["images"]))

        with tempfile.TemporaryDirectory() as d:
            history = fit(model, per_image, batches, train, run_dir=d, progress=False, unit="images")
        last = history[-1]  # the second half of the run: caches warm, workers running
        images_per_s = last["images_per_s"]
        out.append((precision, images_per_s, last["data_wait"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", default=None, help="sizes from this profile (default: ci on CPU, full on GPU)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed call")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = get_profile(args.profile or ("full" if device.type == "cuda" else "ci"))
    m = profile.run.model
    sizes = (f"{profile.name}: batch {profile.run.train.batch_size}, {profile.image_size} px, d={m.d_model}, "
             f"{m.n_layer} blocks; {args.steps} steps per call, median of {args.repeats}")

    engine, plain = engine_vs_plain(profile, device, args.steps, args.repeats)
    report("engine", "engine_vs_plain", ["sizes", "engine (ms/step)", "plain loop (ms/step)", "plain / engine"],
           [{"sizes": sizes, "engine (ms/step)": f"{engine * 1e3:.1f}", "plain loop (ms/step)": f"{plain * 1e3:.1f}",
             "plain / engine": f"{plain / engine:.2f}×"}], device)
    memory, decode = in_memory_vs_decoding(profile)
    print()
    report("engine", "in_memory", ["data path (shapes, batch of 32)", "in memory (ms/batch)",
                                   "decoded per step (ms/batch)", "share of an engine step saved"],
           [{"data path (shapes, batch of 32)": f"{profile.image_size} px PNGs, no workers",
             "in memory (ms/batch)": f"{memory * 1e3:.2f}", "decoded per step (ms/batch)": f"{decode * 1e3:.2f}",
             "share of an engine step saved": f"{(decode - memory) / engine:.0%}"}], device)
    if device.type == "cuda":
        rows = precision_and_data(profile, device, steps=200)
        fp32 = rows[0][1]
        print()
        report("engine", "precision", ["precision", "images/s", "vs fp32", "data wait"],
               [{"precision": precision, "images/s": f"{ips:,.0f}", "vs fp32": f"{ips / fp32:.2f}×",
                 "data wait": f"{wait:.1%}"} for precision, ips, wait in rows], device)
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

if __name__ == "__main__":
    main()
