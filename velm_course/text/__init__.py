"""The language track: n-grams, an HMM, tokenizers, and neural language models.

Every neural LM here has the same interface, ``forward(idx, targets=None) -> (logits, loss)``.
"""

from .bert import BertConfig, BertMLM, mask_tokens, mlm_batches
from .bpe import BPETokenizer
from .chars import char_vocab, decode_chars, encode_chars, random_windows, window_batches
from .curves import CurveConfig, train_curve
from .gpt import GPT, GPTConfig
from .hmm import HMM, ice_cream_hmm, viterbi
from .mlp_lm import MLPLM, MLPLMConfig
from .ngram import NGramConfig, NGramLM, tokenize_sentences
from .preprocessing import porter_stem, remove_stop_words, word_tokenize
from .rnn import RNNLM, RNNLMConfig, hidden_for_parameters, rnnlm_parameters, sequence_bits
from .scoreboard import WordNGramScorer, char_ngram, char_ngram_bits, window_bits
from .word_vectors import nearest_neighbours, word_vectors
from .wordpiece import WordPieceTokenizer, train_wordpiece

__all__ = [
    "BertConfig", "BertMLM", "mask_tokens", "mlm_batches", "BPETokenizer", "char_vocab", "decode_chars",
    "CurveConfig", "train_curve", "WordNGramScorer", "char_ngram", "char_ngram_bits", "window_bits",
    "hidden_for_parameters", "rnnlm_parameters",
    "encode_chars", "random_windows", "window_batches", "GPT", "GPTConfig", "HMM", "ice_cream_hmm", "viterbi",
    "MLPLM", "MLPLMConfig", "NGramConfig", "NGramLM", "tokenize_sentences", "porter_stem",
    "remove_stop_words", "word_tokenize", "RNNLM", "RNNLMConfig", "sequence_bits",
    "nearest_neighbours", "word_vectors", "WordPieceTokenizer", "train_wordpiece",
]
