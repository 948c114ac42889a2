"""Visual question answering: the fusion track's fused encoder and an answer classifier.

The model reads an image and a question together and picks one answer of a fixed answer
vocabulary (``velm_course.data.vqa.AnswerVocab``), as most VQA models do:

    image features ── ImageTower ──────────────┐ tokens (B, N, D)
    question ──────── TextTower ── states ──── cross-attention fusion (non-causal) ── fused (B, L, D)
                                                   first token's fused state (B, D) ── MLP ── logits (B, A)

These are exactly the parts the image-text matching (ITM) objective of
``velm_course.multimodal.pretrainer`` trains: its image adapter (``image``), its text
tower (``text``) and its matching fusion (``itm_fusion``, here ``fusion``), summarised at
the first token as there. So a Pretrainer's weights load into a VQA model part for part
(``VQAModel.from_pretrainer``); only the answer head starts new. That is the pretrain ->
fine-tune recipe: ``pretrained_parts`` names what was loaded, ``freeze_pretrained`` keeps it
fixed, and ``finetune_lr_scale`` gives it a smaller learning rate instead.

Two ablations keep the architecture and remove one input, so they get the same parameters
and the same budget as the full model (``VQAConfig.inputs``):

    "question"   blind: the image features are replaced by zeros, so every image looks alike
    "image"      the question is replaced by an empty one (<bos> <eos>): the model sees the
                 picture but not what is asked

Shape letters: B batch, L question tokens, N image tokens, Dv image feature width, D model
width, A answers.

>>> cfg = VQAConfig(vocab_size=12, image_dim=8, n_answers=5, d_model=16, n_head=2, max_len=6)
>>> model = VQAModel(cfg)
>>> model(torch.randn(2, 4, 8), torch.randn(2, 8), torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])).shape
torch.Size([2, 5])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.captions import BOS, EOS, PAD
from ..data.vqa import UNK_ANSWER
from ..nn import init_transformer_
from .dual_encoder import ImageTower, TextTower, evaluating
from .fusion import FusionConfig, build_fusion

VQA_INPUTS = ("both", "question", "image")
# The model's parts that a Pretrainer has, by their names there. The answer head is new.
PRETRAINED_PARTS = {"image": "image", "text": "text", "fusion": "itm_fusion"}


@dataclass
class VQAConfig:
    vocab_size: int  # question vocabulary, special tokens included (a pretrainer's, to load one)
    image_dim: int  # Dv: width of the frozen encoder's grid and pooled features
    n_answers: int  # A: answer vocabulary, the reserved <unk> answer included
    d_model: int = 64  # D: width of the adapter, the question encoder and the fusion
    n_layer: int = 2  # blocks of the question encoder (the pretrainer's text tower)
    n_adapter: int = 1  # image adapter blocks (0: a linear adapter)
    n_fusion: int = 1  # cross-attention fusion layers (the pretrainer's matching fusion)
    n_head: int = 4  # attention heads in every block
    max_len: int = 24  # longest question in tokens, <bos> and <eos> included
    dropout: float = 0.0  # dropout in every block while training
    inputs: str = "both"  # what the model sees: "both", "question" (blind) or "image"

    def __post_init__(self):
        if self.inputs not in VQA_INPUTS:
            raise ValueError(f"inputs must be one of {VQA_INPUTS}, got {self.inputs!r}")
        if self.n_answers < 2:
            raise ValueError(f"n_answers must be >= 2 (<unk> and one answer), got {self.n_answers}")


class VQAModel(nn.Module):
    """Image adapter + question encoder + non-causal cross-attention fusion + answer MLP."""

    def __init__(self, config: VQAConfig):
        super().__init__()
        self.config = c = config
        self.image = ImageTower(c.image_dim, c.d_model, c.n_adapter, c.n_head, c.dropout)
        self.text = TextTower(c.vocab_size, c.d_model, c.n_layer, c.n_head, c.max_len, c.dropout)
        # causal=False: every word of the question reads every other word, and the image
        self.fusion = build_fusion(FusionConfig(
            kind="cross_attention", d_model=c.d_model, image_dim=c.d_model, n_layer=c.n_fusion,
            n_head=c.n_head, dropout=c.dropout, causal=False))
        # a two-layer classifier, as in ViLT's and BUTD's VQA heads
        self.head = nn.Sequential(nn.Linear(c.d_model, 2 * c.d_model), nn.LayerNorm(2 * c.d_model),
                                  nn.GELU(), nn.Linear(2 * c.d_model, c.n_answers))
        init_transformer_([self.head], n_layer=1)

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """grid (B, N, Dv), pooled (B, Dv), question (B, L) tokens -> answer logits (B, A)."""
        if question.dim() != 2 or question.shape[0] != grid.shape[0]:
            raise ValueError(f"question must be (B, L) with B = {grid.shape[0]}, got {tuple(question.shape)}")
        if self.config.inputs == "question":  # blind: one image for every question
            grid, pooled = torch.zeros_like(grid), torch.zeros_like(pooled)
        elif self.config.inputs == "image":  # deaf: one question for every image
            question = question.new_tensor([BOS, EOS]).expand(question.shape[0], 2)  # (B, 2)
        tokens, image_vec = self.image(grid, pooled)  # (B, N, D), (B, D)
        states, _ = self.text(question)  # (B, L, D)
        fused = self.fusion(states, tokens, image_vec, text_mask=question != PAD)  # (B, L, D)
        return self.head(fused[:, 0])  # (B, D) the first token's state -> (B, A)

    @classmethod
    def from_pretrainer(cls, pretrainer: nn.Module, n_answers: int, **overrides) -> VQAModel:
        """A VQA model whose image adapter, question encoder and fusion are the Pretrainer's
        (copies, loaded; not re-initialised); the answer head is new. ``overrides`` change
        settings that do not touch the loaded shapes (``dropout``, ``inputs``)."""
        pc = pretrainer.config
        config = VQAConfig(vocab_size=pc.vocab_size, image_dim=pc.image_dim, n_answers=n_answers,
                           d_model=pc.d_model, n_layer=pc.n_layer, n_adapter=pc.n_adapter,
                           n_fusion=pc.n_fusion, n_head=pc.n_head, max_len=pc.max_len,
                           dropout=pc.dropout)
        model = cls(VQAConfig(**{**asdict(config), **overrides}))
        load_pretrained(model, pretrainer.state_dict())
        return model

    def pretrained_parts(self) -> list[nn.Module]:
        return [getattr(self, name) for name in PRETRAINED_PARTS]

    def freeze_pretrained(self) -> VQAModel:
        """Keep the image adapter, question encoder and fusion fixed; only the head trains."""
        for part in self.pretrained_parts():
            part.requires_grad_(False)
        return self


def load_pretrained(model: VQAModel, pretrainer_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a Pretrainer's ``image``, ``text`` and ``itm_fusion`` weights (its ``state_dict``,
    or the "model" entry of its engine checkpoint) into the model's ``image``, ``text`` and
    ``fusion``; returns the names loaded. Every one of those parts must be there, at the
    model's shapes; a mismatch raises, naming the part."""
    loaded = []
    for ours, theirs in PRETRAINED_PARTS.items():
        part = getattr(model, ours)
        state = {k[len(theirs) + 1:]: v for k, v in pretrainer_state.items() if k.startswith(theirs + ".")}
        if not state:
            raise KeyError(f"the pretrained weights have no {theirs!r} part to load into {ours!r}")
        try:
            part.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"cannot load the pretrained {theirs!r} into {ours!r}: {err}") from None
        loaded += [f"{ours}.{k}" for k in state]
    return loaded


def finetune_lr_scale(ratio: float) -> dict[str, float]:
    """``fit(..., lr_scale=...)``: the pretrained parts learn at ``ratio`` times the rate of
    the new head (BERT-style fine-tuning uses ratios like 0.1).

    >>> finetune_lr_scale(0.1)
    {'image.': 0.1, 'text.': 0.1, 'fusion.': 0.1}
    """
    return {f"{name}.": ratio for name in PRETRAINED_PARTS}


def vqa_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's loss_fn: (summed cross-entropy, number of questions counted). Questions
    whose answer is outside the vocabulary (``UNK_ANSWER``) carry no loss: there is no class
    to push them towards."""
    logits = model(batch["grid"], batch["pooled"], batch["question"])  # (B, A)
    target = batch["answer"]  # (B,)
    loss = F.cross_entropy(logits.float(), target, ignore_index=UNK_ANSWER, reduction="sum")
    return loss, (target != UNK_ANSWER).sum()


@torch.no_grad()
def predict_answers(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor, question: torch.Tensor,
                    image: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The answer id (Q,) the model gives each question, never ``UNK_ANSWER``.

    grid (n, N, Dv), pooled (n, Dv): one row per image; question (Q, L) tokens; image (Q,) the
    row of each question's image. Eval mode inside (the training mode comes back after).
    """
    device = next(model.parameters()).device
    out = []
    with evaluating(model):
        for start in range(0, len(question), batch_size):
            rows = image[start:start + batch_size]
            logits = model(grid[rows].to(device), pooled[rows].to(device),
                           question[start:start + batch_size].to(device))  # (b, A)
            logits[:, UNK_ANSWER] = float("-inf")  # "I don't know" is never an answer
            out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out)


def answer_images(model: VQAModel, encoder: nn.Module, vocab, answer_vocab, images: list, questions: list[str],
                  max_words: int) -> list[str]:
    """Answer one question about each image: what a user of a trained model calls.

    images: paths or PIL images, of any size and mode: converted to RGB (see-through pixels on
    white) and resized to the encoder's square input (``velm_course.data.coco.as_rgb``; the
    aspect ratio is not kept). ``encoder`` is the frozen image encoder the model's features
    came from; ``vocab`` the question vocabulary (unknown words become <unk>); an empty
    question raises.
    """
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from ..data.coco import as_rgb, open_rgb
    from ..data.vqa import encode_questions
    from ..vision.encoders import encode_images

    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    question = encode_questions(vocab, questions, max_words)  # (Q, L); raises on an empty one
    size = encoder.image_size
    rgb = [as_rgb(im, size) if isinstance(im, Image.Image) else open_rgb(Path(im), size) for im in images]
    pixels = [pil_to_tensor(im) for im in rgb]  # (3, H, W) uint8 each
    grid, pooled = encode_images(encoder, torch.stack(pixels))  # (Q, N, Dv), (Q, Dv)
    ids = predict_answers(model, grid, pooled, question, torch.arange(len(images)))
    return [answer_vocab.decode(i) for i in ids.tolist()]
