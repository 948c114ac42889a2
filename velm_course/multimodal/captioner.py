"""An image-captioning model: image tokens → a Transformer decoder that attends to them.

    P(caption | image) = prod_t P(w_t | w_<t, image)

The image encoder turns a picture into a grid of tokens (B, N, C) and a pooled vector (B, C).
The decoder embeds the words written so far and hands them, with the image, to a fusion
module (``velm_course.multimodal.fusion``): by default a stack of the shared pre-norm blocks
built causal and with cross-attention, where each word position attends to the image tokens
after causal self-attention over the earlier words; ``fusion="concat"``, ``"prefix"`` or
``"co_attention"`` bring the image in elsewhere. The image enters only there, so a "blind"
model (``blind=True``) that swaps the image for one learned constant token is the same
network minus vision: the baseline that shows what the image is worth.

The captioner initialises only what it owns (embeddings, blocks, norms): an encoder passed
in, or loaded with pretrained weights, keeps its weights.

Shape letters: B batch, T caption tokens, N image tokens, C model width, V vocabulary.

>>> cfg = CaptionerConfig(vocab_size=20, d_model=32, n_layer=1, n_head=2, image_size=64)
>>> model = Captioner(cfg)
>>> logits, loss = model(torch.rand(2, 3, 64, 64), torch.ones(2, 5, dtype=torch.long))
>>> tuple(logits.shape), loss is None
((2, 5, 20), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.captions import BOS, EOS, PAD
from ..decoding import beam_search, sample_next
from ..nn import KVCache, check_token_ids, init_transformer_, lm_loss
from ..vision.encoders import build_image_encoder
from .fusion import FusionConfig, build_fusion


def never_special(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) with <pad> and <bos> ruled out: neither is ever a caption's next word.

    Training never targets them, so a trained model hardly proposes them anyway; an untrained
    or barely trained one may, and a beam of padding would be a beam wasted. Beam search applies
    it; greedy ``generate`` does not yet, so that the main job's stored numbers stay as they are
    until the captioning issue re-measures them with one rule for both.
    """
    return logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), float("-inf"))


@dataclass
class CaptionerConfig:
    vocab_size: int  # number of caption words, special tokens included
    d_model: int = 128  # width of image tokens, word embeddings and every block
    n_layer: int = 2  # decoder blocks
    n_head: int = 4  # attention heads in each self- and cross-attention
    max_len: int = 24  # longest caption in tokens, <bos> and <eos> included
    dropout: float = 0.1  # dropout on attention weights and residual branches while training
    image_size: int = 64  # side of the square input images
    encoder: str = "small_cnn"  # image encoder name, see velm_course.vision.encoders
    pretrained: bool = False  # load the encoder's ImageNet weights (torchvision encoders)
    freeze_encoder: bool = False  # keep the encoder's weights fixed while training
    blind: bool = False  # True: never look at the image (the no-vision baseline)
    fusion: str = "cross_attention"  # where the image enters, see velm_course.multimodal.fusion
    gated: bool = False  # cross_attention only: tanh-gated, closed at the start (Flamingo)
    n_prefix: int = 4  # prefix only: visual words before the caption

    def fusion_config(self) -> FusionConfig:
        return FusionConfig(kind=self.fusion, d_model=self.d_model, image_dim=self.d_model,
                            n_layer=self.n_layer, n_head=self.n_head, dropout=self.dropout,
                            causal=True, n_prefix=self.n_prefix, gated=self.gated)


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        c = config.d_model
        if config.blind:
            # one learned "image" token that carries no information about the picture
            self.encoder = None
            self.blind_token = nn.Parameter(torch.zeros(1, 1, c))
        else:
            self.encoder = encoder or build_image_encoder(
                config.encoder, c, config.image_size, pretrained=config.pretrained)
            if config.freeze_encoder:
                self.encoder.requires_grad_(False)
            self.ln_image = nn.LayerNorm(c)
        self.tok_emb = nn.Embedding(config.vocab_size, c)
        self.pos_emb = nn.Embedding(config.max_len, c)
        self.drop = nn.Dropout(config.dropout)
        self.fusion = build_fusion(config.fusion_config(), init=False)
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one table for reading and writing words
        # the decoder's own parts only: never the encoder, which may hold pretrained weights
        init_transformer_([self.tok_emb, self.pos_emb, self.fusion, self.ln_f], config.n_layer)

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics too
        return self

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image as the decoder sees it: grid tokens (B, N, C) and a pooled vector (B, C).

        The blind model gets its one learned token as both (N = 1), whatever the picture.
        """
        if self.encoder is None:
            token = self.blind_token.expand(images.shape[0], -1, -1)  # (B, 1, C)
            return token, token[:, 0]
        return self.prepare(*self.encoder(images))

    def prepare(self, grid: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs (B, N, C), (B, C) -> decoder inputs: both layer-normalised.

        Split from ``encode`` so features of a frozen encoder can be computed once and reused.
        """
        return self.ln_image(grid), self.ln_image(pooled)

    def decode(
        self, image: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor,
        caches: list[KVCache] | None = None, need_weights: bool = False,
    ):
        """Next-word logits (B, T, V) for caption prefixes idx (B, T), given ``encode``'s output.

        With ``caches`` (from ``self.fusion.new_caches()``), idx holds only the tokens after
        those already cached. With ``need_weights``, also the words' attention over the image
        tokens, one (B, nh, T, N) map per layer (cross-attention fusions only).
        """
        grid, pooled = image
        past = self.fusion.past_words(caches)
        check_token_ids(idx, self.config.vocab_size, self.config.max_len, past)
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        out = self.fusion(x, grid, pooled, caches=caches, need_weights=need_weights)
        x, maps = out if need_weights else (out, None)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return (logits, maps) if need_weights else logits

    def forward(
        self, images: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: logits for every position, and the mean cross-entropy if targets given.

        ``targets`` is ``idx`` shifted left by one, with ``IGNORE_INDEX`` after the caption's end.
        """
        logits = self.decode(self.encode(images), idx)
        return logits, lm_loss(logits, targets)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy decoding: start from <bos>, append the most likely word until <eos>.

        Returns (B, T') token ids without the leading <bos>. The image is encoded once, and a
        KV cache per layer means each step feeds only the newest word.
        """
        return self.generate_from(self.encode(images), max_new_tokens)

    @torch.no_grad()
    def generate_from(self, image: tuple[torch.Tensor, torch.Tensor],
                      max_new_tokens: int | None = None) -> torch.Tensor:
        """``generate`` for an image already encoded (``encode`` or ``prepare``'s output)."""
        steps = min(max_new_tokens or self.config.max_len - 1, self.config.max_len - 1)
        B, device = image[0].shape[0], image[0].device
        idx = torch.full((B, 1), BOS, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        caches = self.fusion.new_caches()
        for _ in range(steps):
            new = idx[:, self.fusion.past_words(caches):]  # the words not in the caches yet
            logits = self.decode(image, new, caches)[:, -1]  # (B, V)
            nxt = sample_next(logits, temperature=0)[:, 0]  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)  # finished captions only pad
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if done.all():
                break
        return idx[:, 1:]

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam_width: int = 3, max_new_tokens: int | None = None,
                    length_penalty: float = 1.0) -> torch.Tensor:
        """Beam search (``velm_course.decoding.beam_search``): (B, T') token ids without <bos>,
        padded after <eos>. The image is encoded once and shared by its beams' KV caches."""
        return self.beam_search_from(self.encode(images), beam_width, max_new_tokens, length_penalty)

    @torch.no_grad()
    def beam_search_from(self, image: tuple[torch.Tensor, torch.Tensor], beam_width: int = 3,
                         max_new_tokens: int | None = None, length_penalty: float = 1.0) -> torch.Tensor:
        """``beam_search`` for an image already encoded (``encode`` or ``prepare``'s output)."""
        steps = min(max_new_tokens or self.config.max_len - 1, self.config.max_len - 1)
        B = image[0].shape[0]
        beams = tuple(x.repeat_interleave(beam_width, dim=0) for x in image)  # (B·K, N, C), (B·K, C)
        caches = self.fusion.new_caches()

        def step(new: torch.Tensor) -> torch.Tensor:
            return never_special(self.decode(beams, new, caches)[:, -1])  # (B·K, V)

        def reorder(index: torch.Tensor) -> None:
            for cache in caches:
                cache.reorder(index)

        tokens, _ = beam_search(step, reorder, B, BOS, EOS, PAD, beam_width, steps, length_penalty,
                                device=image[0].device)
        return tokens
