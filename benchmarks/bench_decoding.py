"""Greedy decoding with a KV cache against re-running the whole prefix each step, as ratios.

    python benchmarks/bench_decoding.py [--device cuda] [--repeats 10]

For the course's captioner and for the GPT-2 captioner (``velm_course.multimodal.hf_gpt2``), at
the ``ci`` profile's model sizes, greedy captions are written twice through
``velm_course.decoding.generate`` by the same model (same weights): once feeding only the newest
word to the model's cache, once feeding the whole caption so far at every step with no cache.
The outputs are checked equal before timing. Timed: decoding only (the images are encoded
once, outside the timer), interleaved repeats, median (``_timing.py``).

The weights are random, so <eos> is ruled out here as <pad> and <bos> are: every caption then
runs the full ``max_len - 1`` words, as the longest caption of a batch does, and both variants
do the same number of steps. Prints a Markdown table and records it for benchmarks/RESULTS.md (``_record.py``).
"""

from __future__ import annotations

import argparse

import torch
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py

from velm_course.decoding import ban_tokens, generate
from velm_course.multimodal import Captioner, CaptionerConfig, GPT2Captioner, GPT2CaptionerConfig
from velm_course.profiles import get_profile

VOCAB = 64  # about the shapes data's caption vocabulary
MAX_LEN = 24  # tokens, <bos> and <eos> included: 23 words written


def decoders(model, image):
    """Greedy decoding of ``image`` with the cache and without, as two functions."""
    B = image[0].shape[0]
    banned = (*model.banned_tokens, model.eos_id)  # no early stop: every caption runs full length

    def cached():
        cache = model.new_cache()
        step = lambda new: ban_tokens(model.decode(image, new, cache)[:, -1], banned)  # noqa: E731
        return generate(step, B, model.bos_id, model.eos_id, model.pad_id, MAX_LEN - 1, device=image[0].device)[0]

    def uncached():
        fed = [torch.zeros(B, 0, dtype=torch.long, device=image[0].device)]

        def step(new):
            fed[0] = torch.cat([fed[0], new], dim=1)  # (B, t): the whole caption so far, every step
            return ban_tokens(model.decode(image, fed[0])[:, -1], banned)

        return generate(step, B, model.bos_id, model.eos_id, model.pad_id, MAX_LEN - 1, device=image[0].device)[0]

    return cached, uncached


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", default="ci", help="model sizes from this profile")
    parser.add_argument("--batch-sizes", default="1,32", help="captions decoded at once, comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profile = get_profile(args.profile)
    m, size = profile.run.model, profile.image_size

    torch.manual_seed(0)
    models = {
        "course captioner": Captioner(CaptionerConfig(vocab_size=VOCAB, d_model=m.d_model, n_layer=m.n_layer,
                                                      n_head=m.n_head, max_len=MAX_LEN, dropout=0.0,
                                                      image_size=size)),
        "GPT-2 captioner (HF)": GPT2Captioner(GPT2CaptionerConfig(vocab_size=VOCAB, n_embd=m.d_model,
                                                                   n_layer=m.n_layer, n_head=m.n_head,
                                                                   max_len=MAX_LEN, dropout=0.0, image_size=size)),
    }
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        images = torch.rand(batch_size, 3, size, size, device=device)
        for name, model in models.items():
            model.to(device).eval()
            image = model.encode(images)
            cached, uncached = decoders(model, image)
            a, b = cached(), uncached()
            assert torch.equal(a, b), f"{name}: cached and uncached decoding disagree"
            assert a.shape == (batch_size, MAX_LEN - 1)
            t = time_interleaved({"cached": cached, "uncached": uncached}, args.repeats, device)
            rows.append((name, batch_size, t["cached"], t["uncached"]))

    sizes = (f"{profile.name}: d={m.d_model}, {m.n_layer} layers, {m.n_head} heads, {size} px, vocabulary {VOCAB}, "
             f"{MAX_LEN - 1} words per caption")
    report("decoding", "kv_cache", ["sizes", "decoder", "captions at once", "cached (ms)", "uncached (ms)", "speed-up"],
           [{"sizes": sizes, "decoder": name, "captions at once": batch_size, "cached (ms)": f"{a * 1e3:.1f}",
             "uncached (ms)": f"{b * 1e3:.1f}", "speed-up": f"{b / a:.2f}×"} for name, batch_size, a, b in rows],
           device)

if __name__ == "__main__":
    main()
