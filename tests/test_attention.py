"""Our attention against torch.nn.MultiheadAttention given the same weights."""

import pytest
import torch
from torch import nn

from velm_course.attention import MLP, MultiHeadAttention


def reference(ours: MultiHeadAttention, d_model: int, n_head: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d_model, n_head, batch_first=True).double()
    with torch.no_grad():
        # torch packs q, k, v projections as one (3C, C) matrix; ours packs k, v together
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.kv_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.kv_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch(causal):
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4).double()
    ref = reference(ours, 16, 4)
    x = torch.randn(3, 7, 16, dtype=torch.double)
    mask = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x, causal=causal), expected, rtol=1e-10, atol=1e-10)


def test_cross_attention_matches_torch():
    torch.manual_seed(1)
    ours = MultiHeadAttention(16, 2).double()
    ref = reference(ours, 16, 2)
    x, memory = torch.randn(2, 5, 16, dtype=torch.double), torch.randn(2, 9, 16, dtype=torch.double)
    expected, _ = ref(x, memory, memory, need_weights=False)
    torch.testing.assert_close(ours(x, memory=memory), expected, rtol=1e-10, atol=1e-10)


def test_causal_attention_ignores_the_future():
    torch.manual_seed(2)
    attn = MultiHeadAttention(8, 2)
    x = torch.randn(1, 6, 8)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8)  # change only positions 4 and 5
    torch.testing.assert_close(attn(x, causal=True)[:, :4], attn(y, causal=True)[:, :4])


def test_bad_head_count_and_mlp_shape():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    assert MLP(8)(torch.randn(2, 3, 8)).shape == (2, 3, 8)
