"""Chinese word segmentation (分词) and a unigram subword model, beside BPE and WordPiece.

Chinese is written without spaces, so "which characters form a word" is the first question a
Chinese tokenizer must answer. Three answers, from the oldest to the one most models use now:

- **maximum matching** with a dictionary (``max_match``): at each position take the longest
  dictionary word; forwards or backwards. Simple, and wrong exactly where two readings overlap:
  研究生命起源 ("research the origin of life") forwards gives 研究生 / 命 / 起源 ("graduate
  student / life / origin"), backwards 研究 / 生命 / 起源;
- **jieba** (``segment``): every dictionary word that could start at each character forms a
  graph of possible cuts, and the cut with the highest product of word frequencies wins (a
  dynamic program), with an HMM for words the dictionary lacks;
- **no segmentation at all**: a subword model learned from raw text, such as SentencePiece's
  **unigram** model (``train_unigram``). It treats text as a stream of characters (a space is
  just the symbol ▁), so the same code serves English and Chinese, and frequent words emerge as
  pieces without a dictionary.

>>> max_match("研究生命起源", {"研究", "研究生", "生命", "起源"})
['研究生', '命', '起源']
>>> max_match("研究生命起源", {"研究", "研究生", "生命", "起源"}, backward=True)
['研究', '生命', '起源']
"""

from __future__ import annotations

from collections.abc import Iterable

# A few sentences of our own (about this course), for examples and tests.
EXAMPLE_SENTENCES = (
    "视觉增强的语言模型把图像和文字放在一起学习。",
    "我们先学习语言模型，再学习图像模型，最后把两种模型融合起来。",
    "图像描述模型看一张图像，然后写出一句描述。",
    "语言模型预测下一个词，图像模型提取图像特征。",
    "这门课程的每个模型都在同一个训练引擎上训练。",
)


def max_match(text: str, dictionary: Iterable[str], backward: bool = False) -> list[str]:
    """Cut ``text`` into the longest dictionary words, scanning forwards (or ``backward``).

    A character that starts (or ends) no dictionary word becomes a word of its own, so the
    pieces always join back into ``text``.

    >>> max_match("abcd", {"ab", "abc", "cd"})
    ['abc', 'd']
    """
    words = set(dictionary)
    longest = max((len(w) for w in words), default=1)
    pieces: list[str] = []
    if not backward:
        i = 0
        while i < len(text):
            # the longest candidate first, down to a single character
            n = next((n for n in range(min(longest, len(text) - i), 1, -1) if text[i : i + n] in words), 1)
            pieces.append(text[i : i + n])
            i += n
        return pieces
    j = len(text)
    while j > 0:
        n = next((n for n in range(min(longest, j), 1, -1) if text[j - n : j] in words), 1)
        pieces.append(text[j - n : j])
        j -= n
    return pieces[::-1]


def segment(text: str) -> list[str]:
    """jieba's segmentation of ``text`` (its default, "accurate" mode, with the HMM for new words).

    >>> segment("我来到北京清华大学")
    ['我', '来到', '北京', '清华大学']
    """
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces loading its dictionary otherwise
    return jieba.lcut(text)


def train_unigram(lines: Iterable[str], vocab_size: int, character_coverage: float = 1.0):
    """A SentencePiece unigram model trained in memory on ``lines``; returns its processor.

    The unigram model (Kudo, 2018) starts from a large set of candidate pieces, fits a
    probability to each by EM, and prunes the pieces whose loss would hurt the likelihood least
    until ``vocab_size`` remain. Encoding picks the segmentation with the highest product of
    piece probabilities (Viterbi), not the greedy longest match of WordPiece. Nothing is
    normalised (no NFKC, spaces kept as they are), so decoding gives back exactly the text that
    was encoded, as long as its characters were seen in training (others become the unknown
    piece). ``character_coverage`` is the share of
    characters that must be kept as pieces (1.0: all; 0.9995 is the usual choice for Chinese).
    Training reads every line in order on one thread, so the same lines give the same model.

    >>> sp = train_unigram(["low lower lowest"] * 50 + ["new newer newest"] * 50, vocab_size=20)
    >>> sp.decode(sp.encode("lower newest"))
    'lower newest'
    """
    import io

    import sentencepiece as spm

    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError("need at least one non-empty line to train on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=character_coverage, num_threads=1, minloglevel=2,
        shuffle_input_sentence=False,  # every line, in order, on one thread: the same model every run
        hard_vocab_limit=False,  # a small text may not support vocab_size pieces: keep what it does
        normalization_rule_name="identity", remove_extra_whitespaces=False,  # lossless
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())
