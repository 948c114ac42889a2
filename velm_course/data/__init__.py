"""Datasets: the bundled Shakespeare corpus, the generated shapes data, COCO, and the path
from any of them to training batches."""

from .captions import BOS, EOS, PAD, UNK, CaptionVocab, caption_targets, normalize_caption
from .coco import (
    COCO_URLS,
    CocoCaptions,
    DatasetFormatError,
    DatasetNotFoundError,
    coco_split,
    fetch_coco,
    load_karpathy_split,
)
from .corpus import corpus_stats, load_shakespeare, shakespeare_splits, split_works
from .loader import (
    CaptionPairs,
    ResumableBatchSampler,
    batch_loader,
    collate_captions,
    tensor_batches,
)
from .registry import DATASETS, CaptionData, open_caption_data
from .shapes import (
    ShapesConfig,
    captions_for,
    content_accuracy,
    ensure_shapes,
    generate_shapes,
    heldout_pairs,
    oracle_caption,
    oracle_captions,
    parse_objects,
    questions_for,
    read_scenes,
    render_scene,
    sample_scene,
    shapes_split,
    size_question,
)

__all__ = [
    "BOS", "EOS", "PAD", "UNK", "CaptionVocab", "caption_targets", "normalize_caption",
    "COCO_URLS", "CocoCaptions", "DatasetFormatError", "DatasetNotFoundError", "coco_split",
    "fetch_coco", "load_karpathy_split", "corpus_stats", "load_shakespeare", "shakespeare_splits",
    "split_works", "CaptionPairs", "ResumableBatchSampler", "batch_loader", "collate_captions",
    "tensor_batches", "DATASETS", "CaptionData", "open_caption_data", "ShapesConfig",
    "captions_for", "content_accuracy", "ensure_shapes", "generate_shapes", "oracle_caption",
    "oracle_captions", "parse_objects", "questions_for", "read_scenes", "render_scene", "size_question",
    "sample_scene", "shapes_split", "heldout_pairs",
]
