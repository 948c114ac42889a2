"""Caption text: one normalisation, and a word-level vocabulary.

Annotators write "A horse." and "a horse"; a model should see one word "horse" in both.
``normalize_caption`` lower-cases, separates punctuation from words and drops it (as the
COCO evaluation's tokenizer does), and folds white space, so the vocabulary holds words only.

After normalisation a caption is lower-case words separated by single spaces, so a caption
tokenizer only has to split on whitespace and map words to integer ids. Four special tokens
come first so their ids never change:

    <pad> = 0   fills short captions up to a common length
    <bos> = 1   the decoder's first input: "start writing"
    <eos> = 2   the decoder's last target: "stop writing"
    <unk> = 3   any word not seen often enough when the vocabulary was built

Padding never reaches the loss: ``caption_targets`` labels it ``IGNORE_INDEX``.

>>> normalize_caption("  A Horse, running!  ")
'a horse running'
>>> v = CaptionVocab.build(["a red circle", "a blue box"])
>>> v.decode(v.encode("a red box"))
'a red box'
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import torch

from ..nn.loss import IGNORE_INDEX

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]

# letters and digits (with inner apostrophes or hyphens: "don't", "t-shirt") are word
# characters; everything else is punctuation or space
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


def normalize_caption(text: str) -> str:
    """Lower-case, NFKC-normalised words joined by single spaces; punctuation dropped.

    >>> normalize_caption("Two dogs' toys -- on a T-shirt.")
    'two dogs toys on a t-shirt'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_WORD.findall(text))


class CaptionVocab:
    def __init__(self, words: list[str]):
        if words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary must not list a word twice")
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> CaptionVocab:
        """Every word seen at least ``min_count`` times, most frequent first (ties by spelling).

        Captions are normalised first. Rarer words map to <unk>: a word seen once cannot be
        learned, and COCO's long tail would otherwise triple the vocabulary.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for c in captions for w in normalize_caption(c).split())
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIALS + [w for w in words if w not in SPECIALS])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str) -> list[int]:
        """Word ids of the normalised caption, without <bos>/<eos>: unknown words become <unk>."""
        return [self.stoi.get(w, UNK) for w in normalize_caption(caption).split()]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first <eos>; <pad> and <bos> are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return " ".join(words)

    def encode_batch(self, captions: list[str], max_len: int) -> torch.Tensor:
        """A (len(captions), max_len + 2) tensor: <bos> words <eos> <pad>...

        Captions longer than ``max_len`` words raise, rather than being cut silently: a cut
        caption would teach the model to stop mid-sentence.
        """
        out = torch.full((len(captions), max_len + 2), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = self.encode(caption)
            if len(ids) > max_len:
                raise ValueError(f"caption has {len(ids)} words, more than max_len={max_len}: {caption!r}")
            out[row, : len(ids) + 2] = torch.tensor([BOS, *ids, EOS])
        return out

    def to_list(self) -> list[str]:
        return list(self.itos)


def caption_targets(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: inputs = tokens without the last, targets = tokens without the first,
    with padding labelled ``IGNORE_INDEX`` so it carries no loss.

    >>> idx, tgt = caption_targets(torch.tensor([[BOS, 7, EOS, PAD]]))
    >>> idx.tolist(), tgt.tolist()
    ([[1, 7, 2]], [[7, 2, -100]])
    """
    targets = tokens[:, 1:].clone()
    targets[targets == PAD] = IGNORE_INDEX
    return tokens[:, :-1], targets


def whole_captions(idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The captions (B, T + 1) that ``caption_targets`` split into idx and targets (B, T).

    idx lacks the last token, which for a caption that fills its row is <eos>; an encoder of
    text should read every caption whole. targets is the caption without its first token, padding
    labelled ``IGNORE_INDEX``, so the caption is idx's first column then targets, PAD restored.

    >>> idx, targets = caption_targets(torch.tensor([[1, 7, 2, 0], [1, 7, 8, 2]]))
    >>> whole_captions(idx, targets).tolist()
    [[1, 7, 2, 0], [1, 7, 8, 2]]
    """
    return torch.cat([idx[:, :1], targets.masked_fill(targets == IGNORE_INDEX, PAD)], dim=1)
