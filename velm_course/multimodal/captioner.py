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

Captions are written by ``CaptionDecoding`` (greedy ``generate``, ``sample``, ``beam_search``),
which runs the loops of ``velm_course.decoding`` on the decoder's KV caches; the GPT-2
captioner (``velm_course.multimodal.hf_gpt2``) shares it.

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
from ..decoding import ban_tokens, beam_search, generate, generators, token_logprobs
from ..nn import KVCache, check_token_ids, init_transformer_, lm_loss
from ..vision.encoders import Projected, build_image_encoder
from .fusion import FusionConfig, build_fusion


def never_special(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) with <pad> and <bos> ruled out: neither is ever a caption's next word.

    Training never targets them, so a trained model hardly proposes them anyway; an untrained
    or barely trained one may, and a caption or a beam of padding would be one wasted. Every
    decoder follows this one rule (``CaptionDecoding.banned_tokens``), in the step it hands to
    ``velm_course.decoding``: greedy ``generate``, ``sample`` and ``beam_search`` choose among
    the same words, and ``caption_logprobs`` scores a caption under the same rule.

    >>> never_special(torch.zeros(1, 5))
    tensor([[-inf, -inf, 0., 0., 0.]])
    """
    return ban_tokens(logits, (PAD, BOS))


class CaptionDecoding:
    """What every captioner does with its decoder, through ``velm_course.decoding``: greedy
    ``generate``, ``sample``, ``beam_search``, and ``caption_logprobs`` by teacher forcing.

    A captioner that mixes it in provides ``encode(images) -> (grid, pooled)``,
    ``decode(image, idx, cache) -> logits (B, T, V)``, ``new_cache()``,
    ``reorder_cache(cache, index)``, ``config.max_len``, its special token ids ``bos_id``,
    ``eos_id``, ``pad_id``, and ``banned_tokens``, the tokens that are never a next word. Every
    decoder rules those out in its step (``ban_tokens``), so greedy, sampling, beam search and
    the log-probabilities all follow one rule.
    """

    bos_id, eos_id, pad_id = BOS, EOS, PAD  # the caption vocabulary's special tokens
    banned_tokens: tuple[int, ...] = (PAD, BOS)  # never a next word (``never_special``)

    def _steps(self, max_new_tokens: int | None) -> int:
        return min(max_new_tokens or self.config.max_len - 1, self.config.max_len - 1)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy decoding: start from <bos>, append the most likely word until <eos>.

        Returns (B, T') token ids without the leading <bos>, padded after <eos>. The image is
        encoded once, and a KV cache means each step feeds only the newest word.
        """
        return self.generate_from(self.encode(images), max_new_tokens)

    @torch.no_grad()
    def generate_from(self, image: tuple[torch.Tensor, torch.Tensor], max_new_tokens: int | None = None,
                      use_cache: bool = True) -> torch.Tensor:
        """``generate`` for an image already encoded (``encode``'s output).

        ``use_cache=False`` feeds the whole caption so far at every step instead (the same
        words, only slower: ``benchmarks/bench_decoding.py`` measures by how much).
        """
        return self.generate_scored_from(image, max_new_tokens, use_cache=use_cache)[0]

    @torch.no_grad()
    def sample(self, images: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, seed: int | list[int] | None = None,
               max_new_tokens: int | None = None) -> torch.Tensor:
        """Sampled captions (B, T'), as ``generate`` returns them: each word drawn from
        softmax(logits / temperature), among the ``top_k`` likeliest or the ``top_p`` nucleus.

        ``seed``: an int makes the batch repeatable; a list of ints, one per image, gives each
        image its own random stream, so an image gets the same caption in any batch. None draws
        from the global random state.
        """
        return self.sample_from(self.encode(images), temperature, top_k, top_p, seed, max_new_tokens)

    @torch.no_grad()
    def sample_from(self, image: tuple[torch.Tensor, torch.Tensor], temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None,
                    seed: int | list[int] | None = None, max_new_tokens: int | None = None) -> torch.Tensor:
        """``sample`` for an image already encoded (``encode``'s output)."""
        if temperature <= 0:
            raise ValueError(f"sampling needs temperature > 0 (0 is generate's greedy), got {temperature}")
        return self.generate_scored_from(image, max_new_tokens, temperature, top_k, top_p, seed)[0]

    @torch.no_grad()
    def generate_scored_from(
        self, image: tuple[torch.Tensor, torch.Tensor], max_new_tokens: int | None = None,
        temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
        seed: int | list[int] | None = None, use_cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loop behind ``generate`` and ``sample`` (``velm_course.decoding.generate``): the
        tokens (B, T') and each caption's summed log-probability (B,)."""
        B, device = image[0].shape[0], image[0].device
        cache = self.new_cache() if use_cache else None
        fed = torch.zeros(B, 0, dtype=torch.long, device=device)  # (B, t) what the model has read

        def step(new: torch.Tensor) -> torch.Tensor:
            nonlocal fed
            if cache is not None:  # the cache holds the past: feed the new word only
                return ban_tokens(self.decode(image, new, cache)[:, -1], self.banned_tokens)  # (B, V)
            fed = torch.cat([fed, new], dim=1)  # (B, t + 1): no cache, so read it all again
            return ban_tokens(self.decode(image, fed)[:, -1], self.banned_tokens)  # (B, V)

        return generate(step, B, self.bos_id, self.eos_id, self.pad_id, self._steps(max_new_tokens),
                        temperature, top_k, top_p, generators(seed, device), device)

    def caption_logprobs(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log P(w_t | w_<t, image) of each token of captions ``tokens`` (B, T) as ``generate``
        writes them (no <bos>), by teacher forcing, under the decoders' rule (``banned_tokens``).

        Differentiable: self-critical training (``velm_course.multimodal.scst``) pushes on it.
        Positions after a caption's <eos> hold whatever the padding scores (-inf for a banned
        <pad>): mask them before summing (``scst.caption_mask``).
        """
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        logits = self(images, torch.cat([bos, tokens[:, :-1]], dim=1))[0]  # (B, T, V)
        return token_logprobs(logits, tokens, self.banned_tokens)  # (B, T)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam_width: int = 3, max_new_tokens: int | None = None,
                    length_penalty: float = 1.0) -> torch.Tensor:
        """Beam search (``velm_course.decoding.beam_search``): (B, T') token ids without <bos>,
        padded after <eos>. The image is encoded once and shared by its beams' KV caches."""
        return self.beam_search_from(self.encode(images), beam_width, max_new_tokens, length_penalty)

    @torch.no_grad()
    def beam_search_from(self, image: tuple[torch.Tensor, torch.Tensor], beam_width: int = 3,
                         max_new_tokens: int | None = None, length_penalty: float = 1.0) -> torch.Tensor:
        """``beam_search`` for an image already encoded (``encode``'s output)."""
        B = image[0].shape[0]
        beams = tuple(x.repeat_interleave(beam_width, dim=0) for x in image)  # (B·K, N, C), (B·K, C)
        cache = self.new_cache()

        def step(new: torch.Tensor) -> torch.Tensor:
            return ban_tokens(self.decode(beams, new, cache)[:, -1], self.banned_tokens)  # (B·K, V)

        tokens, _ = beam_search(step, lambda index: self.reorder_cache(cache, index), B, self.bos_id,
                                self.eos_id, self.pad_id, beam_width, self._steps(max_new_tokens),
                                length_penalty, device=image[0].device)
        return tokens


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


class Captioner(CaptionDecoding, nn.Module):
    def __init__(self, config: CaptionerConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        c = config.d_model
        if config.blind:
            # one learned "image" token that carries no information about the picture
            self.encoder = None
            self.blind_token = nn.Parameter(torch.zeros(1, 1, c))
        else:
            self.encoder = encoder if encoder is not None else build_image_encoder(
                config.encoder, c, config.image_size, pretrained=config.pretrained)
            if config.freeze_encoder:
                self.frozen_part().requires_grad_(False)
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
            self.frozen_part().eval()  # a frozen encoder keeps its BatchNorm statistics too
        return self

    def frozen_part(self) -> nn.Module:
        """What ``freeze_encoder`` keeps fixed: the encoder's backbone. A projection to the decoder's
        width (``Projected``, built when the backbone's width is not ``d_model``) is new, and trains."""
        return self.encoder.encoder if isinstance(self.encoder, Projected) else self.encoder

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

    def new_cache(self) -> list[KVCache]:
        """Empty KV caches for generation, one per decoder layer."""
        return self.fusion.new_caches()

    def reorder_cache(self, caches: list[KVCache], index: torch.Tensor) -> None:
        """Row i of every cache becomes the old row ``index[i]`` (beam search's survivors)."""
        for cache in caches:
            cache.reorder(index)
