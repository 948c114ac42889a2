"""A word-level vocabulary for captions.

Captions in this course are lower-case words separated by single spaces, so a caption
tokenizer only has to split on whitespace and map words to integer ids. Four special
tokens come first so their ids never change:

    <pad> = 0   fills short captions up to a common length (ignored by the loss)
    <bos> = 1   the decoder's first input: "start writing"
    <eos> = 2   the decoder's last target: "stop writing"
    <unk> = 3   any word not seen when the vocabulary was built

>>> v = CaptionVocab.build(["a red circle", "a blue box"])
>>> v.decode(v.encode("a red box"))
'a red box'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


class CaptionVocab:
    def __init__(self, words: list[str]):
        if words[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> CaptionVocab:
        """Every word seen at least ``min_count`` times, most frequent first (ties by spelling)."""
        counts = Counter(w for c in captions for w in c.split())
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIALS + words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str) -> list[int]:
        """Word ids, without <bos>/<eos>: unknown words become <unk>."""
        return [self.stoi.get(w, UNK) for w in caption.split()]

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
