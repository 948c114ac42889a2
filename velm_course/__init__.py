"""velm_course: the tested package behind the VELM course notebooks.

The public API is re-exported here, so notebooks can write ``from velm_course import X``.
Modules stay small and flat; each one teaches one idea and has its own test file.
"""

from .attention import MLP, KVCache, MultiHeadAttention
from .bpe import BPETokenizer
from .captioner import Captioner, CaptionerConfig
from .cnn import (
    ResNet,
    ResNetConfig,
    SmallCNN,
    SmallCNNConfig,
    confusion_matrix,
    object_crops,
    receptive_field,
    resnet18,
    resnet50,
    roi_features,
    train_classifier,
)
from .conv import conv1d, conv2d_loops, conv2d_unfold, convolve, cross_correlate
from .data import (
    CocoCaptions,
    DatasetFormatError,
    DatasetNotFoundError,
    ShapesConfig,
    coco_split,
    ensure_shapes,
    fetch_coco,
    load_karpathy_split,
    load_shakespeare,
    oracle_caption,
    parse_objects,
    shakespeare_splits,
    shapes_split,
)
from .encoders import ENCODER_NAMES, CNNEncoder, CNNEncoderConfig, ImageEncoder, build_image_encoder
from .env import environment_report
from .evaluate import caption_images, content_accuracy, score_split
from .hmm import HMM, ice_cream_hmm, viterbi
from .hmm import forward as hmm_forward
from .metrics import bleu, cider_d, rouge_l, score_captions, tokenize_caption
from .ngram import NGramConfig, NGramLM, tokenize_sentences
from .pipeline import train_and_evaluate
from .profiles import Profile, data_dir, get_profile
from .rnn import MLPLM, RNNLM, MLPLMConfig, RNNLMConfig, char_vocab, decode_chars, encode_chars
from .tokenization import WordPieceTokenizer, porter_stem, word_tokenize, word_vectors
from .train import CaptionTensors, TrainConfig, lr_at, train_captioner
from .transformer import GPT, BertConfig, BertMLM, GPTConfig, mask_tokens
from .transforms import compute_mean_std, eval_transforms, to_rgb, train_transforms
from .vit import ViT, ViTConfig
from .vocab import CaptionVocab

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "KVCache",
    "MultiHeadAttention",
    "BPETokenizer",
    "Captioner",
    "CaptionerConfig",
    "CocoCaptions",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ShapesConfig",
    "coco_split",
    "ensure_shapes",
    "fetch_coco",
    "load_karpathy_split",
    "load_shakespeare",
    "oracle_caption",
    "parse_objects",
    "shakespeare_splits",
    "shapes_split",
    "ResNet",
    "ResNetConfig",
    "SmallCNN",
    "SmallCNNConfig",
    "receptive_field",
    "resnet18",
    "resnet50",
    "confusion_matrix",
    "object_crops",
    "roi_features",
    "train_classifier",
    "conv1d",
    "conv2d_loops",
    "conv2d_unfold",
    "convolve",
    "cross_correlate",
    "ENCODER_NAMES",
    "CNNEncoder",
    "CNNEncoderConfig",
    "ImageEncoder",
    "build_image_encoder",
    "environment_report",
    "caption_images",
    "content_accuracy",
    "score_split",
    "HMM",
    "hmm_forward",
    "ice_cream_hmm",
    "viterbi",
    "bleu",
    "cider_d",
    "rouge_l",
    "score_captions",
    "tokenize_caption",
    "NGramConfig",
    "NGramLM",
    "tokenize_sentences",
    "train_and_evaluate",
    "Profile",
    "data_dir",
    "get_profile",
    "RNNLM",
    "MLPLM",
    "MLPLMConfig",
    "RNNLMConfig",
    "char_vocab",
    "decode_chars",
    "encode_chars",
    "WordPieceTokenizer",
    "porter_stem",
    "word_tokenize",
    "word_vectors",
    "CaptionTensors",
    "TrainConfig",
    "lr_at",
    "train_captioner",
    "GPT",
    "BertConfig",
    "BertMLM",
    "GPTConfig",
    "mask_tokens",
    "compute_mean_std",
    "eval_transforms",
    "to_rgb",
    "train_transforms",
    "ViT",
    "ViTConfig",
    "CaptionVocab",
]
