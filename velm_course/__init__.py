"""velm_course: the tested package behind the VELM course notebooks.

The public API is re-exported here, so notebooks can write ``from velm_course import X``.
Modules stay small and flat; each one teaches one idea and has its own test file.
"""

from .attention import MLP, MultiHeadAttention
from .captioner import Captioner, CaptionerConfig
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
from .encoders import CNNEncoder, CNNEncoderConfig, build_image_encoder
from .env import environment_report
from .evaluate import caption_images, content_accuracy, score_split
from .metrics import bleu, cider_d, rouge_l, score_captions, tokenize_caption
from .pipeline import train_and_evaluate
from .profiles import Profile, data_dir, get_profile
from .train import CaptionTensors, TrainConfig, lr_at, train_captioner
from .vocab import CaptionVocab

__version__ = "0.1.0"

__all__ = [
    "MLP", "MultiHeadAttention",
    "Captioner", "CaptionerConfig",
    "CocoCaptions", "DatasetFormatError", "DatasetNotFoundError", "ShapesConfig", "coco_split",
    "ensure_shapes", "fetch_coco", "load_karpathy_split", "load_shakespeare", "oracle_caption",
    "parse_objects", "shakespeare_splits", "shapes_split",
    "CNNEncoder", "CNNEncoderConfig", "build_image_encoder",
    "environment_report",
    "caption_images", "content_accuracy", "score_split",
    "bleu", "cider_d", "rouge_l", "score_captions", "tokenize_caption",
    "train_and_evaluate",
    "Profile", "data_dir", "get_profile",
    "CaptionTensors", "TrainConfig", "lr_at", "train_captioner",
    "CaptionVocab",
]
