"""Datasets: the bundled Shakespeare corpus, the generated shapes data, and a COCO loader."""

from .coco import (
    COCO_URLS,
    CocoCaptions,
    DatasetFormatError,
    DatasetNotFoundError,
    coco_split,
    fetch_coco,
    load_karpathy_split,
    shapes_split,
)
from .corpus import corpus_stats, load_shakespeare, shakespeare_splits, split_works
from .shapes import (
    ShapesConfig,
    captions_for,
    ensure_shapes,
    generate_shapes,
    oracle_caption,
    parse_objects,
    questions_for,
    render_scene,
    sample_scene,
)

__all__ = [
    "COCO_URLS", "CocoCaptions", "DatasetFormatError", "DatasetNotFoundError", "coco_split",
    "fetch_coco", "load_karpathy_split", "shapes_split",
    "corpus_stats", "load_shakespeare", "shakespeare_splits", "split_works",
    "ShapesConfig", "captions_for", "ensure_shapes", "generate_shapes", "oracle_caption",
    "parse_objects", "questions_for", "render_scene", "sample_scene",
]
