"""Datasets by name: what the captioning job needs from any captions dataset.

``open_caption_data(cfg)`` turns a ``DataConfig`` into the three splits (each a
``CocoCaptions``: items are an image and its reference captions) plus what only some datasets
can offer. The shapes data knows what every image shows, so it provides content scores
(does the caption name the right objects?) and an oracle row; COCO provides neither. The
pipeline asks the dataset, and never imports a dataset's internals.

Add a dataset by writing a function ``(cfg, seed, progress) -> CaptionData`` and listing it
in ``DATASETS``.

>>> sorted(DATASETS)
['coco', 'shapes']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .coco import CocoCaptions, coco_split


@dataclass
class CaptionData:
    name: str  # the registry name
    train: CocoCaptions
    val: CocoCaptions
    test: CocoCaptions
    # content scores of generated captions for a split's images: {"content_accuracy": ...}
    content_scores: dict[str, Callable[[dict[int, str]], dict[str, float]]] = field(default_factory=dict)
    # extra rows scored like the model's captions, e.g. {"oracle": {image_id: caption}}
    reference_rows: dict[str, dict[str, dict[int, str]]] = field(default_factory=dict)

    def split(self, name: str) -> CocoCaptions:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _shapes(cfg, seed: int, progress: bool) -> CaptionData:
    from .shapes import (
        ShapesConfig,
        content_accuracy,
        ensure_shapes,
        oracle_captions,
        read_scenes,
        shapes_split,
    )

    shapes_cfg = ShapesConfig(image_size=cfg.image_size, n_train=cfg.n_train, n_val=cfg.n_val,
                              n_test=cfg.n_test, seed=seed)
    root = Path(cfg.root) if cfg.root else ensure_shapes(shapes_cfg, progress=progress)
    splits = {s: shapes_split(root, s, image_size=cfg.image_size) for s in ("train", "val", "test")}
    scenes = {s: read_scenes(root, s) for s in ("val", "test")}
    return CaptionData(
        "shapes", **splits,
        content_scores={s: (lambda caps, sc=scenes[s]: {"content_accuracy": content_accuracy(caps, sc)})
                        for s in scenes},
        reference_rows={s: {"oracle": oracle_captions(scenes[s])} for s in scenes},
    )


def _coco(cfg, seed: int, progress: bool) -> CaptionData:
    from ..profiles import data_dir

    root = Path(cfg.root) if cfg.root else data_dir() / "coco"
    splits = {s: coco_split(root, s, image_size=cfg.image_size) for s in ("train", "val", "test")}
    return CaptionData("coco", **splits)


DATASETS: dict[str, Callable] = {"shapes": _shapes, "coco": _coco}


def open_caption_data(cfg, seed: int = 0, progress: bool = False) -> CaptionData:
    """The dataset ``cfg.dataset`` names, its splits at ``cfg.image_size``."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}: choose from {sorted(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, seed, progress)
