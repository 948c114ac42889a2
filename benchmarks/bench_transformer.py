"""GPT training speed: ours against Hugging Face's GPT-2 with the same config and weights.

    python benchmarks/bench_transformer.py [--device cuda] [--repeats 20] [--dtype bfloat16]

Both models get the same randomly initialised weights (ours converted with GPT.from_hf), and
their logits are checked equal before timing. A training step is forward, loss, backward and
an AdamW step on a (batch, block_size) batch of random tokens. The two steps are timed in
alternation (A, B, A, B, ...) after a warm-up, so machine noise hits both alike; the median
time gives tokens per second. Prints Markdown rows and records them for benchmarks/RESULTS.md (``_record.py``).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py

from velm_course.text.gpt import GPT

SIZES = {  # (n_layer, n_head, n_embd, block_size, vocab_size, batch)
    "small": (4, 4, 128, 128, 1024, 8),  # the CPU default
    "medium": (6, 6, 384, 256, 8192, 32),  # the GPU default
    "gpt2": (12, 12, 768, 1024, 50257, 8),  # GPT-2 small's shape (124M parameters)
}


def make_pair(sizes: tuple, device: torch.device):
    from transformers import GPT2Config, GPT2LMHeadModel

    n_layer, n_head, n_embd, block_size, vocab_size, _ = sizes
    torch.manual_seed(0)
    hf_cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=block_size,
                        vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(hf_cfg).to(device)
    ours = GPT.from_hf(hf).to(device)
    return ours, hf


def train_steps(ours, hf, batch: int, device: torch.device, dtype: torch.dtype):
    block_size, vocab = ours.config.block_size, ours.config.vocab_size
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, block_size + 1), generator=g).to(device)
    idx, targets = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():  # same weights, same function: check before timing
        ours.eval(), hf.eval()
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, rtol=1e-3, atol=1e-3)
    ours.train(), hf.train()
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step_ours():
        with autocast:
            _, loss = ours(idx, targets)
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_hf():
        # the same loss on the same T targets (HF's labels= would shift and drop one position)
        with autocast:
            logits = hf(idx, use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt_hf.zero_grad(set_to_none=True)
        loss.backward()
        opt_hf.step()

    return step_ours, step_hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16 runs both models under torch.autocast")
    parser.add_argument("--size", choices=sorted(SIZES), help="default: small on CPU, medium on GPU")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sizes = SIZES[args.size or ("medium" if device.type == "cuda" else "small")]
    n_layer, n_head, n_embd, block_size, vocab_size, batch = sizes
    ours, hf = make_pair(sizes, device)
    step_ours, step_hf = train_steps(ours, hf, batch, device, dtype)
    t = time_interleaved({"ours": step_ours, "hf": step_hf}, args.repeats, device)
    tokens = batch * block_size
    import transformers

    print(f"HF transformers {transformers.__version__}, attention '{hf.config._attn_implementation}'; "
          f"torch {torch.__version__}")
    report("transformer", "gpt_training", ["precision", "config (layers/heads/width/T/V)", "batch", "ours (tok/s)",
                                           "HF GPT-2 (tok/s)", "speed-up"],
           [{"precision": args.dtype, "config (layers/heads/width/T/V)":
             f"{n_layer}/{n_head}/{n_embd}/{block_size}/{vocab_size}", "batch": batch,
             "ours (tok/s)": f"{tokens / t['ours']:,.0f}", "HF GPT-2 (tok/s)": f"{tokens / t['hf']:,.0f}",
             "speed-up": f"{t['hf'] / t['ours']:.2f}×"}], device)

if __name__ == "__main__":
    main()
