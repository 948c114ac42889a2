"""Choosing the next token: one place for every generator in the course.

A language model, recurrent or Transformer, text-only or looking at an image, ends each step
with logits over the vocabulary. How a token is picked from them is independent of the model:
greedy takes the arg-max, sampling draws from softmax(logits / temperature), optionally among
the k most likely tokens only (top-k) or among the fewest tokens whose probabilities add up to
p (nucleus, top-p). ``generate`` runs that choice in a loop, one token per step, for a whole
batch; beam search (``beam_search``) keeps the ``beam_width`` best partial sequences instead
of one, scored by their summed log-probability.

Both loops see the model through a ``step`` function, so any model with a KV cache fits:
``step(new_tokens)`` gets only the tokens the model has not seen yet (the cache holds the rest)
and returns the next-token logits. A model that rules some tokens out (a captioner never writes
<pad>) masks them in its step, so that greedy, sampling and beam search all obey one rule.

Shape letters: B batch, T generated tokens, V vocabulary.

>>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0)
tensor([[1]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def generators(seed: int | Sequence[int] | None, device: torch.device | str = "cpu",
               ) -> torch.Generator | list[torch.Generator] | None:
    """What ``generate`` takes as ``generator``, from a seed: None (the global random state),
    one generator for the whole batch (an int), or one per row (a sequence of ints).

    >>> len(generators([3, 4]))
    2
    """
    if seed is None or isinstance(seed, int):
        return _generator(seed, torch.device(device))
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seed]


def ban_tokens(logits: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """Logits (..., V) with the tokens ``ids`` ruled out (-inf): never chosen, probability 0.

    >>> ban_tokens(torch.zeros(1, 3), [0, 2])
    tensor([[-inf, 0., -inf]])
    """
    if not len(ids):
        return logits
    return logits.index_fill(-1, torch.tensor(list(ids), device=logits.device), float("-inf"))


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, ban: Sequence[int] = ()) -> torch.Tensor:
    """log P(token) at each position: logits (B, T, V) and the tokens (B, T) chosen there, with
    the tokens ``ban`` ruled out first (as a decoder's step rules them out). Differentiable.

    >>> token_logprobs(torch.zeros(1, 1, 4), torch.tensor([[3]]), ban=[0, 1]).exp()  # 1 of 2 left
    tensor([[0.5000]])
    """
    logp = F.log_softmax(ban_tokens(logits, ban).float(), dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens[..., None])[..., 0]  # (B, T)


def generate(
    step: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    bos: int,
    eos: int,
    pad: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``batch_size`` sequences one token at a time: greedy (``temperature=0``, the
    default) or sampled (``sample_next``'s temperature, top-k and top-p).

    ``step(new_tokens)`` takes the newest token of every row, (B, 1), and returns the
    next-token logits (B, V); the first call gets the <bos> tokens, and the model's cache holds
    everything fed before. A row that has written <eos> is finished: it writes ``pad`` from then
    on (the model still computes its step, as the batch moves together), and the loop stops as
    soon as every row is finished, or after ``max_new_tokens``.

    ``generator`` makes sampling repeatable: one ``torch.Generator`` for the batch, or a list
    with one per row, with which each row draws from its own stream, so that a row comes out
    the same in any batch (``generators`` builds either from seeds).

    Returns the tokens (B, T) without <bos>, padded after <eos>, and each row's summed
    log-probability (B,) of the tokens it chose up to and including <eos>, under the model's
    own distribution: the softmax of ``step``'s logits at temperature 1, before any top-k or
    top-p cut. That is the score beam search ranks by (its ``length_penalty=0``), and what
    self-critical training differentiates (``velm_course.multimodal.scst``).

    >>> table = torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 0], [0, 0, 5, 0]])  # bos=1, eos=2
    >>> tokens, logp = generate(lambda new: table[new[:, -1]], 2, bos=1, eos=2, pad=0, max_new_tokens=5)
    >>> tokens.tolist()
    [[3, 2], [3, 2]]
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    if per_row and len(generator) != batch_size:
        raise ValueError(f"one generator per row: expected {batch_size}, got {len(generator)}")
    new = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)  # (B, 1)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    logp_sum = torch.zeros(batch_size, device=device)
    written = []
    for _ in range(max_new_tokens):
        logits = step(new).float()  # (B, V)
        if per_row:  # row b draws from its own stream only: the same draws in any batch
            nxt = torch.cat([sample_next(logits[b : b + 1], temperature, top_k, g, top_p)
                             for b, g in enumerate(generator)])  # (B, 1)
        else:
            nxt = sample_next(logits, temperature, top_k, generator, top_p)  # (B, 1)
        logp = F.log_softmax(logits, dim=-1).gather(1, nxt)[:, 0]  # (B,)
        # a finished row only pads, and adds nothing to its score (where, not *: a ruled-out
        # pad has log-probability -inf, and -inf * 0 is nan)
        logp_sum += torch.where(done, torch.zeros_like(logp), logp)
        nxt = torch.where(done[:, None], torch.full_like(nxt, pad), nxt)  # (B, 1)
        written.append(nxt)
        done |= nxt[:, 0] == eos
        if done.all():
            break
        new = nxt
    return torch.cat(written, dim=1), logp_sum  # (B, T), (B,)


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
