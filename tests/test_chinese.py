"""Chinese segmentation and the unigram subword model: maximum matching by hand and against a
brute-force longest-match check, jieba on its own documented example, and SentencePiece's unigram
encoding against an exhaustive search over every segmentation into its pieces."""

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.text.chinese import EXAMPLE_SENTENCES, max_match, segment, train_unigram

CHINESE = list(EXAMPLE_SENTENCES)


def test_max_match_by_hand():
    words = {"研究", "研究生", "生命", "起源"}
    assert max_match("研究生命起源", words) == ["研究生", "命", "起源"]  # forwards: the classic wrong cut
    assert max_match("研究生命起源", words, backward=True) == ["研究", "生命", "起源"]
    assert max_match("", words) == []
    assert max_match("xyz", set()) == ["x", "y", "z"]  # nothing known: one character per word


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet="abcd", max_size=12),
       dictionary=st.sets(st.text(alphabet="abcd", min_size=2, max_size=4), max_size=8),
       backward=st.booleans())
def test_max_match_takes_the_longest_word_every_time(text, dictionary, backward):
    pieces = max_match(text, dictionary, backward=backward)
    assert "".join(pieces) == text
    # brute force: at every cut, no longer dictionary word starts (forwards) or ends (backwards) there
    pos = 0 if not backward else len(text)
    for piece in pieces if not backward else reversed(pieces):
        if backward:
            longer = [w for w in dictionary if len(w) > len(piece) and text[:pos].endswith(w)]
            pos -= len(piece)
        else:
            longer = [w for w in dictionary if len(w) > len(piece) and text.startswith(w, pos)]
            pos += len(piece)
        assert not longer
        assert len(piece) == 1 or piece in dictionary


def test_jieba_segmentation():
    assert segment("我来到北京清华大学") == ["我", "来到", "北京", "清华大学"]  # jieba's own README example
    assert segment("研究生命起源") == ["研究", "生命", "起源"]  # the reading maximum matching misses forwards
    for sentence in CHINESE:
        assert "".join(segment(sentence)) == sentence


@pytest.fixture(scope="module")
def english_unigram():
    from velm_course.data.corpus import shakespeare_splits

    return train_unigram(shakespeare_splits()["train"][:100_000].splitlines(), vocab_size=300)


def best_segmentation(word: str, scores: dict[str, float]) -> tuple[float, tuple[str, ...]]:
    """The highest-scoring cut of ``word`` into known pieces, by trying every cut."""

    @cache
    def best(i: int) -> tuple[float, tuple[str, ...]]:
        if i == len(word):
            return 0.0, ()
        options = []
        for j in range(i + 1, len(word) + 1):
            if word[i:j] in scores:
                rest = best(j)
                options.append((scores[word[i:j]] + rest[0], (word[i:j], *rest[1])))
        return max(options) if options else (float("-inf"), ())

    return best(0)


def test_unigram_encoding_is_the_most_probable_segmentation(english_unigram):
    sp = english_unigram
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
              if not (sp.is_control(i) or sp.is_unknown(i))}
    for word in ["lord", "kingdom", "unkindest", "Shakespeare", "thou", "wherefore", "sweetest"]:
        pieces = sp.encode(word, out_type=str)
        total, brute = best_segmentation("▁" + word, scores)  # a word starts with the space symbol
        assert sum(scores[p] for p in pieces) == pytest.approx(total, abs=1e-4), (word, pieces, brute)


def test_unigram_round_trips_and_is_repeatable(english_unigram):
    from velm_course.data.corpus import shakespeare_splits

    train = shakespeare_splits()["train"][:100_000]
    held_out = shakespeare_splits()["val"][:5_000].splitlines()
    known = [line for line in held_out if set(line) <= set(train)]
    assert len(known) > 0.9 * len(held_out)
    for line in known:
        assert english_unigram.decode(english_unigram.encode(line)) == line
    # a character the training text never had becomes the unknown piece (no byte fallback here)
    unseen = [line for line in held_out if not set(line) <= set(train)]
    assert all(english_unigram.unk_id() in english_unigram.encode(line) for line in unseen)
    again = train_unigram(train.splitlines(), vocab_size=300)
    assert again.serialized_model_proto() == english_unigram.serialized_model_proto()
    chinese = train_unigram(CHINESE * 20, vocab_size=80)
    for sentence in CHINESE:
        assert chinese.decode(chinese.encode(sentence)) == sentence  # lossless: no normalisation
    with pytest.raises(ValueError):
        train_unigram(["", "  "], vocab_size=10)
