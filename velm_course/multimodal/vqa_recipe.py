"""Pretrain -> fine-tune for VQA on the shapes data: the data, the pretrained weights, the runs.

The recipe of BLIP, ViLT and most vision-language models since: first train on plentiful
image-text pairs (here the shapes captions: captioning, contrastive and image-text matching,
``velm_course.multimodal.pretrainer``), then fine-tune on the smaller task you care about
(VQA). The pieces are elsewhere; this module puts them together:

    load_shapes_vqa       frozen image features of every split, the questions as tensors, the
                          captions for pretraining, one vocabulary for captions and questions
    pretrained_for_vqa    the pretrainer: shipped with the course for the ci settings (made by
                          ``python -m velm_course.multimodal.vqa_recipe``), else from the
                          cache, else trained now and cached, like the shapes CNN
    finetune              one VQA run through the engine, from scratch or from the pretrainer,
                          with validation accuracy logged along the way
    evaluate_vqa          accuracy overall and per question type on a split

Shape letters: n images, K captions per image, L tokens, N image tokens, Dv feature width.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.captions import CaptionVocab, normalize_caption
from ..data.vqa import AnswerVocab, VQATensors, read_questions, vqa_batches
from ..vision.pretrain import REPO_PRETRAINED
from .vqa import VQAConfig, VQAModel, finetune_lr_scale, predict_answers, vqa_loss

RECIPE_VERSION = 1  # bump when pretraining changes, so cached weights are not reused
SPLITS = ("train", "val", "test", "compositional")


@dataclass(frozen=True)
class VQARecipe:
    d_model: int = 64  # D: width of every part (the frozen CNN's features are this wide too)
    n_layer: int = 1  # question/caption encoder blocks (and the pretrainer's caption decoder)
    n_adapter: int = 0  # image adapter blocks (0: a linear adapter over the frozen features)
    n_fusion: int = 1  # cross-attention fusion layers, shared by matching and VQA
    n_head: int = 4  # attention heads in every block
    pretrain_steps: int = 2000  # optimizer steps of pretraining on the captions
    pretrain_batch_size: int = 32  # images per pretraining step (distinct: contrastive negatives)
    pretrain_lr: float = 2e-3  # peak learning rate of pretraining
    alpha: float = 1.0  # weight of the captioning loss in pretraining
    beta: float = 0.0  # weight of the attribute loss (0: the recipe uses image-text losses only)
    gamma: float = 1.0  # weight of contrastive + image-text matching
    seed: int = 0  # seeds pretraining


@dataclass
class ShapesVQA:
    """Everything a VQA run on the shapes data reads; features are computed once."""

    vocab: CaptionVocab  # words of the training captions and questions
    answers: AnswerVocab  # the training answers
    max_words: int  # longest training caption or question, in words
    features: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> grid (n, N, Dv), pooled (n, Dv)
    image_ids: dict[str, list[int]]  # split -> image ids in feature-table order
    questions: dict[str, VQATensors]  # split -> its questions
    captions: torch.Tensor  # (n_train, K, L) training captions as tokens, for pretraining
    scenes: dict[str, dict[int, list[dict]]]  # split -> image id -> drawn objects

    @property
    def image_dim(self) -> int:
        return self.features["train"][0].shape[-1]


def load_shapes_vqa(root, encoder: nn.Module, splits=SPLITS) -> ShapesVQA:
    """Read a generated shapes folder and run the frozen ``encoder`` once over its images.

    The vocabulary covers the training captions and the training questions (a model
    pretrained on captions then meets the question words with the same ids); words only in
    other splits become <unk>. Answers come from the training questions only.
    """
    from ..data.shapes import read_scenes, shapes_split
    from ..vision.encoders import encode_images

    questions = {s: read_questions(root, s) for s in splits}
    train = shapes_split(root, "train")
    by_id = train.captions_by_id()
    texts = [c for i in train.image_ids for c in by_id[i]] + [q["question"] for q in questions["train"]]
    vocab = CaptionVocab.build(texts)
    max_words = max(len(normalize_caption(t).split()) for t in texts)
    answers = AnswerVocab.build(q["answer"] for q in questions["train"])
    features, image_ids, tensors, scenes = {}, {}, {}, {}
    for split in splits:
        data = train if split == "train" else shapes_split(root, split)
        images = torch.stack([data.get_uint8(i)[0] for i in range(len(data))])  # (n, 3, H, W) uint8
        features[split] = encode_images(encoder, images, batch_size=500)
        image_ids[split] = list(data.image_ids)
        tensors[split] = VQATensors.build(questions[split], image_ids[split], vocab, answers, max_words)
        scenes[split] = read_scenes(root, split)
    captions = torch.stack([vocab.encode_batch(by_id[i], max_words) for i in train.image_ids])  # (n, K, L)
    return ShapesVQA(vocab, answers, max_words, features, image_ids, tensors, captions, scenes)


# ---------------------------------------------------------------------------------------------
# pretraining

def _pretrainer_config(data: ShapesVQA, recipe: VQARecipe, n_attributes: int):
    from .pretrainer import PretrainerConfig

    return PretrainerConfig(
        vocab_size=len(data.vocab), image_dim=data.image_dim, n_attributes=n_attributes,
        d_model=recipe.d_model, embed_dim=recipe.d_model, n_layer=recipe.n_layer,
        n_adapter=recipe.n_adapter, n_fusion=recipe.n_fusion, n_head=recipe.n_head,
        max_len=data.max_words + 2, alpha=recipe.alpha, beta=recipe.beta, gamma=recipe.gamma,
        seed=recipe.seed)


def pretrain(data: ShapesVQA, recipe: VQARecipe, device: str = "cpu", progress: bool = True):
    """Train a Pretrainer on the training captions; returns (pretrainer, history)."""
    from ..data.shapes import COLORS, SHAPES
    from ..engine import TrainConfig, fit
    from .losses import attribute_targets
    from .pretrainer import Pretrainer, image_batches, objective

    grid, pooled = data.features["train"]
    attributes = attribute_targets([data.scenes["train"][i] for i in data.image_ids["train"]],
                                   list(COLORS), list(SHAPES))  # (n, 36)
    torch.manual_seed(recipe.seed)
    model = Pretrainer(_pretrainer_config(data, recipe, attributes.shape[1]))
    steps = recipe.pretrain_steps
    cfg = TrainConfig(steps=steps, batch_size=recipe.pretrain_batch_size, lr=recipe.pretrain_lr, warmup=50,
                      seed=recipe.seed, log_every=50, device=device)
    history = fit(model, objective, image_batches(grid, pooled, data.captions, attributes,
                                                  recipe.pretrain_batch_size, recipe.seed, steps),
                  cfg, progress=progress, desc="pretraining", unit="images")
    return model.cpu(), history


def _weights_name(data: ShapesVQA, recipe: VQARecipe, encoder_file: str) -> str:
    blob = json.dumps({"recipe": asdict(recipe), "vocab": data.vocab.to_list(), "encoder": Path(encoder_file).name,
                       "n_train": len(data.image_ids["train"]), "version": RECIPE_VERSION}, sort_keys=True)
    return f"vqa_pretrainer-{hashlib.sha256(blob.encode()).hexdigest()[:10]}.pt"


def pretrained_for_vqa(data: ShapesVQA, recipe: VQARecipe, encoder_file: str, device: str = "cpu",
                       cache_dir=None, progress: bool = True, shipped: bool = True):
    """(pretrainer, history, file): the course's shipped weights for these settings, the
    cached ones, or trained now and cached under ``<data_dir>/pretrained/``. With
    ``shipped=False`` the course's weights are not used (an experiment grid trains every
    pretrainer itself, so all of them ran on one machine with one thread count).

    ``encoder_file`` names the frozen encoder's weights (``pretrained_shapes_encoder``'s third
    result): the file name is part of the digest, since other features need other weights.
    """
    from ..engine.checkpoint import load_checkpoint, save_checkpoint
    from ..profiles import data_dir
    from .pretrainer import Pretrainer, PretrainerConfig

    name = _weights_name(data, recipe, encoder_file)
    cache = Path(cache_dir) if cache_dir is not None else data_dir() / "pretrained"
    for path in ((REPO_PRETRAINED / name,) if shipped else ()) + (cache / name,):
        if path.is_file():
            state = load_checkpoint(path, required=("model", "config", "history", "vocab"))
            if state["vocab"] != data.vocab.to_list():
                raise ValueError(f"{path} was pretrained with another vocabulary; delete it to retrain")
            model = Pretrainer(PretrainerConfig(**state["config"]))
            model.load_state_dict(state["model"])
            return model, state["history"], str(path)
    model, history = pretrain(data, recipe, device, progress)
    cache.mkdir(parents=True, exist_ok=True)
    save_checkpoint(cache / name, {"model": model.state_dict(), "config": asdict(model.config),
                                   "history": history, "vocab": data.vocab.to_list(), "recipe": asdict(recipe)})
    return model, history, str(cache / name)


# ---------------------------------------------------------------------------------------------
# fine-tuning and scoring

def evaluate_vqa(model: nn.Module, data: ShapesVQA, split: str, questions: VQATensors | None = None) -> dict:
    """``velm_course.eval.vqa.score_vqa`` of the model's answers on a split (or a subset of
    its questions): {"accuracy", "n", "per_type"}, plus "predictions" (question id -> answer)."""
    from ..eval.vqa import score_vqa

    q = questions if questions is not None else data.questions[split]
    grid, pooled = data.features[split]
    ids = predict_answers(model, grid, pooled, q.question, q.image)
    predictions = {qid: data.answers.decode(i) for qid, i in zip(q.question_id, ids.tolist(), strict=True)}
    scores = score_vqa(predictions, {qid: [a] for qid, a in zip(q.question_id, q.answers, strict=True)},
                       dict(zip(q.question_id, q.types, strict=True)))
    return {**scores, "predictions": predictions}


def new_vqa_model(data: ShapesVQA, recipe: VQARecipe, pretrainer: nn.Module | None = None,
                  inputs: str = "both", seed: int = 0) -> VQAModel:
    """A VQA model for ``data``: from ``pretrainer`` (its parts loaded, a new head drawn with
    ``seed``) or from scratch (everything drawn with ``seed``), with the recipe's sizes."""
    torch.manual_seed(seed)
    if pretrainer is not None:
        return VQAModel.from_pretrainer(pretrainer, len(data.answers), inputs=inputs)
    return VQAModel(VQAConfig(vocab_size=len(data.vocab), image_dim=data.image_dim, n_answers=len(data.answers),
                              d_model=recipe.d_model, n_layer=recipe.n_layer, n_adapter=recipe.n_adapter,
                              n_fusion=recipe.n_fusion, n_head=recipe.n_head, max_len=data.max_words + 2,
                              inputs=inputs))


def finetune(model: VQAModel, data: ShapesVQA, steps: int, seed: int, fraction: float = 1.0,
             lr: float = 1e-3, batch_size: int = 64, pretrained_lr_ratio: float | None = None,
             eval_every: int = 50, device: str = "cpu", progress: bool = False) -> list[dict]:
    """Train on ``fraction`` of the training questions (nested subsets, drawn with ``seed``);
    returns the engine's history, with the validation accuracy ("val_accuracy") every
    ``eval_every`` steps. ``pretrained_lr_ratio`` trains the loaded parts at that fraction of
    ``lr``; freeze them beforehand with ``model.freeze_pretrained()`` instead to keep them."""
    from ..engine import TrainConfig, fit

    train = data.questions["train"].fraction(fraction, seed) if fraction < 1 else data.questions["train"]
    grid, pooled = data.features["train"]
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=min(50, steps // 10), seed=seed,
                      log_every=eval_every, device=device)

    def val_accuracy(m, step):
        return {"val_accuracy": evaluate_vqa(m, data, "val")["accuracy"]}

    lr_scale = finetune_lr_scale(pretrained_lr_ratio) if pretrained_lr_ratio is not None else None
    return fit(model, vqa_loss, vqa_batches(train, grid, pooled, batch_size, seed, steps), cfg, progress=progress,
               desc="fine-tuning", unit="questions", monitor=val_accuracy, lr_scale=lr_scale)


def main(argv=None) -> None:
    """Make the shipped pretrainer: ``python -m velm_course.multimodal.vqa_recipe [--profile ci]``."""
    import argparse
    import shutil

    from ..data.shapes import ShapesConfig, ensure_shapes
    from ..profiles import get_profile
    from ..vision.pretrain import PretrainConfig, pretrained_shapes_encoder

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    shapes_cfg = ShapesConfig.from_profile(profile, n_compositional=profile.run.data.n_compositional)
    recipe = VQARecipe(d_model=profile.notebooks.fusion_d_model, pretrain_steps=profile.notebooks.vqa_pretrain_steps)
    encoder, _, encoder_file = pretrained_shapes_encoder(shapes_cfg, PretrainConfig(d_model=recipe.d_model))
    data = load_shapes_vqa(ensure_shapes(shapes_cfg), encoder)
    _, _, path = pretrained_for_vqa(data, recipe, encoder_file, device=profile.device)
    REPO_PRETRAINED.mkdir(parents=True, exist_ok=True)
    if Path(path).parent != REPO_PRETRAINED:
        shutil.copy(path, REPO_PRETRAINED / Path(path).name)
    print("wrote", REPO_PRETRAINED / Path(path).name)


if __name__ == "__main__":
    main()
