"""One scoreboard for every language model of the track: total bits of the raw text.

Perplexities of models with different tokens (words, characters, BPE pieces) cannot be
compared: on Shakespeare a word model makes about four times fewer predictions than a character
model on the same text. What every model can do is give a probability to the same string s, so the
scoreboard's unit is

    bits(s) = -log2 P(s),        bits per character (BPC) = bits(s) / len(s).

The rules that keep the rows honest:

- every character counts: case, spaces, line breaks, punctuation, unknown words. A word model
  must pay for spelling a word it has never seen and for the capital letters it lower-cased;
- the text is scored as if it followed a line break (the models that need a first context
  get ``"\\n"``) and must end with one, so a line-based n-gram and a character stream
  score exactly the same characters;
- each model is a proper distribution over the texts of a given length: over all lines (for
  the n-grams) or all strings of the same number of characters (for the neural models), the
  probabilities sum to at most 1. A model may waste probability on strings it never produces (a
  word model can describe "ab" followed by an empty gap and "cd", which is the string "abcd"
  again); that only costs it bits, so it can never flatter a row. No model predicts where the
  whole text ends; saying how many lines it has would cost every row the same few bits (about
  2 log2 of the count), nothing next to the hundreds of thousands scored.

Four kinds of model are scored here: a character n-gram (``char_ngram``,
``char_ngram_bits``), an open-vocabulary word n-gram (``WordNGramScorer``), any model with a
fixed context window, such as the GPT (``window_bits``, a sliding window), and a recurrent model
with its state carried along (``velm_course.text.rnn.sequence_bits``).

Shape letters: N characters (or tokens) scored, T the model's context window, W windows,
V vocabulary.

>>> lm = char_ngram("abab\\nabab\\n", order=2)
>>> round(char_ngram_bits(lm, "abab\\n") / 5, 3)  # bits per character on a line seen twice
0.643
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .ngram import NGramConfig, NGramLM

# An unknown character is written as <unk> followed by its UTF-8 bytes, each uniform over the
# 256 byte values: 8 bits a byte. The lead byte says how many bytes follow, so this code is
# prefix-free and gives probabilities that sum to at most 1.
BITS_PER_ESCAPED_BYTE = 8.0


def check_text(text: str) -> str:
    """The text to score: a non-empty string that ends with a line break.

    >>> check_text("to be\\n")
    'to be\\n'
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the text as one string, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise ValueError("the text to score must be non-empty and end with a line break "
                         "(append '\\n'): every model then scores the same characters")
    return text


def text_lines(text: str) -> list[str]:
    """The lines of ``text`` without their line breaks (each break is the end of a line).

    >>> text_lines("a b\\n\\nc\\n")
    ['a b', '', 'c']
    """
    return check_text(text)[:-1].split("\n")


def escape_bits(chars: str) -> float:
    """Bits for spelling characters the model has no entry for, byte by byte (after one
    ``<unk>`` each, which the model charges itself).

    >>> escape_bits("é")  # two UTF-8 bytes
    16.0
    """
    return BITS_PER_ESCAPED_BYTE * len(chars.encode("utf-8"))


# --- n-grams over the tokens of each line: characters, BPE pieces -----------------------


def ngram_event_bits(lm: NGramLM, sentences: Sequence[Sequence[str]]) -> np.ndarray:
    """(E,) bits of every prediction an n-gram model makes on ``sentences``: each token, then
    each sentence's ``</s>``, in order. A token outside the vocabulary pays for ``<unk>`` only;
    the caller adds the cost of saying which token it was.

    >>> lm = char_ngram("ab\\n", order=1)
    >>> ngram_event_bits(lm, [["a", "b"]]).round(3).tolist()  # a, b, </s>
    [1.885, 1.885, 1.885]
    """
    return -lm._token_logprobs(list(sentences)) / math.log(2)


def token_ngram(lines: Sequence[Sequence[str]], order: int, discount: float = 0.75) -> NGramLM:
    """An interpolated Kneser-Ney model over tokens: each line, already cut into tokens
    (strings), is a sentence, and ``</s>`` (the end of a line) stands for the line break.

    >>> lm = token_ngram([["ab", "c"], ["ab"]], order=2)
    >>> lm.vocab
    ['</s>', '<unk>', 'ab', 'c']
    """
    return NGramLM(NGramConfig(order=order, smoothing="kneser_ney", discount=discount)).fit(lines)


def token_ngram_bits(lm: NGramLM, lines: Sequence[Sequence[str]], escape) -> float:
    """Total bits of tokenized ``lines`` under ``lm`` (from ``token_ngram``), line breaks
    included. A token outside the vocabulary costs ``<unk>`` plus ``escape(token)`` bits, the
    price of saying which one it is.

    >>> lm = token_ngram([["a", "b"]], order=1)
    >>> round(token_ngram_bits(lm, [["a", "b"]], escape_bits), 3)  # a, b, </s>
    5.654
    """
    bits = ngram_event_bits(lm, lines).sum()
    bits += sum(escape(t) for line in lines for t in line if t not in lm.word2id)
    return float(bits)


def char_lines(text: str) -> list[list[str]]:
    """The lines of ``text`` as lists of characters.

    >>> char_lines("ab\\n\\n")
    [['a', 'b'], []]
    """
    return [list(line) for line in text_lines(text)]


def char_ngram(train_text: str, order: int, discount: float = 0.75) -> NGramLM:
    """A Kneser-Ney model over characters (``token_ngram`` on the characters of each line).

    >>> lm = char_ngram("ab\\nab\\n", order=2)
    >>> lm.vocab, round(lm.prob("b", ["a"]), 3)
    (['</s>', '<unk>', 'a', 'b'], 0.727)
    """
    return token_ngram(char_lines(train_text), order, discount)


def char_ngram_bits(lm: NGramLM, text: str) -> float:
    """Total bits of ``text`` under a character n-gram (from ``char_ngram``): every character,
    each line break as the line's ``</s>``; an unknown character costs ``<unk>`` plus its bytes.

    >>> lm = char_ngram("ab\\n", order=1)
    >>> round(char_ngram_bits(lm, "ab\\n"), 3)  # 3 predictions; <unk> keeps some probability
    5.654
    """
    return token_ngram_bits(lm, char_lines(text), escape_bits)


def bpe_lines(tokenizer, text: str) -> list[list[str]]:
    """The lines of ``text`` as BPE token ids (as strings, for ``token_ngram``), each line
    encoded on its own so that every line break is a line end. One cache serves all lines.

    >>> from velm_course.text.bpe import BPETokenizer
    >>> bpe_lines(BPETokenizer().train("abab", 257, pattern=None), "abab\\nb\\n")
    [['256', '256'], ['98']]
    """
    cache: dict[str, list[int]] = {}
    return [[str(i) for i in tokenizer.encode(line, cache)] for line in text_lines(text)]


def bpe_ngram_bits(lm: NGramLM, tokenizer, text: str) -> float:
    """Total bits of ``text`` under an n-gram over ``tokenizer``'s BPE tokens (fitted with
    ``token_ngram(bpe_lines(tokenizer, train_text), order)``). A token id never seen in
    training costs ``<unk>`` plus a uniform choice among the tokenizer's ids. Divide by the
    text's UTF-8 bytes for bits per byte (for plain ASCII text, bits per character).

    >>> from velm_course.text.bpe import BPETokenizer
    >>> tok = BPETokenizer().train("ab ab\\n", 257)
    >>> lm = token_ngram(bpe_lines(tok, "ab ab\\n"), order=1)
    >>> bpe_ngram_bits(lm, tok, "ab ab\\n") > 0
    True
    """
    return token_ngram_bits(lm, bpe_lines(tokenizer, text), lambda t: math.log2(tokenizer.vocab_size))


# --- an open-vocabulary word n-gram -------------------------------------------------------

# A line is cut into gaps of whitespace and tokens: words (letters with inner apostrophes,
# "o'er") and single other characters (",", "-", "1"). The cut is lossless: gaps and tokens,
# put back together, give the line again.
TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[^\sA-Za-z]")
CASES = ("lower", "title", "upper", "mixed")  # how a word was capitalised
ESCAPE = "<esc>"  # a gap table's entry for "a gap never seen here in training: spell it"
ANY = ("*", "*")  # the table of all gaps, for a pair of neighbours never seen in training


def split_line(line: str) -> tuple[list[str], list[str]]:
    """A line as gaps and tokens: ``gaps[i]`` is the whitespace before ``tokens[i]``, and the
    last gap is what follows the last token (so there is one gap more than tokens).

    >>> split_line("  O'er the hill, 2 ")
    (['  ', ' ', ' ', '', ' ', ' '], ["O'er", 'the', 'hill', ',', '2'])
    """
    gaps, tokens, end = [], [], 0
    for m in TOKEN.finditer(line):
        gaps.append(line[end:m.start()])
        tokens.append(m.group())
        end = m.end()
    gaps.append(line[end:])
    return gaps, tokens


def case_of(token: str) -> str | None:
    """How ``token``'s letters are capitalised (one of ``CASES``); None if it has no letters.
    A single capital letter ("I", "O") counts as title case.

    >>> [case_of(t) for t in ("the", "King", "I", "KING", "McBeth", ",")]
    ['lower', 'title', 'title', 'upper', 'mixed', None]
    """
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return None
    if all(c.islower() for c in letters):
        return "lower"
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return "title"
    if all(c.isupper() for c in letters):
        return "upper"
    return "mixed"


def token_class(token: str | None) -> str:
    """What a gap depends on about its neighbour: "word" for a word, the character itself
    otherwise, and "edge" for the start or end of a line (None).

    >>> [token_class(t) for t in ("Macbeth", ",", None)]
    ['word', ',', 'edge']
    """
    if token is None:
        return "edge"
    return "word" if token[0].isalpha() else token


def case_bits(token: str, case: str, table: dict[str, dict[str, float]], previous: str) -> float:
    """Bits to restore ``token``'s capitals from its lower-cased form: its case after the
    ``previous`` word's case (from ``table``), plus one bit a letter when the case is mixed.

    >>> table = {"start": {"lower": 0.5, "title": 0.25, "upper": 0.125, "mixed": 0.125}}
    >>> case_bits("McBeth", "mixed", table, "start")  # 3 bits + 6 letters
    9.0
    """
    bits = -math.log2(table[previous][case])
    if case == "mixed":
        bits += sum(c.isalpha() for c in token)
    return bits


def _add_one(counts: Counter, outcomes: Sequence[str]) -> dict[str, float]:
    """Add-one (Laplace) probabilities of ``outcomes`` from ``counts``."""
    total = sum(counts[o] for o in outcomes) + len(outcomes)
    return {o: (counts[o] + 1) / total for o in outcomes}


def gap_neighbours(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """The classes of the tokens on either side of each gap of a line (see ``split_line``).

    >>> gap_neighbours(["To", "be", ","])
    [('edge', 'word'), ('word', 'word'), ('word', ','), (',', 'edge')]
    """
    classes = ["edge"] + [token_class(t) for t in tokens] + ["edge"]
    return list(zip(classes[:-1], classes[1:], strict=True))


class WordNGramScorer:
    """A word n-gram that gives a probability to *every* string, so its bits are comparable
    with a character model's.

    Each line is coded left to right. For each token: the token itself or the end of the line
    (a Kneser-Ney n-gram over lower-cased tokens, whose ``</s>`` is the line break); for a word
    outside the n-gram's vocabulary, its spelling (a character n-gram trained on the spellings
    of rare training words); its capitalisation, given the previous word's; and the gap of
    whitespace before it, given the classes of the tokens on either side (a word and a word are
    nearly always one space apart, a word and a comma touch). Gaps come from tables of the gaps
    seen in training between such neighbours (add-one smoothing, with an escape that spells a
    new gap byte by byte); neighbours never seen together use the table of all gaps.

    >>> scorer = WordNGramScorer(order=2).fit("The cat sat.\\nthe cat ran.\\n")
    >>> round(scorer.bits("The cat sat.\\n"), 2)
    11.6
    """

    def __init__(self, order: int = 3, min_count: int = 2, speller_order: int = 4):
        self.order = order  # the word n-gram's order
        self.min_count = min_count  # rarer training words are <unk> and get spelled
        self.speller_order = speller_order  # the spelling model's order, in characters

    def fit(self, train_text: str) -> WordNGramScorer:
        lines = [split_line(line) for line in text_lines(train_text)]
        words = [[t.lower() for t in tokens] for _, tokens in lines]
        self.words = NGramLM(NGramConfig(order=self.order, smoothing="kneser_ney",
                                         min_count=self.min_count)).fit(words)
        # Unknown words at test time look like rare training words, so the speller learns
        # from the words too rare to enter the vocabulary (each spelling once).
        freq = Counter(w for line in words for w in line)
        rare = sorted(w for w, c in freq.items() if c < self.min_count) or sorted(freq)
        self.speller = NGramLM(NGramConfig(order=self.speller_order)).fit([list(w) for w in rare])
        gap_counts: dict[tuple[str, str], Counter] = {ANY: Counter()}
        case_counts = {previous: Counter() for previous in ("start", *CASES)}
        for gaps, tokens in lines:
            for gap, pair in zip(gaps, gap_neighbours(tokens), strict=True):
                gap_counts.setdefault(pair, Counter())[gap] += 1
                gap_counts[ANY][gap] += 1
            previous = "start"
            for token in tokens:
                case = case_of(token)
                if case is not None:
                    case_counts[previous][case] += 1
                    previous = case
        self.gaps = {pair: _add_one(c, sorted(c) + [ESCAPE]) for pair, c in gap_counts.items()}
        self.cases = {previous: _add_one(c, CASES) for previous, c in case_counts.items()}
        return self

    def gap_bits(self, gap: str, pair: tuple[str, str]) -> float:
        """Bits of one gap between neighbours of the classes ``pair``: its entry in their
        table, or the escape plus each byte and an end mark, each 1 of 257 symbols.

        >>> scorer = WordNGramScorer().fit("a b\\nc d\\n")
        >>> round(scorer.gap_bits(" ", ("word", "word")), 3)  # " " seen twice, then 1 escape: 3/4
        0.415
        >>> round(scorer.gap_bits("\\t", ("word", "word")), 3)  # escape 1/4, then the tab and the end mark
        18.011
        """
        table = self.gaps.get(pair, self.gaps[ANY])
        if gap in table:
            return -math.log2(table[gap])
        return -math.log2(table[ESCAPE]) + (len(gap.encode("utf-8")) + 1) * math.log2(257)

    def line_parts(self, text: str) -> dict[str, np.ndarray]:
        """(lines,) bits of each line of ``text`` for each part of the code: "words" (the word
        n-gram, line ends included), "spelling" (unknown words), "capitals" and "gaps"."""
        lines = [split_line(line) for line in text_lines(text)]
        words = [[t.lower() for t in tokens] for _, tokens in lines]
        parts = {name: np.zeros(len(lines)) for name in ("words", "spelling", "capitals", "gaps")}
        # the word n-gram: every token and each line's end, in order; summed per line
        event_bits = ngram_event_bits(self.words, words)
        parts["words"] = np.add.reduceat(event_bits, np.cumsum([0] + [len(w) + 1 for w in words[:-1]]))
        # spelling the unknown words: one speller call for all of them
        unknown = [(i, w) for i, line in enumerate(words) for w in line if w not in self.words.word2id]
        if unknown:
            spelled = [list(w) for _, w in unknown]
            ends = np.cumsum([len(w) + 1 for w in spelled])  # each spelling ends with its </s>
            spell_bits = np.add.reduceat(ngram_event_bits(self.speller, spelled), np.r_[0, ends[:-1]])
            for (i, w), bits in zip(unknown, spell_bits, strict=True):
                parts["spelling"][i] += bits + escape_bits("".join(c for c in w if c not in self.speller.word2id))
        for i, (gaps, tokens) in enumerate(lines):
            parts["gaps"][i] = sum(self.gap_bits(g, pair) for g, pair in zip(gaps, gap_neighbours(tokens), strict=True))
            previous = "start"
            for token in tokens:
                case = case_of(token)
                if case is not None:
                    parts["capitals"][i] += case_bits(token, case, self.cases, previous)
                    previous = case
        return parts

    def line_bits(self, text: str) -> np.ndarray:
        """(lines,) bits of each line of ``text``, its line break included."""
        return sum(self.line_parts(text).values())

    def bits(self, text: str) -> float:
        """Total bits of ``text`` (which must end with a line break)."""
        return float(self.line_bits(text).sum())


# --- neural models with a fixed context window --------------------------------------------


def window_bits(model, data, start_id: int, block_size: int, stride: int | None = None,
                batch_size: int = 64) -> float:
    """Total -log2 P(data) in bits for a model that reads at most ``block_size`` tokens (a
    GPT), with a sliding window: every token of ``data`` (N,) is predicted from the tokens
    before it, the first from a single ``start_id`` (for text, a line break).

    The first window scores all its positions; each later window moves ``stride`` tokens on
    (default: half the block) and scores only its last ``stride`` positions, so every token
    after the first block sees at least ``block_size - stride`` tokens of context.
    ``stride=1`` gives every token its longest context, at ``block_size`` times the cost of
    ``stride=block_size`` (non-overlapping windows, where a window's first token sees nothing).

    >>> import torch
    >>> from velm_course.text.gpt import GPT, GPTConfig
    >>> gpt = GPT(GPTConfig(block_size=8, vocab_size=5, n_layer=1, n_head=1, n_embd=8))
    >>> window_bits(gpt, torch.tensor([1, 2, 3, 0, 1]), start_id=0, block_size=8) > 0
    True
    """
    import torch
    import torch.nn.functional as F

    N, T = len(data), block_size
    stride = stride or max(T // 2, 1)
    if data.dim() != 1 or N == 0 or not 1 <= stride <= T:
        raise ValueError("need a non-empty 1-D sequence and 1 <= stride <= block_size")
    inputs = torch.cat([data.new_tensor([start_id]), data[:-1]])  # (N,): the token before each target
    T = min(T, N)
    # window starts, and the first position (within the window) that each one scores
    starts, first = [0], [0]
    while starts[-1] + T < N:
        s = min(starts[-1] + stride, N - T)  # the last window ends exactly at N
        first.append(starts[-1] + T - s)  # positions before this were scored by the previous window
        starts.append(s)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    offsets = torch.arange(T)
    total = 0.0
    with torch.no_grad():
        for b in range(0, len(starts), batch_size):
            s = torch.tensor(starts[b:b + batch_size])  # (W,)
            idx = (s[:, None] + offsets).to(device)  # (W, T) positions
            logits, _ = model(inputs.to(device)[idx])  # (W, T, V)
            logp = F.log_softmax(logits.float(), dim=-1).gather(-1, data.to(device)[idx][..., None])[..., 0]  # (W, T)
            keep = offsets.to(device)[None, :] >= torch.tensor(first[b:b + batch_size], device=device)[:, None]
            total -= logp[keep].sum().item()
    model.train(was_training)
    return total / math.log(2)


def train_flops(n_params: int, n_tokens: int) -> float:
    """Training compute by the usual estimate: 6 floating-point operations per parameter and
    training token (2 for the forward pass, 4 for the backward). It leaves out attention's
    T x T scores, about 4 T C operations per token and layer next to the 24 C^2 of a block's
    matrices (at most a sixth more when T = C, as in notebook 04), and it counts the embedding
    tables, which are looked up rather than multiplied.

    >>> train_flops(100_000, 1_000)
    600000000.0
    """
    return 6.0 * n_params * n_tokens
