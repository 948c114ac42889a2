"""Caption metrics end to end: velm_course.eval vs pycocoevalcap, on 5,000 images x 5 references.

    python benchmarks/bench_metrics.py [--images 5000] [--refs 5] [--repeats 3]

Both sides start from the same raw captions (generated, COCO-like: mixed case, final periods,
commas, possessives, hyphenated words, a few numbers and brackets) and do the whole COCO
evaluation minus METEOR and SPICE: PTB tokenization, then BLEU-1..4, ROUGE-L and CIDEr-D.
pycocoevalcap tokenizes with Stanford's Java PTBTokenizer (one JVM per call, references and
candidates separately, as COCOEvalCap does) and scores with its Python loops; ours is
``evaluate_captions(gts, res, metrics=["Bleu", "ROUGE_L", "CIDEr"])``.

The scores must be equal (checked to 1e-9, corpus and per image); the times are medians of
interleaved runs after a warm-up (see _timing.py), and a per-stage breakdown follows.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from _record import report  # benchmarks/_record.py
from _timing import time_interleaved  # benchmarks/_timing.py

from velm_course.eval.coco_eval import evaluate_captions
from velm_course.eval.metrics import bleu, cider_d, rouge_l
from velm_course.eval.ptb import ptb_tokenize

SUBJECTS = ["a man", "a woman", "two people", "a dog", "a cat", "a group of people", "a young boy", "a little girl",
            "a large elephant", "a giraffe", "a plate of food", "a city bus", "a train", "a red car", "a person",
            "an old man", "three zebras", "a brown horse", "a kitchen", "a living room", "a bathroom", "a white bird",
            "a teddy bear", "a pizza", "a skateboarder", "a surfer", "a baseball player", "a tennis player",
            "a clock tower", "a street sign", "a man's hand", "the woman's dog", "two giraffes", "a double-decker bus"]
VERBS = ["is sitting on", "is standing next to", "riding", "holding", "is eating", "looking at", "walking down",
         "is parked in front of", "sitting in", "laying on", "playing with", "flying over", "is covered with",
         "next to", "on top of", "in front of", "with", "near", "under", "carrying", "wearing"]
OBJECTS = ["a table", "the street", "a bench", "a frisbee", "a wave", "the beach", "a field of grass",
           "a snowy hill", "a wooden table", "a city street", "the water", "a laptop", "a cell phone",
           "a bowl of fruit", "a sandwich", "a couch", "a bed", "a tree", "the sidewalk", "a fence", "a building",
           "the kitchen counter", "a mirror", "a toilet", "a sink", "the ocean", "a tennis racket", "a kite",
           "an umbrella", "a pile of vegetables", "a t-shirt", "a black-and-white photo", "2 slices of pizza"]
TAILS = ["", "", "", "", " in the background", " on a sunny day", " at night", " while others watch",
         ", smiling", " near a window", " in a park", " (in the snow)", " and a dog", ", with a hat"]


def caption(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    if rng.random() < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.6:
        text += rng.choice([".", ".", ".", " .", "!"])
    if rng.random() < 0.05:
        text += " "  # COCO references often end in a space
    return text


def dataset(n_images: int, n_refs: int, seed: int = 0) -> tuple[dict, dict]:
    rng = random.Random(seed)
    gts = {100_000 + 7 * i: [caption(rng) for _ in range(n_refs)] for i in range(n_images)}
    res = {i: caption(rng) for i in gts}
    return gts, res


def pycocoevalcap_scores(gts: dict, res: dict, stages: dict | None = None) -> dict:
    """COCOEvalCap's evaluate() without METEOR and SPICE: {metric: (corpus, per image)}."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    tokenizer = PTBTokenizer()
    tok_gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in gts.items()})
    tok_res = tokenizer.tokenize({i: [{"caption": res[i]}] for i in gts})
    t1 = time.perf_counter()
    corpus, per_image = Bleu(4).compute_score(tok_gts, tok_res, verbose=0)
    t2 = time.perf_counter()
    rouge = Rouge().compute_score(tok_gts, tok_res)
    t3 = time.perf_counter()
    cider = Cider().compute_score(tok_gts, tok_res)
    t4 = time.perf_counter()
    stages.update(tokenize=t1 - t0, bleu=t2 - t1, rouge=t3 - t2, cider=t4 - t3)
    out = {f"Bleu_{k + 1}": (corpus[k], per_image[k]) for k in range(4)}
    out["ROUGE_L"], out["CIDEr"] = rouge, cider
    return out


def our_scores(gts: dict, res: dict) -> dict:
    scores, per_image = evaluate_captions(gts, res, metrics=["Bleu", "ROUGE_L", "CIDEr"], per_image=True)
    return {name: (scores[name], list(per_image[name].values())) for name in scores}


def our_stages(gts: dict, res: dict) -> dict:
    """The same work as our_scores, timed per stage (each metric on its own tables)."""
    t0 = time.perf_counter()
    ids = list(gts)
    flat = iter(ptb_tokenize([c for i in ids for c in gts[i]]))
    tok_gts = {i: [next(flat) for _ in gts[i]] for i in ids}
    tok_res = dict(zip(ids, ptb_tokenize([res[i] for i in ids]), strict=True))
    t1 = time.perf_counter()
    bleu(tok_gts, tok_res)
    t2 = time.perf_counter()
    rouge_l(tok_gts, tok_res)
    t3 = time.perf_counter()
    cider_d(tok_gts, tok_res)
    t4 = time.perf_counter()
    return dict(tokenize=t1 - t0, bleu=t2 - t1, rouge=t3 - t2, cider=t4 - t3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    gts, res = dataset(args.images, args.refs)
    n_tokens = sum(len(c.split()) for refs in gts.values() for c in refs) + sum(len(c.split()) for c in res.values())
    print(f"{len(gts):,} images x {args.refs} references, {n_tokens:,} words in all")

    ours, theirs = our_scores(gts, res), pycocoevalcap_scores(gts, res)
    for name, (corpus, per_image) in theirs.items():
        assert abs(ours[name][0] - corpus) <= 1e-9, (name, ours[name][0], corpus)
        np.testing.assert_allclose(ours[name][1], per_image, rtol=0, atol=1e-9, err_msg=name)
    print("scores equal (corpus and per image, to 1e-9):")
    print("  " + "  ".join(f"{name} {corpus:.6f}" for name, (corpus, _) in theirs.items()))

    times = time_interleaved(
        {"ours": lambda: our_scores(gts, res), "pycocoevalcap": lambda: pycocoevalcap_scores(gts, res)},
        repeats=args.repeats, device=torch.device("cpu"), warmup=1,
    )
    ratio = times["pycocoevalcap"] / times["ours"]
    print(f"end to end (tokenize + BLEU + ROUGE-L + CIDEr-D), median of {args.repeats}: speed-up {ratio:.1f}x "
          f"({'meets' if ratio >= 5 else 'MISSES'} the 5x target)")
    report("metrics", "end_to_end", ["images × refs", "scores equal (to 1e-9)", "ours (s)", "pycocoevalcap (s)",
                                     "speed-up"],
           [{"images × refs": f"{len(gts):,} × {args.refs}",
             "scores equal (to 1e-9)": ", ".join(f"{name} {corpus:.4f}" for name, (corpus, _) in theirs.items()),
             "ours (s)": f"{times['ours']:.2f}", "pycocoevalcap (s)": f"{times['pycocoevalcap']:.2f}",
             "speed-up": f"{ratio:.1f}×"}], "cpu")

    theirs_stages, ours_stages = {}, our_stages(gts, res)
    pycocoevalcap_scores(gts, res, theirs_stages)
    print("\nper stage, one run each (ours without the table BLEU and CIDEr-D share in evaluate_captions):")
    names = {"tokenize": "PTB tokenization", "bleu": "BLEU-1..4", "rouge": "ROUGE-L", "cider": "CIDEr-D"}
    report("metrics", "stages", ["stage", "ours (s)", "pycocoevalcap (s)", "speed-up"],
           [{"stage": names[stage], "ours (s)": f"{ours_stages[stage]:.3f}",
             "pycocoevalcap (s)": f"{theirs_stages[stage]:.3f}",
             "speed-up": f"{theirs_stages[stage] / ours_stages[stage]:.1f}×"} for stage in names], "cpu")

if __name__ == "__main__":
    main()
