"""velm_course: the tested package behind the VELM course notebooks.

The tree follows the course's tracks:

    text/        n-grams, an HMM, tokenizers, RNN and Transformer language models
    vision/      convolution, CNNs and ResNets, the ViT, preprocessing, image encoders
    multimodal/  models that read images and write text (the captioner)
    nn/          the shared Transformer parts: attention, the block, the token loss
    engine/      the run config, the one training loop, checkpoints, precision, DDP
    eval/        caption metrics and scoring a captioner
    data/        Shakespeare, the shapes data, COCO, and the path to batches

The most used names are re-exported here, so notebooks can write ``from velm_course import X``.
"""

from .data import (
    CaptionVocab,
    CocoCaptions,
    DatasetFormatError,
    DatasetNotFoundError,
    ShapesConfig,
    coco_split,
    ensure_shapes,
    fetch_coco,
    load_karpathy_split,
    load_shakespeare,
    normalize_caption,
    oracle_caption,
    parse_objects,
    shakespeare_splits,
    shapes_split,
)
from .decoding import sample_next
from .engine import RunConfig, TrainConfig, fit
from .env import environment_report
from .eval import (
    CiderD,
    bleu,
    caption_images,
    cider_d,
    evaluate_captions,
    ptb_tokenize,
    rouge_l,
    score_captions,
    score_split,
    tokenize_caption,
)
from .multimodal import Captioner, CaptionerConfig
from .nn import IGNORE_INDEX, MLP, Block, BlockConfig, KVCache, MultiHeadAttention, attention
from .pipeline import train_and_evaluate
from .profiles import Profile, data_dir, get_profile
from .text import (
    GPT,
    HMM,
    MLPLM,
    RNNLM,
    BertConfig,
    BertMLM,
    BPETokenizer,
    GPTConfig,
    MLPLMConfig,
    NGramConfig,
    NGramLM,
    RNNLMConfig,
    WordPieceTokenizer,
    char_vocab,
    decode_chars,
    encode_chars,
    mask_tokens,
    porter_stem,
    word_tokenize,
    word_vectors,
)
from .vision import (
    ENCODER_NAMES,
    ResNet,
    ResNetConfig,
    SmallCNN,
    SmallCNNConfig,
    ViT,
    ViTConfig,
    build_image_encoder,
    compute_mean_std,
    eval_transforms,
    train_transforms,
)

__version__ = "0.2.0"

__all__ = [
    "CaptionVocab", "CocoCaptions", "DatasetFormatError", "DatasetNotFoundError", "ShapesConfig",
    "coco_split", "ensure_shapes", "fetch_coco", "load_karpathy_split", "load_shakespeare",
    "normalize_caption", "oracle_caption", "parse_objects", "shakespeare_splits", "shapes_split",
    "sample_next", "RunConfig", "TrainConfig", "fit", "environment_report", "bleu", "caption_images",
    "cider_d", "rouge_l", "score_captions", "score_split", "tokenize_caption", "Captioner",
    "CaptionerConfig", "IGNORE_INDEX", "MLP", "Block", "BlockConfig", "KVCache", "MultiHeadAttention",
    "attention", "train_and_evaluate", "Profile", "data_dir", "get_profile", "GPT", "HMM", "MLPLM",
    "RNNLM", "BertConfig", "BertMLM", "BPETokenizer", "GPTConfig", "MLPLMConfig", "NGramConfig",
    "NGramLM", "RNNLMConfig", "WordPieceTokenizer", "char_vocab", "decode_chars", "encode_chars",
    "mask_tokens", "porter_stem", "word_tokenize", "word_vectors", "ENCODER_NAMES", "ResNet",
    "ResNetConfig", "SmallCNN", "SmallCNNConfig", "ViT", "ViTConfig", "build_image_encoder",
    "compute_mean_std", "eval_transforms", "train_transforms",
]
__all__ += ["CiderD", "evaluate_captions", "ptb_tokenize"]
