"""Trigram interpolated Kneser-Ney on Shakespeare: velm_course.ngram vs nltk.lm.

    python benchmarks/bench_ngram.py [--nltk-budget 60]

Both models see the same tokens: the training split of the bundled corpus, lower-cased,
split into words and punctuation, cut into sentences at . ! ?, words seen once mapped to
<unk> (min_count=2). nltk is given exactly the n-grams our model counts: for every
predicted token, the trigram that ends in it and its bigram and unigram suffixes, with
<s> <s> on the left of each sentence and one </s> on the right. Discount 0.75 for both.

nltk.lm recomputes continuation counts by scanning its count tables on every query, so
scoring the whole held-out set would take hours. We score held-out sentences with nltk
until a time budget runs out, report its perplexity on exactly those sentences next to
ours, and extrapolate its scoring time per token to the whole held-out set.

The definitions differ in one place: nltk's unigram level is the plain continuation
frequency N1+(. w) / N1+(. .), ours discounts it and recurses down to 1/V. The two coincide
when every vocabulary word has a continuation count, which holds here (rare words become
<unk>, and <unk> follows plenty of words), so the perplexities agree to rounding.
tests/test_ngram.py pins both definitions against a reference implementation.
"""

from __future__ import annotations

import argparse
import math
import time

from _record import report  # benchmarks/_record.py

from velm_course.data.corpus import shakespeare_splits
from velm_course.text.ngram import BOS, EOS, UNK, NGramConfig, NGramLM, tokenize_sentences

ORDER = 3


def nltk_ngrams(sentences: list[list[str]], vocab: set[str]):
    """Per sentence: every event trigram and its suffixes, words outside vocab as <unk>."""
    for s in sentences:
        p = [BOS] * (ORDER - 1) + [w if w in vocab else UNK for w in s] + [EOS]
        yield [tuple(p[i - m + 1: i + 1]) for i in range(ORDER - 1, len(p))
               for m in range(1, ORDER + 1)]


COLUMNS = ["train tokens", "held-out tokens", "ours fit / score (s)", "nltk fit / score (s)", "speed-up fit",
           "speed-up fit+score", "perplexity ours / nltk (same tokens)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nltk-budget", type=float, default=60.0,
                        help="seconds of nltk scoring before extrapolating (default 60)")
    parser.add_argument("--held-out", type=int, default=2000,
                        help="held-out sentences (from the val split) to score (default 2000)")
    args = parser.parse_args()

    splits = shakespeare_splits()
    train, held_out = tokenize_sentences(splits["train"]), tokenize_sentences(splits["val"])[: args.held_out]
    n_train = sum(len(s) + 1 for s in train)  # predicted tokens, </s> included
    n_held = sum(len(s) + 1 for s in held_out)
    print(f"train: {len(train)} sentences, {n_train} predicted tokens; "
          f"held-out: {len(held_out)} sentences, {n_held} tokens")

    # --- ours ---
    # The first fit (the one compared) is cold; two more show the warm time.
    fit_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        lm = NGramLM(NGramConfig(order=ORDER, smoothing="kneser_ney", discount=0.75, min_count=2))
        lm.fit(train)
        fit_times.append(time.perf_counter() - t0)
    ours_fit = fit_times[0]
    t0 = time.perf_counter()
    ours_ppl = lm.perplexity(held_out)
    ours_score = time.perf_counter() - t0
    print(f"ours: vocab {len(lm.vocab)}, fit {ours_fit:.2f} s (warm: {min(fit_times[1:]):.2f} s), "
          f"score {ours_score:.3f} s, "
          f"perplexity {ours_ppl:.2f}")

    # --- nltk ---
    from nltk.lm import KneserNeyInterpolated, Vocabulary

    vocab = set(lm.vocab)  # same min_count cut-off; nltk needs <s> in it (else <s> -> <unk>)
    t0 = time.perf_counter()
    # nltk adds its own unk label, so <unk> is left out of the list it is given.
    nltk_lm = KneserNeyInterpolated(
        ORDER, discount=0.75,
        vocabulary=Vocabulary([w for w in lm.vocab if w != UNK] + [BOS], unk_label=UNK))
    nltk_lm.fit(nltk_ngrams(train, vocab))  # the generator is consumed (and timed) here
    nltk_fit = time.perf_counter() - t0
    print(f"nltk: fit {nltk_fit:.2f} s (n-gram generation included)")

    t0 = time.perf_counter()
    logs, done = [], []
    for s, grams in zip(held_out, nltk_ngrams(held_out, vocab), strict=True):
        trigrams = grams[ORDER - 1:: ORDER]  # the full-order n-gram of each event
        logs += [math.log(nltk_lm.score(g[-1], g[:-1])) for g in trigrams]
        done.append(s)
        if time.perf_counter() - t0 > args.nltk_budget:
            break
    nltk_subset_time = time.perf_counter() - t0
    nltk_ppl = math.exp(-sum(logs) / len(logs))
    nltk_score = nltk_subset_time / len(logs) * n_held  # extrapolated per token
    ours_subset_ppl = lm.perplexity(done)
    print(f"nltk: scored {len(done)} sentences ({len(logs)} tokens) in {nltk_subset_time:.1f} s, "
          f"extrapolated to {n_held} tokens: {nltk_score:.0f} s")
    print(f"perplexity on those {len(logs)} tokens: ours {ours_subset_ppl:.6f}, nltk {nltk_ppl:.6f} "
          f"(relative difference {abs(ours_subset_ppl / nltk_ppl - 1):.2e})")

    fit_ratio = nltk_fit / ours_fit
    score_ratio = nltk_score / ours_score
    total_ratio = (nltk_fit + nltk_score) / (ours_fit + ours_score)
    print(f"speed-up: fit {fit_ratio:.0f}x, score {score_ratio:.0f}x, fit+score {total_ratio:.0f}x")

    print()
    report("ngram", "kneser_ney", COLUMNS, [{
        "train tokens": f"{n_train:,}", "held-out tokens": f"{n_held:,}",
        "ours fit / score (s)": f"{ours_fit:.2f} / {ours_score:.3f}",
        "nltk fit / score (s)": f"{nltk_fit:.1f} / {nltk_score:.0f} (extrapolated from {len(logs)} tokens)",
        "speed-up fit": f"{fit_ratio:.0f}×", "speed-up fit+score": f"{total_ratio:.0f}×",
        "perplexity ours / nltk (same tokens)": f"{ours_subset_ppl:.6f} / {nltk_ppl:.6f}"}], "cpu")

if __name__ == "__main__":
    main()
