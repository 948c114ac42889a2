"""Captioner training speed, as ratios against a reference run side by side.

    python benchmarks/bench_captioner.py [--device cuda] [--steps 30]

Two comparisons, each run interleaved (A, B, A, B, ...) so that machine noise hits both:
1. the captioner's training step with channels_last images and weights (what the captioning job does)
   against the default contiguous layout;
2. our MultiHeadAttention (F.scaled_dot_product_attention) against torch.nn.MultiheadAttention
   given the same weights, forward + backward on a decoder-sized input.
Prints a Markdown table and records it for benchmarks/RESULTS.md (``_record.py``), with peak memory on a GPU.
"""

from __future__ import annotations

import argparse

import torch
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py
from torch import nn

from velm_course.multimodal import Captioner, CaptionerConfig
from velm_course.nn import MultiHeadAttention
from velm_course.profiles import get_profile


def captioner_step(memory_format: torch.memory_format, profile, device: torch.device):
    torch.manual_seed(0)
    m = profile.run.model
    cfg = CaptionerConfig(vocab_size=64, d_model=m.d_model, n_layer=m.n_layer, n_head=m.n_head,
                          image_size=profile.image_size)
    batch_size = profile.run.train.batch_size
    model = Captioner(cfg).to(device, memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(batch_size, 3, profile.image_size, profile.image_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    tokens = torch.randint(4, 64, (batch_size, 18), device=device)

    def step():
        _, loss = model(images, tokens[:, :-1], tokens[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def attention_pair(d_model: int, n_head: int, batch: int, T: int, S: int, device: torch.device):
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, n_head).to(device)
    ref = nn.MultiheadAttention(d_model, n_head, batch_first=True).to(device)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.kv_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.kv_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(batch, T, d_model, device=device, requires_grad=True)
    memory = torch.randn(batch, S, d_model, device=device)
    torch.testing.assert_close(ours(x, memory=memory), ref(x, memory, memory, need_weights=False)[0],
                               rtol=1e-4, atol=1e-5)

    def run_ours():
        ours(x, memory=memory).sum().backward()

    def run_ref():
        ref(x, memory, memory, need_weights=False)[0].sum().backward()

    return run_ours, run_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", default=None, help="sizes from this profile (default: ci on CPU, full on GPU)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    profile = get_profile(args.profile or ("full" if device.type == "cuda" else "ci"))

    rows = []
    steps = {
        "channels_last": captioner_step(torch.channels_last, profile, device),
        "contiguous": captioner_step(torch.contiguous_format, profile, device),
    }
    t = time_interleaved(steps, args.repeats, device)
    rows.append(("captioner train step, channels_last vs contiguous", t["channels_last"], t["contiguous"]))

    m, batch_size = profile.run.model, profile.run.train.batch_size
    ours, ref = attention_pair(m.d_model, m.n_head, batch_size, 20, (profile.image_size // 8) ** 2, device)
    t = time_interleaved({"ours": ours, "ref": ref}, args.repeats * 5, device)
    rows.append(("cross-attention fwd+bwd, ours vs nn.MultiheadAttention", t["ours"], t["ref"]))

    print(f"profile {profile.name} sizes (batch {batch_size}, {profile.image_size}px, d={m.d_model})")
    sizes = f"{profile.name}: batch {batch_size}, {profile.image_size} px, d={m.d_model}, {m.n_layer} blocks"
    report("captioner", "speed", ["sizes", "comparison", "ours (ms)", "reference (ms)", "speed-up"],
           [{"sizes": sizes, "comparison": name, "ours (ms)": f"{a * 1e3:.2f}", "reference (ms)": f"{b * 1e3:.2f}",
             "speed-up": f"{b / a:.2f}×"} for name, a, b in rows], device)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")

if __name__ == "__main__":
    main()
