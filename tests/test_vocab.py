import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from velm_course.data.captions import (
    BOS,
    EOS,
    PAD,
    UNK,
    CaptionVocab,
    caption_targets,
    normalize_caption,
)
from velm_course.nn.loss import IGNORE_INDEX

words = st.sampled_from(["a", "red", "blue", "circle", "box", "left", "of"])


def test_build_orders_by_frequency_then_spelling():
    v = CaptionVocab.build(["b a", "a c", "a b"])
    assert v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"]


@given(st.lists(st.lists(words, min_size=1, max_size=8), min_size=1, max_size=5))
def test_encode_decode_round_trip(captions):
    texts = [" ".join(c) for c in captions]
    v = CaptionVocab.build(texts)
    for t in texts:
        assert v.decode(v.encode(t)) == t


def test_unknown_words_and_specials():
    v = CaptionVocab.build(["a red circle"])
    assert v.encode("a green circle")[1] == UNK
    assert v.decode([BOS, v.stoi["a"], EOS, v.stoi["red"]]) == "a"  # stops at <eos>
    assert v.decode([PAD, v.stoi["red"], PAD]) == "red"


def test_encode_batch_layout_and_too_long():
    v = CaptionVocab.build(["a red circle", "a box"])
    batch = v.encode_batch(["a box", "a red circle"], max_len=3)
    assert batch.shape == (2, 5)
    assert batch[0].tolist() == [BOS, v.stoi["a"], v.stoi["box"], EOS, PAD]
    with pytest.raises(ValueError, match="more than max_len"):
        v.encode_batch(["a red circle"], max_len=2)


def test_vocabulary_must_start_with_specials():
    with pytest.raises(ValueError, match="special tokens"):
        CaptionVocab(["a", "b"])
    assert torch.equal(CaptionVocab(CaptionVocab.build(["x"]).to_list()).encode_batch(["x"], 1),
                       CaptionVocab.build(["x"]).encode_batch(["x"], 1))


@pytest.mark.parametrize("raw, clean", [
    ("A horse.", "a horse"),
    ("a horse", "a horse"),
    ("  Two  DOGS, playing!  ", "two dogs playing"),
    ("A man's T-shirt -- red.", "a man's t-shirt red"),
    ("Ｆｕｌｌ-width ｃａｆé", "full-width café"),  # NFKC folds full-width letters
    ("...", ""),
])
def test_normalize_caption(raw, clean):
    assert normalize_caption(raw) == clean


def test_punctuation_and_case_do_not_make_new_words():
    v = CaptionVocab.build(["A horse.", "a horse", "A HORSE!"])
    assert v.itos[4:] == ["a", "horse"]
    assert v.encode("A Horse.") == v.encode("a horse")


def test_min_count_sends_rare_words_to_unk():
    v = CaptionVocab.build(["a red circle", "a red box", "a blue box"], min_count=2)
    assert v.itos[4:] == ["a", "box", "red"]
    assert v.encode("a blue circle") == [v.stoi["a"], UNK, UNK]
    with pytest.raises(ValueError, match="min_count"):
        CaptionVocab.build(["x"], min_count=0)


def test_caption_targets_ignore_padding():
    tokens = torch.tensor([[BOS, 5, 6, EOS, PAD], [BOS, 5, EOS, PAD, PAD]])
    idx, targets = caption_targets(tokens)
    assert idx.tolist() == [[BOS, 5, 6, EOS], [BOS, 5, EOS, PAD]]
    assert targets.tolist() == [[5, 6, EOS, IGNORE_INDEX], [5, EOS, IGNORE_INDEX, IGNORE_INDEX]]
