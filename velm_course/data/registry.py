"""Datasets by name: what the captioning job needs from any captions dataset.

``open_caption_data(cfg)`` turns a ``DataConfig`` into the three splits (each a
``CocoCaptions``: items are an image and its reference captions) plus what only some datasets
can offer. The shapes data knows what every image shows, so it provides its scenes, content
scores (``velm_course.eval.scene``: does the caption name the right objects, sizes, count and
relations?) and an oracle row; with ``n_compositional > 0`` it also provides a fourth split
of held-out colour-shape pairs. COCO provides none of these. The pipeline asks the dataset,
and never imports a dataset's internals.

Add a dataset by writing a function ``(cfg, seed, progress) -> CaptionData`` and listing it
in ``DATASETS``.

>>> sorted(DATASETS)
['coco', 'coco2017', 'shapes']
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .coco import CocoCaptions, check_disjoint, coco_split


@dataclass
class CaptionData:
    name: str  # the registry name
    train: CocoCaptions
    val: CocoCaptions
    test: CocoCaptions
    # images of colour-shape pairs never seen in training (shapes with n_compositional > 0)
    compositional: CocoCaptions | None = None
    # content scores of generated captions, by split: {"scene_f1": ..., "content_accuracy": ...}
    content_scores: dict[str, Callable[[dict[int, str]], dict[str, float]]] = field(default_factory=dict)
    # extra rows scored like the model's captions, e.g. {"oracle": {image_id: caption}}
    reference_rows: dict[str, dict[str, dict[int, str]]] = field(default_factory=dict)
    # what each image shows, by split: {split: {image_id: [object dicts]}}; empty for COCO
    scenes: dict[str, dict[int, list[dict]]] = field(default_factory=dict)
    # (split, vocab, max_words, progress) -> {image_id: its captions' token ids (K, max_words + 2)} from a
    # cache that a second launch reads instead of tokenising again (COCO); None: tokenise here
    caption_tokens: Callable | None = None

    def split(self, name: str) -> CocoCaptions:
        """The split ``name``: train, val, test or compositional."""
        if name == "compositional":
            if self.compositional is None:
                raise ValueError(f"the {self.name!r} data has no compositional split; the shapes "
                                 "data makes one with data.n_compositional > 0")
            return self.compositional
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, val, test or compositional")
        return getattr(self, name)


def _shapes(cfg, seed: int, progress: bool) -> CaptionData:
    from ..eval.scene import scene_scores
    from .shapes import ShapesConfig, ensure_shapes, oracle_captions, read_scenes, shapes_split

    shapes_cfg = ShapesConfig(image_size=cfg.image_size, n_train=cfg.n_train, n_val=cfg.n_val,
                              n_test=cfg.n_test, n_compositional=cfg.n_compositional, seed=seed)
    root = Path(cfg.root) if cfg.root else ensure_shapes(shapes_cfg, progress=progress)
    names = ("train", "val", "test") + (("compositional",) if cfg.n_compositional > 0 else ())
    splits = {s: shapes_split(root, s, image_size=cfg.image_size) for s in names}
    scenes = {s: read_scenes(root, s) for s in names}
    scored = [s for s in names if s != "train"]  # every row is reported on these
    return CaptionData(
        "shapes", **splits,
        content_scores={s: functools.partial(scene_scores, scenes=scenes[s]) for s in scored},
        reference_rows={s: {"oracle": oracle_captions(scenes[s])} for s in scored},
        scenes=scenes,
    )


def _coco(cfg, seed: int, progress: bool, year: int = 2014) -> CaptionData:
    from ..profiles import data_dir

    root = Path(cfg.root) if cfg.root else data_dir() / "coco"
    splits = {s: coco_split(root, s, image_size=cfg.image_size, year=year) for s in ("train", "val", "test")}
    # Karpathy's splits are disjoint; a damaged or hand-edited split file might not be, and a
    # test image seen in training would make the test scores worthless
    check_disjoint({name: split.image_ids for name, split in splits.items()})
    return CaptionData("coco" if year == 2014 else f"coco{year}", **splits,
                       caption_tokens=functools.partial(_cached_caption_tokens, root))


def _cached_caption_tokens(root: Path, split: str, vocab, max_words: int, progress: bool = False) -> dict:
    """COCO's captions tokenised once with Hugging Face ``datasets`` (``data.hf_captions``) and
    read back from the cache by later launches: 616k captions take seconds to tokenise."""
    import datasets
    import torch

    from .hf_captions import tokenized_captions

    bars_were_on = not datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        # the local dataset_coco.json, which the images' split came from (coco_split has read it):
        # the hub's copy could differ from it, and the tokens must be those of these references
        rows = tokenized_captions(root, vocab, split, max_len=max_words, offline=True, verbose=False)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    tokens: dict[int, list] = {}
    for image_id, ids in zip(rows["cocoid"], rows.with_format("numpy")["input_ids"], strict=True):
        tokens.setdefault(int(image_id), []).append(ids)
    return {image_id: torch.as_tensor(np.stack(ids)) for image_id, ids in tokens.items()}


# COCO 2017: Karpathy's split over the 2017 image folders (the same images)
DATASETS: dict[str, Callable] = {"shapes": _shapes, "coco": _coco,
                                 "coco2017": functools.partial(_coco, year=2017)}


def open_caption_data(cfg, seed: int = 0, progress: bool = False) -> CaptionData:
    """The dataset ``cfg.dataset`` names, its splits at ``cfg.image_size``."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}: choose from {sorted(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, seed, progress)
