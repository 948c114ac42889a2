"""Our attention against torch.nn.MultiheadAttention given the same weights."""

import pytest
import torch
from torch import nn

from velm_course.attention import MLP, KVCache, MultiHeadAttention


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


def test_kv_cache_attention_equals_full():
    torch.manual_seed(2)
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(1, 7, 8, dtype=torch.double)
    cache = KVCache()
    parts = [mha(x[:, :3], causal=True, cache=cache)]  # a prompt of 3, then 2 + 1 + 1 tokens
    parts += [mha(x[:, 3:5], causal=True, cache=cache), mha(x[:, 5:6], causal=True, cache=cache)]
    parts.append(mha(x[:, 6:], causal=True, cache=cache))
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(parts, dim=1), mha(x, causal=True))
    with pytest.raises(ValueError, match="cross-attention"):
        mha(x, memory=x, cache=KVCache())


def test_mlp_activation_and_bias_options():
    torch.manual_seed(3)
    mlp = MLP(6, activation="gelu_tanh").double()
    x = torch.randn(2, 4, 6, dtype=torch.double)
    h = mlp.fc(x)
    # GPT-2's tanh approximation of GELU, written out
    gelu_tanh = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.proj(gelu_tanh))
    assert MLP(6, bias=False).fc.bias is None and MultiHeadAttention(6, 2, bias=False).q_proj.bias is None
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(6, activation="swish")
