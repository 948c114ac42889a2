"""Shared neural-network parts: attention, the Transformer block, the token loss, initialisation."""

from .attention import (
    KVCache,
    MultiHeadAttention,
    attention,
    attention_weights,
    causal_mask,
    softmax,
)
from .block import ACTIVATIONS, MLP, Block, BlockConfig, BlockWeights
from .init import init_transformer_
from .loss import IGNORE_INDEX, check_token_ids, lm_loss, lm_objective

__all__ = [
    "KVCache", "MultiHeadAttention", "attention", "attention_weights", "causal_mask", "softmax",
    "ACTIVATIONS", "MLP", "Block", "BlockConfig", "BlockWeights", "init_transformer_",
    "IGNORE_INDEX", "check_token_ids", "lm_loss", "lm_objective",
]
