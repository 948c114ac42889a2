"""A GPT and a Kneser-Ney n-gram on BPE tokens of several vocabulary sizes, in bits per byte.

    python benchmarks/bpe_lm.py                 # about 15 minutes on 2 CPU cores
    python benchmarks/bpe_lm.py --flops 2e12    # a quick smoke run

Chapter 02's payoff, for a neural model too. The tokenizers are chapter 02's: byte-level BPE
trained on the `ci` profile's 300,000-character slice of the training plays, cut after 0, 100
and 1,000 merges (vocabularies 256, 356 and 1,256). For each, on the *whole* training plays
(4.6M characters) encoded with it:

- a GPT of 4 blocks x 128 (chapter 04's recorded size, 128-token context) trained through the
  engine for the same compute, ``--flops`` of 6 x parameters x tokens, so a bigger vocabulary
  (more parameters in the embedding and the head, more bytes per token) buys fewer steps;
- the order-4 Kneser-Ney n-gram over the same tokens (each line a sentence), the best order of
  chapter 02's table.

Both score the whole validation text (Macbeth and Much Ado About Nothing), every byte paid for,
in bits per byte: the GPT with a sliding window (``scoreboard.window_bits``, the text as one
token sequence that follows a line break), the n-gram with ``scoreboard.bpe_ngram_bits``.
Writes ``benchmarks/bpe_lm.csv`` (one row per model and vocabulary); notebook 02 reads it. The
committed file: ``OMP_NUM_THREADS=1 python benchmarks/bpe_lm.py`` on a 2-core x86-64 machine,
2026-12-02, beside another job (so its seconds are slower than an idle core's).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _record import write_csv  # benchmarks/_record.py

from velm_course.data.corpus import shakespeare_splits
from velm_course.text.bpe import BPETokenizer
from velm_course.text.curves import CurveConfig, train_curve
from velm_course.text.gpt import GPT, GPTConfig
from velm_course.text.scoreboard import bpe_lines, bpe_ngram_bits, token_ngram

FIELDS = ("model", "vocabulary", "parameters", "steps", "tokens", "train_flops", "train_seconds", "device",
          "val_bits_per_byte")
MERGES = (0, 100, 1000)  # vocabularies 256, 356 and 1,256
TOKENIZER_CHARS = 300_000  # the ci profile's bpe_train_chars: chapter 02's tokenizers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flops", type=float, default=1e13, help="training compute of each GPT, 6 N D")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).with_name("bpe_lm.csv")))
    parser.add_argument("--run-dir", default="runs/bpe_lm", help="checkpoints: an interrupted run resumes")
    args = parser.parse_args()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"

    splits = shakespeare_splits()
    train, val = splits["train"], splits["val"]
    val_bytes = len(val.encode("utf-8"))
    big = BPETokenizer().train(splits["train"][:TOKENIZER_CHARS], vocab_size=256 + max(MERGES))
    rows = []
    for n_merges in MERGES:
        tok = BPETokenizer(big.merges[:n_merges])
        cache: dict[str, list[int]] = {}
        train_ids = torch.tensor(tok.encode(train, cache))
        val_ids = torch.tensor(tok.encode(val, cache))
        newline = tok.encode("\n")[0]  # every model scores the text as if it followed a line break

        t0 = time.perf_counter()
        lm = token_ngram(bpe_lines(tok, train), order=4)
        seconds = time.perf_counter() - t0
        rows.append({"model": "kn-4", "vocabulary": tok.vocab_size, "parameters": "", "steps": 0,
                     "tokens": len(train_ids), "train_flops": "", "train_seconds": round(seconds, 1),
                     "device": "cpu", "val_bits_per_byte": round(bpe_ngram_bits(lm, tok, val) / val_bytes, 4)})
        print(rows[-1], flush=True)

        torch.manual_seed(0)
        gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=4, n_head=4, n_embd=128, block_size=128))
        n_params = sum(p.numel() for p in gpt.parameters())
        batch, block = 32, 128
        steps = round(args.flops / (6 * n_params * batch * block))
        config = CurveConfig(steps=steps, batch_size=batch, block_size=block, lr=2e-3, warmup=min(100, steps // 10),
                             eval_every=steps, device=args.device, score_start=False)
        curve = train_curve(gpt, train_ids, val_ids, newline, config,
                            run_dir=Path(args.run_dir) / f"gpt-{tok.vocab_size}", desc=f"GPT, vocabulary {tok.vocab_size}")
        last = curve[-1]
        bits = last["val_bpc"] * len(val_ids)  # train_curve reports bits per token
        rows.append({"model": "gpt-4x128", "vocabulary": tok.vocab_size, "parameters": n_params, "steps": steps,
                     "tokens": last["tokens"], "train_flops": f"{last['train_flops']:.4g}",
                     "train_seconds": round(last["train_seconds"], 1), "device": device_name,
                     "val_bits_per_byte": round(bits / val_bytes, 4)})
        print(rows[-1], flush=True)
        write_csv(Path(args.out), FIELDS, rows)  # after each vocabulary, so a finished one is never lost
    print("wrote", args.out)


if __name__ == "__main__":
    main()
