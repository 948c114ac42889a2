"""The language scoreboard: every model's bits equal -log2 of the probability of the string,
computed here a second, plain way, and every model's probabilities sum to at most 1 (over lines or
over texts of one length)."""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from velm_course.text.bpe import BPETokenizer
from velm_course.text.gpt import GPT, GPTConfig
from velm_course.text.ngram import EOS, UNK
from velm_course.text.scoreboard import (
    WordNGramScorer,
    bpe_lines,
    bpe_ngram_bits,
    case_of,
    char_ngram,
    char_ngram_bits,
    check_text,
    gap_neighbours,
    split_line,
    text_lines,
    token_ngram,
    window_bits,
)

TRAIN = (
    "KING. Now, good my lord, what say you?\n"
    "  The king is come; the lord is gone.\n"
    "\n"
    "LORD. I say, good king, the night is cold.\n"
    "the night,  the night is long\n"
    "[Exit.]\n"
) * 3 + "Once: a rare word, quoth he.\n"
# unknown words ("Banquo", "sleep"), an unknown character (é), a tab, a blank line, capitals
HELD_OUT = "BANQUO. The night is gone, good lord.\n\tsleep, my king; the café is cold\n\n[Exeunt.]\n"


def random_text(rng: random.Random, alphabet: str, n_lines: int) -> str:
    return "".join("".join(rng.choice(alphabet) for _ in range(rng.randrange(12))) + "\n"
                   for _ in range(n_lines))


# --- character n-grams ---------------------------------------------------------------------


def plain_char_bits(lm, text: str) -> float:
    """-log2 P(text), one character at a time with ``prob``: the line so far is the context."""
    bits = 0.0
    for line in text_lines(text):
        for i, ch in enumerate(line):
            if ch in lm.word2id:
                bits -= math.log2(lm.prob(ch, list(line[:i])))
            else:
                bits -= math.log2(lm.prob(UNK, list(line[:i])))
                bits += 8 * len(ch.encode("utf-8"))
        bits -= math.log2(lm.prob(EOS, list(line)))
    return bits


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_char_ngram_bits_equal_a_character_by_character_sum(order):
    lm = char_ngram(TRAIN, order)
    assert char_ngram_bits(lm, HELD_OUT) == pytest.approx(plain_char_bits(lm, HELD_OUT), rel=1e-12)
    text = random_text(random.Random(order), "abc é\t", 20)  # mostly unknown characters
    assert char_ngram_bits(lm, text) == pytest.approx(plain_char_bits(lm, text), rel=1e-12)


@pytest.mark.parametrize("order", [1, 3, 6])
def test_char_ngram_next_character_distribution_sums_to_one(order):
    lm = char_ngram(TRAIN, order)
    for context in ["", "KING", "the ni", "zzz", "the café"]:
        p = lm.distribution(list(context))  # known characters, </s> (the line break), <unk>
        assert len(p) == len(set(TRAIN) - {"\n"}) + 2
        assert p.min() > 0
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_char_ngram_probabilities_of_all_short_lines_sum_to_at_most_one():
    # Lines over {a, b} up to 9 characters, each as its own text. The model was trained on
    # short lines of a and b, so they hold nearly all its probability: the sum is close to,
    # and never above, 1 (the rest: longer lines and lines with other characters).
    lm = char_ngram("ab\nba\na\nb\nab\n", order=3)
    lines = ["".join(p) for n in range(10) for p in itertools.product("ab", repeat=n)]
    total = sum(2.0 ** -char_ngram_bits(lm, line + "\n") for line in lines)
    assert 0.9 < total <= 1.0 + 1e-12


# --- n-grams over BPE tokens --------------------------------------------------------------


def test_bpe_lines_decode_back_to_the_text():
    tok = BPETokenizer().train(TRAIN, 256 + 60)
    lines = bpe_lines(tok, HELD_OUT)
    assert "".join(tok.decode([int(t) for t in line]) + "\n" for line in lines) == HELD_OUT


@pytest.mark.parametrize("order", [1, 2, 4])
def test_bpe_ngram_bits_equal_a_token_by_token_sum(order):
    tok = BPETokenizer().train(TRAIN, 256 + 60)
    lm = token_ngram(bpe_lines(tok, TRAIN), order)
    expected = 0.0
    for line in bpe_lines(tok, HELD_OUT):  # "é" and "\t" give byte tokens never seen in training
        for i, t in enumerate(line):
            if t in lm.word2id:
                expected -= math.log2(lm.prob(t, line[:i]))
            else:  # <unk>, then which of the tokenizer's ids it was
                expected -= math.log2(lm.prob(UNK, line[:i])) - math.log2(tok.vocab_size)
        expected -= math.log2(lm.prob(EOS, line))
    assert bpe_ngram_bits(lm, tok, HELD_OUT) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("order", [1, 3])
def test_bpe_with_no_merges_is_the_character_model_on_ascii_text(order):
    # 0 merges: one token per byte, so on ASCII text the same counts as characters, the same bits
    text = HELD_OUT.replace("é", "e")
    ascii_train = TRAIN + "sleep, Banquo\tcafe\n"  # every held-out character seen once
    bytes_lm = token_ngram(bpe_lines(BPETokenizer(), ascii_train), order)
    chars_lm = char_ngram(ascii_train, order)
    assert bpe_ngram_bits(bytes_lm, BPETokenizer(), text) == pytest.approx(char_ngram_bits(chars_lm, text), rel=1e-12)


# --- the open-vocabulary word n-gram -------------------------------------------------------


def test_split_line_is_lossless_and_gaps_are_whitespace():
    rng = random.Random(0)
    for _ in range(300):
        line = "".join(rng.choice("ab A'B,.- \t1é") for _ in range(rng.randrange(15)))
        gaps, tokens = split_line(line)
        assert len(gaps) == len(tokens) + 1
        assert "".join(g + t for g, t in zip(gaps, tokens + [""], strict=True)) == line
        assert all(g.strip() == "" for g in gaps)
        assert all(t.strip() == t and t for t in tokens)


def test_case_of_restores_the_token():
    for token in ["the", "King", "I", "KING", "O'ER", "McBeth", "o'er", "'Tis"]:
        case = case_of(token)
        restored = {"lower": token.lower(), "upper": token.upper(),
                    "title": token.lower().capitalize()}.get(case)
        if case == "mixed":
            assert token not in (token.lower(), token.upper(), token.lower().capitalize())
        elif token[0] == "'":  # 'Tis: the first letter is the capital
            assert case == "title"
        else:
            assert restored == token


def plain_word_bits(scorer: WordNGramScorer, text: str) -> float:
    """The word scorer's code written out token by token with ``prob`` and the tables."""
    bits = 0.0
    for line in text_lines(text):
        gaps, tokens = split_line(line)
        words = [t.lower() for t in tokens]
        previous_case = "start"
        for i, (token, word) in enumerate(zip(tokens, words, strict=True)):
            bits -= math.log2(scorer.words.prob(word, words[:i]))
            if word not in scorer.words.word2id:  # spell it, letter by letter, then its end
                for j, ch in enumerate(word):
                    known = ch in scorer.speller.word2id
                    bits -= math.log2(scorer.speller.prob(ch if known else UNK, list(word[:j])))
                    bits += 0 if known else 8 * len(ch.encode("utf-8"))
                bits -= math.log2(scorer.speller.prob(EOS, list(word)))
            case = case_of(token)
            if case is not None:
                bits -= math.log2(scorer.cases[previous_case][case])
                bits += sum(c.isalpha() for c in token) if case == "mixed" else 0
                previous_case = case
        bits -= math.log2(scorer.words.prob(EOS, words))
        for gap, pair in zip(gaps, gap_neighbours(tokens), strict=True):
            table = scorer.gaps.get(pair, scorer.gaps[("*", "*")])
            if gap in table:
                bits -= math.log2(table[gap])
            else:
                bits -= math.log2(table["<esc>"])
                bits += (len(gap.encode("utf-8")) + 1) * math.log2(257)
    return bits


@pytest.mark.parametrize("order", [1, 2, 3])
def test_word_scorer_bits_equal_a_token_by_token_sum(order):
    scorer = WordNGramScorer(order=order).fit(TRAIN)
    assert scorer.bits(HELD_OUT) == pytest.approx(plain_word_bits(scorer, HELD_OUT), rel=1e-12)
    text = random_text(random.Random(order), "ab AB,\t'é", 30)
    assert scorer.bits(text) == pytest.approx(plain_word_bits(scorer, text), rel=1e-12)
    assert len(scorer.line_bits(HELD_OUT)) == HELD_OUT.count("\n")


def test_word_scorer_charges_for_what_a_word_model_usually_drops():
    scorer = WordNGramScorer().fit(TRAIN)
    base = scorer.bits("the king is cold.\n")
    assert scorer.bits("The King is cold.\n") > base  # capitals
    assert scorer.bits("the  king is cold.\n") > base  # an unusual gap
    assert scorer.bits("the kingdom is cold.\n") > base + 5  # an unknown word is spelled
    # a text's bits are the sum of its lines' bits, and of the parts of the code
    assert scorer.bits(HELD_OUT) == pytest.approx(sum(scorer.line_bits(HELD_OUT)))
    parts = {name: bits.sum() for name, bits in scorer.line_parts("the king is cold.\n").items()}
    assert parts["spelling"] == 0 and parts["capitals"] > 0 and sum(parts.values()) == pytest.approx(base)
    assert scorer.line_parts("the kingdom is cold.\n")["spelling"].sum() > 5  # "kingdom", letter by letter
    assert scorer.line_parts("the king is cold.\n")["capitals"].sum() == pytest.approx(
        -math.log2(scorer.cases["start"]["lower"]) - 3 * math.log2(scorer.cases["lower"]["lower"]))


def test_word_scorer_probabilities_of_all_short_lines_sum_to_at_most_one():
    # Every line over {a, A, space, comma} up to 5 characters. Some of the model's mass goes
    # to strings it describes twice (an empty gap between two words) or never meets here, so
    # the sum stays below 1; it must never exceed it.
    scorer = WordNGramScorer(order=2, min_count=2).fit("a a, A\na\naa a\n, a\n" * 2 + "aA\n")
    lines = ["".join(p) for n in range(6) for p in itertools.product("aA ,", repeat=n)]
    probs = 2.0 ** -scorer.line_bits("".join(line + "\n" for line in lines))
    assert probs.min() > 0
    assert 0.2 < probs.sum() <= 1.0


# --- models with a context window ----------------------------------------------------------


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=7, n_layer=2, n_head=2, n_embd=16))
    for p in model.parameters():  # random weights everywhere, so positions and context matter
        torch.nn.init.normal_(p, std=0.3)
    return model.eval()


def direct_bits(model, data, start_id, context):
    """Each token scored alone, from the ``context`` tokens before it (the start token first)."""
    inputs = torch.cat([torch.tensor([start_id]), data[:-1]])
    bits = 0.0
    with torch.no_grad():
        for t in range(len(data)):
            window = inputs[max(0, t + 1 - context(t)):t + 1][None]  # (1, <= T)
            logits, _ = model(window)
            bits -= F.log_softmax(logits[0, -1], -1)[data[t]].item() / math.log(2)
    return bits


def test_window_bits_with_stride_one_give_every_token_its_full_context(gpt):
    data = torch.randint(0, 7, (30,), generator=torch.Generator().manual_seed(1))
    expected = direct_bits(gpt, data, 3, lambda t: 8)
    assert window_bits(gpt, data, 3, block_size=8, stride=1, batch_size=5) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("stride", [2, 3, 4, 8])
def test_window_bits_context_follows_the_stride(gpt, stride):
    # with stride s, token t (after the first block) sees the tokens back to the start of its
    # window; the last window is moved back to end exactly at N
    data = torch.randint(0, 7, (29,), generator=torch.Generator().manual_seed(2))
    N, T = len(data), 8
    starts = [0]
    while starts[-1] + T < N:
        starts.append(min(starts[-1] + stride, N - T))
    owner = {}
    for s in starts:  # the first window that reaches a position scores it
        for t in range(s, s + T):
            owner.setdefault(t, s)
    expected = direct_bits(gpt, data, 3, lambda t: t - owner[t] + 1)
    assert window_bits(gpt, data, 3, block_size=T, stride=stride, batch_size=4) == pytest.approx(expected, rel=1e-5)


def test_window_bits_short_text_is_one_forward_pass(gpt):
    data = torch.tensor([1, 5, 2, 2, 6])
    logits, _ = gpt(torch.tensor([[0, 1, 5, 2, 2]]))
    expected = F.cross_entropy(logits[0], data, reduction="sum").item() / math.log(2)
    for stride in (1, 4, 8):
        assert window_bits(gpt, data, 0, block_size=8, stride=stride) == pytest.approx(expected, rel=1e-5)


def test_window_bits_next_token_distribution_sums_to_one(gpt):
    # one token after a fixed history, every possible value: the probabilities sum to 1
    # (stride 1, so adding a token leaves the contexts of the tokens before it unchanged)
    history = torch.tensor([4, 1, 1, 0, 6, 2, 3, 5, 1, 2])
    base = window_bits(gpt, history, 0, block_size=8, stride=1)
    probs = [2.0 ** -(window_bits(gpt, torch.cat([history, torch.tensor([v])]), 0, block_size=8, stride=1) - base)
             for v in range(7)]
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_texts_must_end_with_a_line_break():
    with pytest.raises(ValueError, match="line break"):
        check_text("no end")
    with pytest.raises(ValueError, match="line break"):
        char_ngram_bits(char_ngram(TRAIN, 2), "")
    with pytest.raises(TypeError):
        text_lines(["a\n"])
    with pytest.raises(ValueError, match="stride"):
        window_bits(torch.nn.Linear(1, 1), torch.tensor([1, 2]), 0, block_size=4, stride=5)
