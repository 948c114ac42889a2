"""Record learning curves of a character GPT and an LSTM at equal compute, next to the character
n-grams, all in bits per character of the whole validation text (Macbeth and Much Ado About Nothing).

    python benchmarks/lm_curves.py --preset cpu --threads 1     # about 70 minutes on one CPU core
    python benchmarks/lm_curves.py --preset gpu --device cuda   # a 6-layer x 384 GPT on a GPU

Writes ``benchmarks/lm_curves.csv``, one row per evaluation: ``model``, ``parameters``, ``step``, ``tokens``,
``train_flops`` (6 x parameters x tokens), ``train_seconds`` (training only, evaluation
excluded), ``device``, ``val_bpc``; the character Kneser-Ney models of orders 1-8 and the
open-vocabulary word trigram are rows whose ``model`` starts with ``char-kn-`` and ``word-kn-``
(step 0, their fitting time as ``train_seconds``, no parameter count). Notebook 04 plots the file against compute
next to its live ``ci`` run. The LSTM gets the GPT's training compute (the same 6 N D), not its
steps. Runs checkpoint under ``runs/lm_curves/`` and resume when started again; rows already in
the CSV for another preset or device are kept.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from _record import write_csv  # benchmarks/_record.py

from velm_course.data.corpus import shakespeare_splits
from velm_course.text.chars import char_vocab, encode_chars
from velm_course.text.curves import CurveConfig, train_curve
from velm_course.text.gpt import GPT, GPTConfig
from velm_course.text.rnn import RNNLM, RNNLMConfig
from velm_course.text.scoreboard import WordNGramScorer, char_ngram, char_ngram_bits

FIELDS = ("model", "parameters", "step", "tokens", "train_flops", "train_seconds", "device", "val_bpc")
PRESETS = {
    # (GPT settings, LSTM settings, shared training settings)
    # about an hour on one core: models small enough to see each training character ~3 times
    "cpu": (dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0),
            dict(cell="lstm", n_embd=64, n_hidden=384, n_layer=1, dropout=0.0),
            dict(steps=4000, batch_size=32, block_size=128, lr=2e-3, warmup=100, evals=8)),
    "gpu": (dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2),
            dict(cell="lstm", n_embd=128, n_hidden=1024, n_layer=2, dropout=0.2),
            dict(steps=5000, batch_size=64, block_size=256, lr=1e-3, warmup=200, evals=10)),
}


def ngram_rows(train: str, val: str) -> list[dict]:
    rows = []
    for order in range(1, 9):
        t0 = time.perf_counter()
        lm = char_ngram(train, order)
        seconds = time.perf_counter() - t0
        rows.append({"model": f"char-kn-{order}", "parameters": "", "step": 0, "tokens": len(train), "train_flops": "",
                     "train_seconds": round(seconds, 2), "device": "cpu",
                     "val_bpc": round(char_ngram_bits(lm, val) / len(val), 4)})
        print(rows[-1], flush=True)
    t0 = time.perf_counter()
    scorer = WordNGramScorer(order=3).fit(train)
    rows.append({"model": "word-kn-3-open-vocabulary", "parameters": "", "step": 0, "tokens": len(train), "train_flops": "",
                 "train_seconds": round(time.perf_counter() - t0, 2), "device": "cpu",
                 "val_bpc": round(scorer.bits(val) / len(val), 4)})
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("lm_curves.csv")))
    parser.add_argument("--run-dir", default="runs/lm_curves")
    parser.add_argument("--steps", type=int, default=0, help="the GPT's steps (0: the preset's), e.g. for a smoke test")
    parser.add_argument("--skip-ngrams", action="store_true", help="keep the n-gram rows already in --out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"

    splits = shakespeare_splits()
    chars = char_vocab(splits["train"])
    train_ids, val_ids = encode_chars(splits["train"], chars), encode_chars(splits["val"], chars)
    start_id = chars.index("\n")  # every model scores the text as if it followed a line break

    out = Path(args.out)
    kept = list(csv.DictReader(out.open())) if out.exists() else []
    gpt_kw, lstm_kw, train_kw = PRESETS[args.preset]
    names = {f"gpt-{args.preset}", f"lstm-{args.preset}"}
    rows = [r for r in kept if r["model"] not in names and (args.skip_ngrams or "-kn-" not in r["model"])]
    if not args.skip_ngrams:
        rows += ngram_rows(splits["train"], splits["val"])

    write_csv(out, FIELDS, rows)
    evals, steps = train_kw["evals"], args.steps or train_kw["steps"]
    common = {k: v for k, v in train_kw.items() if k not in ("evals", "steps")}
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=len(chars), **gpt_kw))
    torch.manual_seed(0)
    lstm = RNNLM(RNNLMConfig(vocab_size=len(chars), **lstm_kw))
    # equal compute: the LSTM's steps give it the GPT's 6 N D
    n_gpt, n_lstm = (sum(p.numel() for p in m.parameters()) for m in (gpt, lstm))
    lstm_steps = round(steps * n_gpt / n_lstm)
    for name, model, n_steps in ((f"gpt-{args.preset}", gpt, steps), (f"lstm-{args.preset}", lstm, lstm_steps)):
        config = CurveConfig(steps=n_steps, eval_every=n_steps // evals, device=args.device, **common)
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, {n_steps} steps", flush=True)
        curve = train_curve(model, train_ids, val_ids, start_id, config, run_dir=Path(args.run_dir) / name, desc=name)
        for row in curve:
            rows.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()),
                         "step": row["step"], "tokens": row["tokens"],
                         "train_flops": f"{row['train_flops']:.4g}", "train_seconds": row["train_seconds"],
                         "device": device_name, "val_bpc": round(row["val_bpc"], 4)})
            print(rows[-1], flush=True)
        write_csv(out, FIELDS, rows)  # after each model, so a finished one is never lost
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
