"""Choosing the next token: one place for every generator in the course.

A language model, recurrent or Transformer, text-only or looking at an image, ends each step
with logits over the vocabulary. How a token is picked from them is independent of the model:
greedy takes the arg-max, sampling draws from softmax(logits / temperature), optionally among
the k most likely tokens only (top-k) or among the fewest tokens whose probabilities add up to
p (nucleus, top-p). Beam search (``beam_search``) keeps the ``beam_width`` best partial
sequences instead of one, scored by their summed log-probability.

Shape letters: B batch, V vocabulary.

>>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0)
tensor([[1]])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Draw one token id per row of logits (B, V); returns (B, 1).

    ``temperature`` divides the logits: below 1 sharpens the distribution, above 1 flattens
    it, and 0 means greedy (always the most likely token). ``top_k`` samples only among the
    k most likely tokens; ``top_p`` only among the most likely tokens whose probabilities
    first reach p together (the most likely token is always kept).

    >>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0)
    tensor([[1]])
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None:
        probs, order = F.softmax(logits, dim=-1).sort(dim=-1, descending=True)  # (B, V) each
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop = before >= top_p  # the nucleus already holds p without this token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))  # back to vocabulary order
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def beam_search(
    step: Callable[[torch.Tensor], torch.Tensor],
    reorder: Callable[[torch.Tensor], None],
    batch_size: int,
    bos: int,
    eos: int,
    pad: int,
    beam_width: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for ``batch_size`` sequences at once, ``beam_width`` beams each.

    The model is seen through two functions, so that any generator with a KV cache fits:

    - ``step(new_tokens)`` takes the newest token of every beam, (B·K, 1), and returns the
      next-token logits (B·K, V); the first call gets the <bos> tokens. Rows are beams,
      grouped by sequence: rows b·K .. b·K + K - 1 belong to sequence b.
    - ``reorder(index)`` makes row i of the model's cached state the old row ``index[i]``
      (``KVCache.reorder``): a surviving beam may continue a different parent.

    A finished hypothesis (one that wrote <eos>) is scored by its summed log-probability
    divided by its length to the power ``length_penalty`` (0: no normalisation; 1: the mean
    log-probability per token; long captions are otherwise penalised for every extra
    word). A sequence stops when it holds ``beam_width`` finished hypotheses and no open beam
    can still beat the worst of them (early stop); at ``max_new_tokens`` the open beams join
    as unfinished hypotheses. Returns the best hypothesis per sequence, (B, T) token ids
    without <bos> and padded with ``pad`` after <eos>, and its score (B,).

    Shape letters: B sequences, K beams per sequence, V vocabulary.
    """
    if beam_width < 1 or max_new_tokens < 1:
        raise ValueError("beam_width and max_new_tokens must be >= 1")
    B, K = batch_size, beam_width
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K beams start identical: only one may extend, or they stay copies
    tokens = torch.zeros(B * K, 0, dtype=torch.long, device=device)  # (B·K, t) written so far
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    new = torch.full((B * K, 1), bos, dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logp = F.log_softmax(step(new).float(), dim=-1)  # (B·K, V)
        V = logp.shape[-1]
        total = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K·V): every continuation
        best, flat = total.topk(min(2 * K, K * V), dim=-1)  # (B, 2K): K extra in case some end
        parents, next_tokens, next_scores = [], [], []
        for b in range(B):
            kept = 0
            for score, f in zip(best[b].tolist(), flat[b].tolist(), strict=True):
                beam, token = divmod(f, V)
                if kept == K or score == float("-inf"):
                    break
                if done[b]:  # a finished sequence keeps K dead beams in place
                    parents.append(b * K + kept)
                    next_tokens.append(pad)
                    next_scores.append(float("-inf"))
                    kept += 1
                    continue
                if token == eos:
                    words = tokens[b * K + beam].tolist() + [eos]
                    finished[b].append((score / len(words) ** length_penalty, words))
                    continue
                parents.append(b * K + beam)
                next_tokens.append(token)
                next_scores.append(score)
                kept += 1
            while kept < K:  # fewer live continuations than beams (tiny vocabulary): fill with dead ones
                parents.append(b * K)
                next_tokens.append(pad)
                next_scores.append(float("-inf"))
                kept += 1
        index = torch.tensor(parents, device=device)  # (B·K,) the parent row of each new beam
        reorder(index)
        new = torch.tensor(next_tokens, device=device)[:, None]  # (B·K, 1)
        tokens = torch.cat([tokens[index], new], dim=1)  # (B·K, t + 1)
        scores = torch.tensor(next_scores, device=device).view(B, K)
        for b in range(B):
            if done[b] or len(finished[b]) < K:
                continue
            worst = sorted(s for s, _ in finished[b])[-K]
            # the best an open beam can still end with: its summed log-probability only falls, and
            # with a length penalty it is divided by at most the longest length it can reach
            best_open = scores[b].max().item()
            reach = best_open / max_new_tokens**length_penalty if best_open < 0 else best_open
            done[b] = best_open == float("-inf") or reach < worst
        if all(done):
            break
    out = []
    for b in range(B):
        hyps = list(finished[b])
        for k in range(K):  # open beams at the end count as unfinished hypotheses
            s = scores[b, k].item()
            if s != float("-inf") and not done[b]:
                words = tokens[b * K + k].tolist()
                hyps.append((s / max(1, len(words)) ** length_penalty, words))
        out.append(max(hyps, key=lambda h: h[0]))
    T = max(len(w) for _, w in out)
    result = torch.full((B, T), pad, dtype=torch.long, device=device)
    for b, (_, words) in enumerate(out):
        result[b, : len(words)] = torch.tensor(words, device=device)
    return result, torch.tensor([s for s, _ in out], device=device)
