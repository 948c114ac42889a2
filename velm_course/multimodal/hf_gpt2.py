"""A second caption decoder: Hugging Face's GPT-2, reading the image through cross-attention.

The course's ``Captioner`` builds its decoder from the shared blocks; this one takes
``transformers.GPT2LMHeadModel`` built with ``add_cross_attention=True``, whose every block is
causal self-attention, then cross-attention to ``encoder_hidden_states``, then the MLP: the
same architecture, from the library most pretrained decoders come from. The image encoder is
the course's (``velm_course.vision.encoders``); its grid tokens (B, N, D) are projected to
GPT-2's width and handed to GPT-2 as ``encoder_hidden_states``. ``GPT2Captioner`` has the
``Captioner``'s interface (``forward``, ``encode``, ``generate``, ``sample``, ``beam_search``),
so ``pipeline.captioner_loss``, ``engine.fit``, the evaluation and SCST take either.

Decoding goes through ``velm_course.decoding`` like every generator of the course, with GPT-2's
own KV cache: a ``transformers`` ``EncoderDecoderCache`` holding the self-attention keys and
values of the words so far (growing by one word a step) and the cross-attention keys and values
of the image (computed at the first step, then reused); ``reorder_cache`` picks beam search's
surviving rows in both.

Which GPT-2, and which words (``load_gpt2``), tried in this order:

    1. a local folder written by ``save_pretrained`` (a model trained before, or copied in);
    2. ``gpt2`` (or any GPT-2 on the hub) where the hub can be reached: pretrained weights,
       with GPT-2's byte-level BPE tokenizer (50,257 tokens). Its cross-attention layers are
       new, and start from random weights;
    3. offline, a small GPT-2 with RANDOM weights over the course's word vocabulary
       (``CaptionVocab``), with a warning: no pretrained weights are passed off as such.

How captions are tokenised with GPT-2's BPE (``GPT2CaptionTokenizer``): the normalised
caption with a leading space (" a red circle": every word then gets the same tokens as in
running text, where a word follows a space), cut into BPE tokens. GPT-2 has one special token,
<|endoftext|>, which separates documents: it serves as <bos> (what GPT-2 saw before every
document) and <eos>. For padding, id 0 stands in: it is "!", which a normalised caption never
contains, and the course's data path labels id 0 as padding (``caption_targets``), so
``CaptionPairs`` and ``collate_captions`` work unchanged. The rule every decoder follows, "<pad>
and <bos> are never a next word", then bans "!" only: <bos> is <eos>, a fine next word.

Shape letters: B batch, T caption tokens, N image tokens, D encoder width, C GPT-2 width,
V vocabulary.

>>> cfg = GPT2CaptionerConfig(vocab_size=20, n_embd=32, n_layer=1, n_head=2, max_len=8)
>>> model = GPT2Captioner(cfg).eval()
>>> logits, loss = model(torch.rand(2, 3, 64, 64), torch.ones(2, 5, dtype=torch.long))
>>> tuple(logits.shape), loss is None
((2, 5, 20), True)
>>> model.generate(torch.rand(2, 3, 64, 64)).shape[0]
2
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..data.captions import BOS, EOS, PAD, normalize_caption
from ..nn import check_token_ids, init_transformer_, lm_loss
from ..vision.encoders import build_image_encoder
from .captioner import CaptionDecoding


@dataclass
class GPT2CaptionerConfig:
    vocab_size: int  # caption token ids: len(CaptionVocab), or len(tokenizer) for GPT-2's BPE
    n_embd: int = 128  # GPT-2's width C (768 for the pretrained gpt2)
    n_layer: int = 2  # GPT-2 blocks: causal self-attention, cross-attention to the image, MLP
    n_head: int = 4  # attention heads in every self- and cross-attention
    max_len: int = 24  # longest caption in tokens, <bos> and <eos> included (at most GPT-2's n_positions)
    dropout: float = 0.1  # GPT-2's dropout on embeddings, attention weights and residual branches
    image_size: int = 64  # side of the square input images
    encoder: str = "small_cnn"  # image encoder name, see velm_course.vision.encoders
    image_dim: int | None = None  # width the encoder is built with (None: the encoder's own default)
    pretrained_encoder: bool = False  # load the encoder's ImageNet weights (torchvision encoders)
    freeze_encoder: bool = False  # keep the encoder's weights fixed while training
    bos_id: int = BOS  # the decoder's first input (GPT-2's BPE: <|endoftext|>)
    eos_id: int = EOS  # "stop writing" (GPT-2's BPE: <|endoftext|> as well)
    pad_id: int = PAD  # fills finished captions (GPT-2's BPE: id 0, "!")
    blind: bool = False  # True: never look at the image (the no-vision baseline, as Captioner's)


def small_gpt2(config: GPT2CaptionerConfig) -> nn.Module:
    """A fresh ``GPT2LMHeadModel`` with cross-attention, sized by ``config``, random weights
    (Hugging Face's GPT-2 initialisation)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2Config(vocab_size=config.vocab_size, n_embd=config.n_embd, n_layer=config.n_layer,
                    n_head=config.n_head, n_positions=config.max_len, add_cross_attention=True,
                    resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                    bos_token_id=config.bos_id, eos_token_id=config.eos_id)
    return GPT2LMHeadModel(hf)


class GPT2Captioner(CaptionDecoding, nn.Module):
    """Image encoder → linear projection and LayerNorm → GPT-2 with cross-attention.

    ``gpt2``: a ``GPT2LMHeadModel`` built with ``add_cross_attention=True`` (``load_gpt2``), or
    None for a fresh small one (``small_gpt2``). Its size must agree with ``config``
    (``gpt2_config_for`` makes a config that does). Only the projection is initialised here:
    GPT-2 and an encoder passed in keep their weights.
    """

    def __init__(self, config: GPT2CaptionerConfig, gpt2: nn.Module | None = None,
                 encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.gpt2 = gpt2 if gpt2 is not None else small_gpt2(config)
        hf = self.gpt2.config
        if not hf.add_cross_attention:
            raise ValueError("the GPT-2 must be built with add_cross_attention=True to read the image")
        if (hf.vocab_size, hf.n_embd) != (config.vocab_size, config.n_embd) or config.max_len > hf.n_positions:
            raise ValueError(
                f"config (vocab_size={config.vocab_size}, n_embd={config.n_embd}, max_len={config.max_len}) "
                f"does not fit the GPT-2 given (vocab_size={hf.vocab_size}, n_embd={hf.n_embd}, "
                f"n_positions={hf.n_positions}): build the config with gpt2_config_for")
        self.bos_id, self.eos_id, self.pad_id = config.bos_id, config.eos_id, config.pad_id
        # the one rule: <pad> and <bos> are never a next word, unless <bos> is also <eos> (GPT-2's BPE)
        self.banned_tokens = tuple(sorted({config.pad_id, config.bos_id} - {config.eos_id}))
        if config.blind:
            # one learned "image" token that carries nothing about the picture: cross-attention
            # to it adds the same vector to every caption, so GPT-2 writes from the words alone
            self.encoder = None
            self.blind_token = nn.Parameter(torch.zeros(1, 1, hf.n_embd))
            return
        self.encoder = encoder if encoder is not None else build_image_encoder(
            config.encoder, config.image_dim, config.image_size, pretrained=config.pretrained_encoder)
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
        self.image_proj = nn.Linear(self.encoder.out_dim, hf.n_embd)  # D -> C: GPT-2's width
        self.ln_image = nn.LayerNorm(hf.n_embd)
        init_transformer_([self.image_proj, self.ln_image], hf.n_layer)

    def train(self, mode: bool = True) -> GPT2Captioner:
        super().train(mode)
        if self.encoder is not None and self.config.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its BatchNorm statistics too
        return self

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image as GPT-2 reads it: grid tokens (B, N, C) and a pooled vector (B, C), both
        projected to GPT-2's width and layer-normalised. GPT-2 attends to the grid only.

        The blind model gets its one learned token as both (N = 1), whatever the picture.
        """
        if self.encoder is None:
            token = self.blind_token.expand(images.shape[0], -1, -1)  # (B, 1, C)
            return token, token[:, 0]
        grid, pooled = self.encoder(images)  # (B, N, D), (B, D)
        return self.ln_image(self.image_proj(grid)), self.ln_image(self.image_proj(pooled))  # (B, N, C), (B, C)

    def new_cache(self):
        """An empty GPT-2 cache: self-attention keys and values per layer, and the image's
        cross-attention keys and values (filled at the first step, then reused)."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return EncoderDecoderCache(DynamicCache(), DynamicCache())

    def reorder_cache(self, cache, index: torch.Tensor) -> None:
        """Row i of the cache becomes the old row ``index[i]`` (beam search's survivors)."""
        cache.reorder_cache(index)

    def decode(self, image: tuple[torch.Tensor, torch.Tensor], idx: torch.Tensor, cache=None) -> torch.Tensor:
        """Next-token logits (B, T, V) for caption prefixes idx (B, T), given ``encode``'s output.

        With ``cache`` (``new_cache()``), idx holds only the tokens after those already cached.
        """
        past = 0 if cache is None else cache.get_seq_length()
        check_token_ids(idx, self.config.vocab_size, self.config.max_len, past)
        # the cache goes second, by position: transformers 4 calls it past_key_values, 5 cache
        out = self.gpt2(idx, cache, encoder_hidden_states=image[0], use_cache=cache is not None)
        return out.logits  # (B, T, V)

    def forward(
        self, images: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: logits for every position, and the mean cross-entropy if targets given.

        ``targets`` is ``idx`` shifted left by one, with ``IGNORE_INDEX`` after the caption's end
        (the course's loss, not GPT-2's own, which would shift the labels a second time).
        """
        logits = self.decode(self.encode(images), idx)
        return logits, lm_loss(logits, targets)


class GPT2CaptionTokenizer:
    """GPT-2's BPE tokenizer with ``CaptionVocab``'s interface, so the course's data path and
    evaluation take it as they take a vocabulary (see the module docstring for the scheme).

    ``encode_batch(captions, max_len)`` counts ``max_len`` in BPE tokens, not words:
    ``max_tokens(captions)`` gives the longest caption's count.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer  # a transformers GPT-2 tokenizer (byte-level BPE)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-text token to start and end captions with")
        self.bos_id = self.eos_id = tokenizer.eos_token_id  # <|endoftext|>
        self.pad_id = PAD  # id 0: the data path's padding label
        if normalize_caption(tokenizer.decode([PAD])) or PAD == self.eos_id:
            raise ValueError(f"id {PAD} ({tokenizer.decode([PAD])!r}) may occur in a caption, so it cannot "
                             "stand for padding")

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, caption: str) -> list[int]:
        """BPE ids of the normalised caption, with a leading space, without <bos>/<eos>."""
        return self.tokenizer.encode(" " + normalize_caption(caption))

    def decode(self, ids) -> str:
        """The text up to the first <eos>; padding dropped."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i != self.pad_id:
                kept.append(i)
        return self.tokenizer.decode(kept).strip()

    def max_tokens(self, captions) -> int:
        """The longest caption's length in BPE tokens (``encode_batch``'s ``max_len``)."""
        return max(len(self.encode(c)) for c in captions)

    def encode_batch(self, captions: list[str], max_len: int) -> torch.Tensor:
        """A (len(captions), max_len + 2) tensor: <bos> tokens <eos> <pad>..., as
        ``CaptionVocab.encode_batch`` with ``max_len`` in tokens; a longer caption raises."""
        out = torch.full((len(captions), max_len + 2), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = self.encode(caption)
            if len(ids) > max_len:
                raise ValueError(f"caption has {len(ids)} tokens, more than max_len={max_len}: {caption!r}")
            out[row, : len(ids) + 2] = torch.tensor([self.bos_id, *ids, self.eos_id])
        return out


@dataclass
class LoadedGPT2:
    model: nn.Module  # a transformers.GPT2LMHeadModel with cross-attention
    tokenizer: object  # GPT2CaptionTokenizer (BPE), or the CaptionVocab of a word-level GPT-2
    source: str  # where the weights came from: "hub:<name>", "local:<path>" or "random"

    @property
    def pretrained(self) -> bool:
        return self.source != "random"


def _from_pretrained(path_or_name: str, source: str, vocab) -> LoadedGPT2:
    """A GPT2LMHeadModel with cross-attention and its tokenizer, from a hub name or a folder.

    A folder without tokenizer files holds a GPT-2 over the course's words: ``vocab`` is its
    tokenizer. A GPT-2 saved without cross-attention gets new, randomly initialised
    cross-attention layers (``transformers`` says which weights are new).
    """
    from transformers import AutoTokenizer, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load clutters notebooks and logs
    try:
        model = GPT2LMHeadModel.from_pretrained(str(path_or_name), add_cross_attention=True)
        local = Path(path_or_name).is_dir()
        has_tokenizer = not local or any((Path(path_or_name) / f).is_file()
                                         for f in ("tokenizer.json", "vocab.json"))
        tokenizer = GPT2CaptionTokenizer(AutoTokenizer.from_pretrained(str(path_or_name))) if has_tokenizer else vocab
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if tokenizer is None:
        raise ValueError(f"{path_or_name} holds no tokenizer: pass the vocabulary its GPT-2 was trained with")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the GPT-2 only {model.config.vocab_size}")
    return LoadedGPT2(model, tokenizer, source)


def load_gpt2(name: str = "gpt2", vocab=None, allow_fallback: bool = True,
              config: GPT2CaptionerConfig | None = None) -> LoadedGPT2:
    """The best GPT-2 this machine can have for captioning (see the module docstring).

    ``name`` is a folder written by ``save_pretrained`` or a hub name. Offline, the fallback is
    a small GPT-2 of random weights over ``vocab`` (a ``CaptionVocab``), sized by ``config``
    (default: ``GPT2CaptionerConfig``'s defaults), with a warning; ``allow_fallback=False``
    raises instead. The hub is probed once with a 2-second connection attempt.
    """
    from ..text.hf_encoder import local_or_hub

    loaded, problems = local_or_hub(name, lambda path, source: _from_pretrained(path, source, vocab))
    if loaded is not None:
        return loaded
    if not allow_fallback:
        raise RuntimeError(f"could not load {name}: {'; '.join(problems)}")
    if vocab is None:
        raise RuntimeError(f"could not load {name}: {'; '.join(problems)}; pass vocab to continue with a "
                           "small GPT-2 of random weights over its words")
    warnings.warn(f"{'; '.join(problems)}: continuing with a small GPT-2 of RANDOM weights over the "
                  f"caption words instead of {name}", stacklevel=2)
    config = replace(config or GPT2CaptionerConfig(vocab_size=len(vocab)), vocab_size=len(vocab),
                     bos_id=BOS, eos_id=EOS, pad_id=PAD)
    return LoadedGPT2(small_gpt2(config), vocab, "random")


def gpt2_config_for(loaded: LoadedGPT2, config: GPT2CaptionerConfig | None = None) -> GPT2CaptionerConfig:
    """``config`` (default: the defaults) with GPT-2's sizes, dropout and the tokenizer's special
    ids, so that ``GPT2Captioner(gpt2_config_for(loaded, cfg), loaded.model)`` fits together.
    ``max_len`` is kept unless GPT-2 has fewer positions."""
    hf, tok = loaded.model.config, loaded.tokenizer
    config = config or GPT2CaptionerConfig(vocab_size=hf.vocab_size)
    ids = ({"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id}
           if isinstance(tok, GPT2CaptionTokenizer) else {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD})
    return replace(config, vocab_size=hf.vocab_size, n_embd=hf.n_embd, n_layer=hf.n_layer, n_head=hf.n_head,
                   max_len=min(config.max_len, hf.n_positions), dropout=hf.resid_pdrop, **ids)
