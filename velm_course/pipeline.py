"""The main job: train a captioner and its blind twin on a captions dataset, score them honestly.

``velm-course train`` and ``make run`` call :func:`train_and_evaluate`; notebook 00 calls it
too, on a very small setting. The evaluation keeps three rules: every row is scored against
the same references; every choice (the checkpoint, greedy or beam search, the fixed caption)
is made on the validation split; the test split, and the compositional split where the
dataset has one, are scored once, at the end. Everything a run produces lands in one folder:

    runs/<timestamp>/
        config.json            every setting (a RunConfig), written before training starts
        vocab.json             the caption vocabulary and the longest caption in words
        checkpoint.pt, best.pt the captioner's latest state, and the one with the lowest
                               validation loss (the one evaluated); also checkpoints/
        baseline_*.pt          the same for the blind baseline
        metrics.jsonl          training loss, learning rate, throughput, validation loss
        baseline_metrics.jsonl the same for the baseline
        metrics.json           {"test": {row: scores}, "compositional": {row: scores}, ...}
        captions_<split>.json  every row's caption of every image (COCO results format)
        loss_curve.png, samples.png

The rows: ``model`` (the captioner); ``blind`` (the same decoder without the image, trained for
the same steps or until its validation loss stops improving); ``fixed_caption``,
``nearest_neighbour`` and ``human`` (see ``velm_course.eval.captioning``); and the dataset's own
rows (the shapes data's ``oracle``). Run it again with ``resume=True`` on the same folder after
an interruption and it continues from the last checkpoint; only the step count may change.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from .data.captions import CaptionVocab, normalize_caption
from .data.loader import CaptionPairs, batch_loader, collate_captions
from .data.registry import open_caption_data
from .engine import RunConfig, fit
from .engine.checkpoint import load_checkpoint
from .engine.config import ConfigError, resume_conflicts
from .engine.trainer import RunFolderInUse, evaluate_loss, resolve_device
from .eval.captioning import (
    caption_images,
    fixed_caption,
    human_row,
    image_features,
    nearest_neighbour_captions,
    score_rows,
    score_split,
)
from .multimodal.captioner import Captioner, CaptionerConfig
from .nn.loss import IGNORE_INDEX, lm_loss
from .plots import plot_caption_grid, plot_loss_curves
from .profiles import Profile, get_profile
from .vision.encoders import as_encoder_input

IN_MEMORY_LIMIT = 2 * 2**30  # bytes of decoded uint8 images kept in RAM at most


def captioner_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy of a caption batch and the number of tokens it covers."""
    logits, _ = model(as_encoder_input(batch["images"]), batch["idx"])
    targets = batch["targets"]
    return lm_loss(logits, targets, reduction="sum"), (targets != IGNORE_INDEX).sum()


def new_run_dir(runs_dir: str | Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        path = Path(runs_dir) / (stamp + suffix)
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise RuntimeError(f"could not make a new run folder in {runs_dir}")


def _vocab(run_dir: Path, cfg: RunConfig, train_set) -> tuple[CaptionVocab, int]:
    """The run's tokenizer and its longest caption in tokens: built from the training captions
    once, then read back from ``vocab.json``.

    The course's decoder reads words (``CaptionVocab``). A GPT-2 decoder (``model.decoder``)
    reads GPT-2's BPE tokens (``GPT2CaptionTokenizer``, with the same interface) when its
    pretrained weights load, and the caption words when it falls back to random weights; its
    config and tokenizer are saved in the run folder (``gpt2/``), so the run resumes and
    reloads without the hub.
    """
    saved = _saved_vocab(run_dir)
    if saved is not None:
        return saved
    refs = [c for caps in train_set.captions_by_id().values() for c in caps]
    vocab = CaptionVocab.build(refs, min_count=cfg.data.min_word_count)
    max_words = cfg.data.max_words or max(len(normalize_caption(c).split()) for c in refs)
    record = {"words": vocab.to_list(), "max_words": max_words}
    if cfg.model.decoder == "gpt2":
        from .multimodal.hf_gpt2 import GPT2CaptionTokenizer

        loaded = _start_gpt2(cfg, vocab, max_words)
        loaded.model.config.save_pretrained(run_dir / GPT2_FOLDER)
        record["gpt2"] = {"name": cfg.model.gpt2_name, "source": loaded.source}
        if isinstance(loaded.tokenizer, GPT2CaptionTokenizer):
            loaded.tokenizer.tokenizer.save_pretrained(run_dir / GPT2_FOLDER)
            # the same captions as a word limit keeps, counted in BPE tokens
            kept = [c for c in refs if len(normalize_caption(c).split()) <= max_words]
            record.update(words=None, tokenizer="gpt2-bpe", max_words=loaded.tokenizer.max_tokens(kept))
    (run_dir / "vocab.json").write_text(json.dumps(record))
    return _saved_vocab(run_dir)


def _saved_vocab(run_dir: Path) -> tuple[CaptionVocab, int] | None:
    """(tokenizer, longest caption in tokens) of a run folder, or None before ``_vocab`` ran."""
    path = run_dir / "vocab.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    if saved.get("tokenizer") == "gpt2-bpe":
        from transformers import AutoTokenizer

        from .multimodal.hf_gpt2 import GPT2CaptionTokenizer

        return GPT2CaptionTokenizer(AutoTokenizer.from_pretrained(str(run_dir / GPT2_FOLDER))), saved["max_words"]
    return CaptionVocab(saved["words"]), saved["max_words"]


def _uint8_images(dataset, limit: int | None = None, start: int = 0) -> torch.Tensor:
    stop = len(dataset) if limit is None else min(start + limit, len(dataset))
    return torch.stack([dataset.get_uint8(i)[0] for i in range(start, stop)])  # (n, 3, H, W)


def _split_features(model, dataset, images: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """Pooled features of every image of a split: from its decoded images when they are in
    memory, else decoded a batch at a time (COCO's training split would take ~17 GB decoded)."""
    if images is not None:
        return image_features(model, images, batch_size)
    return torch.cat([image_features(model, _uint8_images(dataset, batch_size, start), batch_size)
                      for start in range(0, len(dataset), batch_size)])


def captioner_config(cfg: RunConfig, vocab_size: int, max_words: int, blind: bool = False) -> CaptionerConfig:
    """The captioner a run config describes, for a vocabulary and a longest caption."""
    m = cfg.model
    return CaptionerConfig(
        vocab_size=vocab_size, d_model=m.d_model, n_layer=m.n_layer, n_head=m.n_head, max_len=max_words + 2,
        dropout=m.dropout, image_size=cfg.data.image_size, encoder=m.encoder, pretrained=m.pretrained,
        freeze_encoder=m.freeze_encoder, fusion=m.fusion, blind=blind)


# ----------------------------------------------------------------------------------------------
# A frozen encoder's features, computed once (model.feature_cache)

class _AllSplits:
    """Every image of a run's splits as one list (train, val, test, compositional), so one
    feature cache serves them all; ``rows(split)`` are a split's row numbers in it."""

    def __init__(self, data):
        self.parts = [(name, data.split(name)) for name in ("train", "val", "test", "compositional")
                      if name != "compositional" or getattr(data, "compositional", None) is not None]
        self.starts, start = {}, 0
        for name, ds in self.parts:
            self.starts[name] = start
            start += len(ds)
        self.image_ids = [i for _, ds in self.parts for i in ds.image_ids]
        self.file_names = [f"{name}/{f}" for name, ds in self.parts for f in ds.file_names]

    def __len__(self) -> int:
        return len(self.image_ids)

    def get_uint8(self, row: int):
        for name, ds in reversed(self.parts):
            if row >= self.starts[name]:
                return ds.get_uint8(row - self.starts[name])
        raise IndexError(row)

    def rows(self, name: str) -> torch.Tensor:
        start = self.starts[name]
        return torch.arange(start, start + len(dict(self.parts)[name]))  # (n,) int64


def frozen_backbone(cfg: RunConfig) -> torch.nn.Module:
    """The frozen encoder a feature-cache run caches: the named encoder at its own width (no
    projection; the run trains one), in eval mode, without gradients."""
    from .vision.encoders import build_image_encoder

    torch.manual_seed(cfg.train.seed)  # random weights (no ImageNet ones) are the same on every launch
    backbone = build_image_encoder(cfg.model.encoder, None, cfg.data.image_size, pretrained=cfg.model.pretrained)
    return backbone.eval().requires_grad_(False)


def cached_features(cfg: RunConfig, data, run_dir: Path, progress: bool = True):
    """Run the frozen encoder once over every image of ``data`` into an on-disk cache, or finish
    or reuse the one a previous run left; returns the features as an encoder that takes row
    numbers (``MappedFeatures``), each split's row numbers, and the cache folder.

    The cache lives under ``$VELM_DATA_DIR/features/``, named by the dataset, the encoder, the
    image size and hashes of the weights and of the image list, so runs with the same frozen
    encoder share it and nothing else does. The backbone's weights are also saved in the run
    folder (``encoder.pt``): captioning new images needs the encoder itself.
    """
    from .profiles import data_dir
    from .vision.feature_cache import (
        MappedFeatures,
        build_feature_cache,
        image_list_fingerprint,
        weights_fingerprint,
    )

    backbone = frozen_backbone(cfg)
    if not (run_dir / "encoder.pt").exists():
        torch.save(backbone.state_dict(), run_dir / "encoder.pt")
    images = _AllSplits(data)
    name = cfg.model.encoder + ("" if cfg.model.pretrained else "-random")
    tag = f"{weights_fingerprint(backbone)[:8]}-{image_list_fingerprint(images, images.image_ids)[:8]}"
    folder = data_dir() / "features" / f"{data.name}-{name}-{cfg.data.image_size}px-{tag}"
    device = resolve_device(cfg.train.device)
    cache = build_feature_cache(backbone.to(device), images, folder, batch_size=cfg.eval.batch_size,
                                encoder_name=name, progress=progress, num_workers=cfg.data.num_workers,
                                autocast=device.type == "cuda")
    return MappedFeatures(cache), {split: images.rows(split) for split, _ in images.parts}, folder


def _encoder_for(cfg: RunConfig, features: torch.nn.Module | None) -> torch.nn.Module | None:
    """The captioner's encoder: the cached features (or the frozen backbone itself, to caption
    new images) followed by a trained projection to the decoder's width (GPT-2 has its own);
    None: build it from the config as usual."""
    from .vision.encoders import Projected

    if features is None or cfg.model.decoder == "gpt2":
        return features
    return Projected(features, cfg.model.d_model)


# ----------------------------------------------------------------------------------------------
# A pretrained decoder: Hugging Face's GPT-2 (model.decoder = "gpt2")

GPT2_FOLDER = "gpt2"  # in a run folder: the GPT-2's config and BPE tokenizer (no weights)


def _start_gpt2(cfg: RunConfig, vocab: CaptionVocab, max_words: int):
    """The GPT-2 a new run starts from (``load_gpt2``): ``model.gpt2_name``'s weights where they
    load, else a small GPT-2 of RANDOM weights over the caption words, sized by the model
    settings, with a warning."""
    from .multimodal.hf_gpt2 import GPT2CaptionerConfig, load_gpt2

    m = cfg.model
    size = GPT2CaptionerConfig(vocab_size=len(vocab), n_embd=m.d_model, n_layer=m.n_layer, n_head=m.n_head,
                               max_len=max_words + 2, dropout=m.dropout)
    return load_gpt2(m.gpt2_name, vocab=vocab, config=size)


def _gpt2_architecture(run_dir: Path) -> torch.nn.Module:
    """The run's GPT-2 as saved in its folder (``gpt2/config.json``), with fresh weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config.from_pretrained(str(run_dir / GPT2_FOLDER)))


def _gpt2_weights(run_dir: Path, tokenizer, prefix: str) -> torch.nn.Module:
    """The GPT-2 of a run's training (the captioner's, and the blind baseline's with ``prefix``):
    the pretrained weights again, so both start from them; or, for a random start or a training
    about to continue from its checkpoint, the saved architecture with fresh weights (seeded by
    the caller; a checkpoint then replaces them), so a resumed run needs no hub."""
    from .multimodal.hf_gpt2 import load_gpt2

    saved = json.loads((run_dir / "vocab.json").read_text())["gpt2"]
    if saved["source"] == "random" or (run_dir / f"{prefix}checkpoint.pt").exists():
        return _gpt2_architecture(run_dir)
    words = tokenizer if isinstance(tokenizer, CaptionVocab) else None  # a word-level GPT-2 folder
    return load_gpt2(saved["name"], vocab=words, allow_fallback=False).model


def gpt2_captioner(cfg: RunConfig, gpt2: torch.nn.Module, tokenizer, max_words: int, blind: bool = False,
                   encoder: torch.nn.Module | None = None, pretrained_encoder: bool | None = None):
    """A ``GPT2Captioner`` around ``gpt2`` for a run config: its sizes from GPT-2, the special
    ids from the tokenizer, the image encoder from the model settings (or ``encoder``, such as
    cached features, which GPT-2's input projection then reads)."""
    from .multimodal.hf_gpt2 import GPT2Captioner, GPT2CaptionerConfig, LoadedGPT2, gpt2_config_for

    m = cfg.model
    pretrained = m.pretrained if pretrained_encoder is None else pretrained_encoder
    base = GPT2CaptionerConfig(vocab_size=len(tokenizer), max_len=max_words + 2, image_size=cfg.data.image_size,
                               encoder=m.encoder, pretrained_encoder=pretrained and encoder is None,
                               freeze_encoder=m.freeze_encoder, blind=blind)
    return GPT2Captioner(gpt2_config_for(LoadedGPT2(gpt2, tokenizer, ""), base), gpt2, encoder)


def load_captioner(run_dir: str | Path, which: str = "best", prefix: str = "") -> tuple[Captioner, CaptionVocab, RunConfig]:
    """A trained captioner from a run folder, with its vocabulary and run config.

    ``which`` is "best" (the lowest validation loss; the last checkpoint when the run never
    validated) or "last"; ``prefix="baseline_"`` loads the blind baseline.
    """
    run_dir = Path(run_dir)
    path = run_dir / f"{prefix}{'best' if which == 'best' else 'checkpoint'}.pt"
    if which == "best" and not path.exists():
        path = run_dir / f"{prefix}checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint; train one with: velm-course train --run-dir {run_dir}")
    state = load_checkpoint(path)
    config = RunConfig.from_dict(state["config"], source=str(path))
    backbone = None
    if config.model.feature_cache and not prefix:
        # trained on cached features: the frozen backbone's weights are in encoder.pt
        backbone = frozen_backbone(replace(config, model=replace(config.model, pretrained=False)))
        backbone.load_state_dict(torch.load(run_dir / "encoder.pt", map_location="cpu", weights_only=True))
    if config.model.decoder == "gpt2":
        vocab, max_words = _saved_vocab(run_dir)
        # the encoder's ImageNet weights, if any, are in the checkpoint: do not download them again
        model = gpt2_captioner(config, _gpt2_architecture(run_dir), vocab, max_words, blind=bool(prefix), encoder=backbone,
                               pretrained_encoder=False)
    else:
        vocab = CaptionVocab(state["vocab"])
        model_cfg = captioner_config(config, len(vocab), state["max_words"], blind=bool(prefix))
        model_cfg = replace(model_cfg, pretrained=False)
        if backbone is not None:
            model = Captioner(replace(model_cfg, freeze_encoder=False), encoder=_encoder_for(config, backbone))
            model.encoder.encoder.requires_grad_(False)
        else:
            model = Captioner(model_cfg)
    if backbone is None:
        model.load_state_dict(state["model"])
    else:  # the backbone is not in the checkpoint (training read its cached features)
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        inside = "encoder." if config.model.decoder == "gpt2" else "encoder.encoder."
        if unexpected or any(not k.startswith(inside) for k in missing):
            raise RuntimeError(f"{path} does not fit its config: missing {missing}, unexpected {unexpected}")
    return model.eval(), vocab, config


def _load_selected(model: torch.nn.Module, run_dir: Path, prefix: str) -> int:
    """Load the checkpoint with the lowest validation loss into ``model``; returns its step."""
    best = run_dir / f"{prefix}best.pt"
    state = load_checkpoint(best if best.exists() else run_dir / f"{prefix}checkpoint.pt")
    model.load_state_dict(state["model"])
    return state["step"]


def caption_pairs(cfg: RunConfig, data, vocab: CaptionVocab, max_words: int, progress: bool = True,
                  rows: dict[str, torch.Tensor] | None = None):
    """The training and validation caption pairs of a run, and ``val_batches()`` for the engine.
    With ``rows`` (each split's row numbers in a feature cache) the pairs carry those, not images."""
    # small datasets are decoded once (8 % of a ci step, benchmarks/HISTORY.md); big ones, such as
    # COCO's 113k training images (~17 GB decoded at 224 px), are decoded by DataLoader workers
    in_memory = (rows is None and cfg.data.in_memory
                 and len(data.train) * 3 * cfg.data.image_size**2 <= IN_MEMORY_LIMIT)
    rows = rows or {}

    def tokens(split: str):
        return data.caption_tokens(split, vocab, max_words, progress) if data.caption_tokens is not None else None

    train_pairs = CaptionPairs(data.train, vocab, max_words, in_memory=in_memory, progress=progress,
                               rows=rows.get("train"), tokens=tokens("train"))
    val_pairs = CaptionPairs(data.val, vocab, max_words, in_memory=in_memory, rows=rows.get("val"),
                             tokens=tokens("val"))

    def val_batches():
        # its own generator: a loader without one draws a seed from the global random state,
        # which belongs to dropout (and must replay exactly on resume)
        return torch.utils.data.DataLoader(val_pairs, batch_size=cfg.train.batch_size, collate_fn=collate_captions,
                                           generator=torch.Generator().manual_seed(0))

    return train_pairs, val_pairs, val_batches


def fit_captioner(
    cfg: RunConfig, train_pairs, val_batches, vocab: CaptionVocab, max_words: int, run_dir: Path,
    blind: bool = False, prefix: str = "", progress: bool = True, features: torch.nn.Module | None = None,
) -> tuple[Captioner, list[dict], float, int]:
    """Train the captioner ``cfg`` describes through the engine, continuing from its checkpoint in
    ``run_dir`` if there is one, and load the checkpoint with the lowest validation loss (model
    selection on validation). ``features`` (cached features served by row number, see
    ``cached_features``) replace the encoder; a projection to the decoder's width is trained on
    them. Returns (model, history, training seconds, selected step)."""
    pin = torch.cuda.is_available() and cfg.train.device != "cpu"
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every run and every resume
    encoder = None if blind else _encoder_for(cfg, features)
    if cfg.model.decoder == "gpt2":
        model = gpt2_captioner(cfg, _gpt2_weights(run_dir, vocab, prefix), vocab, max_words, blind, encoder)
    else:
        model_cfg = captioner_config(cfg, len(vocab), max_words, blind)
        if encoder is not None:
            # the features are fixed already; the projection on top of them trains
            model_cfg = replace(model_cfg, freeze_encoder=False, pretrained=False)
        model = Captioner(model_cfg, encoder=encoder)
    model = model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    history = fit(
        model, captioner_loss,
        batch_loader(train_pairs, collate_captions, cfg.train.batch_size, cfg.train.seed, cfg.train.steps,
                     cfg.train.grad_accum, cfg.data.num_workers, pin),
        cfg.train, run_dir=run_dir, val_batches=val_batches, config=cfg.to_dict(),
        extra_state={"vocab": vocab.to_list() if isinstance(vocab, CaptionVocab) else None,  # BPE: in gpt2/
                     "max_words": max_words}, resume=True, prefix=prefix,
        progress=progress, desc=f"training {'blind baseline' if blind else 'captioner'}", unit="tokens",
    )
    seconds = time.perf_counter() - t0
    return model, history, seconds, _load_selected(model, run_dir, prefix)


BEAM_WIDTHS = (1, 3, 5)  # the decodings the validation split chooses from (1: greedy)


def report_metrics() -> tuple[str, ...]:
    """The COCO metrics of the final rows: BLEU, ROUGE-L and CIDEr-D always, METEOR where Java runs
    it, SPICE where Stanford CoreNLP is installed too (``eval.coco_eval``)."""
    from .eval.coco_eval import meteor_unavailable, spice_unavailable

    return ("Bleu", "ROUGE_L", "CIDEr", *(("METEOR",) if meteor_unavailable() is None else ()),
            *(("SPICE",) if spice_unavailable() is None else ()))


def _decoder_on_val(model, images, references, vocab, cfg: RunConfig, content) -> tuple[int, dict]:
    """Greedy, or beam search with 3 or 5 beams: whichever scores the highest CIDEr-D on validation."""
    scores = {}
    for beams in BEAM_WIDTHS:
        captions = dict(zip(references, caption_images(model, images, vocab, cfg.eval.batch_size, beams), strict=True))
        scores[beams] = score_split(captions, references, content)
    chosen = max(scores, key=lambda b: (scores[b]["CIDEr"], -b))
    return chosen, {("greedy" if b == 1 else f"beam{b}"): sc for b, sc in scores.items()}


def train_and_evaluate(
    config: RunConfig | Profile | None = None,
    run_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run the whole job and return the run folder (see the module docstring).

    ``config`` defaults to the active profile's. A new run gets ``runs_dir/<timestamp>`` unless
    ``run_dir`` is given; a folder that already holds a run is only continued with ``resume``.
    """
    if isinstance(config, Profile):
        config = config.run
    config = config or get_profile().run
    if run_dir is None and resume:
        raise ValueError("resume needs the run folder to continue (run_dir)")
    config_file = Path(run_dir) / "config.json" if run_dir is not None else None
    if config_file is not None and config_file.exists():
        if not resume:
            raise RunFolderInUse(f"{run_dir} already holds a run; continue it with --resume, or "
                                 "choose a new --run-dir")
        saved = RunConfig.load(config_file)  # a damaged config.json is reported by name, first
        conflicts = resume_conflicts(saved.to_dict(), config.to_dict())
        if conflicts:
            raise ConfigError(f"{config_file}: cannot resume with different settings: {conflicts}")
    elif resume:
        raise FileNotFoundError(f"{config_file}: no such file; nothing to resume in {run_dir}")
    cfg = config
    # the data first: a missing dataset stops here, before a run folder exists
    data = open_caption_data(cfg.data, seed=cfg.train.seed, progress=progress)
    run_dir = new_run_dir(runs_dir) if run_dir is None else Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")  # on resume: the same settings, perhaps with more steps
    vocab, max_words = _vocab(run_dir, cfg, data.train)
    features, feature_rows, cache_folder = (cached_features(cfg, data, run_dir, progress) if cfg.model.feature_cache
                                    else (None, None, None))
    train_pairs, val_pairs, val_batches = caption_pairs(cfg, data, vocab, max_words, progress, feature_rows)

    models, histories, seconds, selected, nll = {}, {}, {}, {}, {}
    device = resolve_device(cfg.train.device)
    # the blind baseline gets the captioner's budget: the same steps, the same early stopping
    for name, blind, prefix in [("model", False, ""), ("blind", True, "baseline_")]:
        model, histories[name], seconds[name], step = fit_captioner(
            cfg, train_pairs, val_batches, vocab, max_words, run_dir, blind, prefix, progress, features)
        selected[name] = {"step": step, "trained_steps": histories[name][-1]["step"]}
        # what the image is worth: held-out cross-entropy per token over the whole validation split
        nll[name] = evaluate_loss(model.to(device), captioner_loss, val_batches(), len(val_pairs), device)
        models[name] = model
    curves = {name: {h["step"]: h["val_loss"] for h in hist if "val_loss" in h}
              for name, hist in histories.items()}
    both = sorted(set(curves["model"]) & set(curves["blind"]))
    nll_report = {"model": nll["model"], "blind": nll["blind"], "image_worth": nll["blind"] - nll["model"],
                  "unit": "nats per token, validation split",
                  "curve": [{"step": s, "model": curves["model"][s], "blind": curves["blind"][s]} for s in both]}

    # every other choice on validation too: the decoding, and the one fixed caption
    val_refs = data.val.captions_by_id()
    # what the models read of a split: its row numbers in the feature cache, or its decoded images
    def model_inputs(split: str, ds) -> torch.Tensor:
        return feature_rows[split] if feature_rows is not None else _uint8_images(ds)

    val_images = val_pairs.images if val_pairs.images is not None else model_inputs("val", data.val)
    val_content = data.content_scores.get("val")
    decoding = {}
    for name, model in models.items():
        beams, scores = _decoder_on_val(model, val_images, val_refs, vocab, cfg, val_content)
        decoding[name] = {"beam_width": beams, "val": scores}
    train_refs = data.train.captions_by_id()
    fixed, fixed_val_cider = fixed_caption([c for caps in train_refs.values() for c in caps], val_refs)
    # the nearest-neighbour row retrieves a training caption by the captioner's own encoder
    train_feats = _split_features(models["model"], data.train,
                                  feature_rows["train"] if feature_rows is not None else train_pairs.images,
                                  cfg.eval.batch_size)
    train_captions = [train_refs[i][0] for i in data.train.image_ids]

    metrics = {}
    captions_by_split = {}
    for split in ("test", "compositional"):
        if split == "compositional" and getattr(data, "compositional", None) is None:
            continue
        ds = data.split(split)
        refs = ds.captions_by_id()
        ids = ds.image_ids
        images = model_inputs(split, ds)
        human, others = human_row(refs)
        rows = {
            name: dict(zip(ids, caption_images(m, images, vocab, cfg.eval.batch_size, decoding[name]["beam_width"]),
                           strict=True))
            for name, m in models.items()
        }
        rows["fixed_caption"] = dict.fromkeys(ids, fixed)
        rows["nearest_neighbour"] = dict(zip(ids, nearest_neighbour_captions(
            image_features(models["model"], images, cfg.eval.batch_size), train_feats, train_captions), strict=True))
        rows["human"] = human
        rows.update(data.reference_rows.get(split, {}))
        metrics[split] = score_rows(rows, others, data.content_scores.get(split), report_metrics())
        captions_by_split[split] = (ids, rows, images, refs)

    metrics["n_images"] = {s: len(v[0]) for s, v in captions_by_split.items()}
    metrics["references"] = "each row against every reference but the first, which is the human row"
    metrics["selection"] = {
        "checkpoint": selected, "decoding": decoding,
        "fixed_caption": {"caption": fixed, "val_CIDEr": fixed_val_cider},
    }
    metrics["nll"] = nll_report
    metrics["skipped_images"] = {s: data.split(s).num_skipped for s in ("train", "val", *captions_by_split)}
    metrics["train_seconds"] = seconds
    if cache_folder is not None:
        metrics["feature_cache"] = str(cache_folder)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for split, (ids, rows, _, _) in captions_by_split.items():
        (run_dir / f"captions_{split}.json").write_text(json.dumps(
            [{"image_id": i, "caption": rows["model"][i], **{f"{r}_caption": rows[r][i] for r in rows if r != "model"}}
             for i in ids], indent=2))

    import matplotlib.pyplot as plt

    plt.close(plot_loss_curves({"captioner": histories["model"], "blind baseline": histories["blind"]},
                               run_dir / "loss_curve.png"))
    ids, test_rows, _, refs = captions_by_split["test"]
    k = min(cfg.eval.n_samples, len(ids))
    plt.close(plot_caption_grid(_uint8_images(data.test, k), [test_rows["model"][i] for i in ids[:k]],
                                [refs[i] for i in ids[:k]], run_dir / "samples.png"))
    return run_dir
