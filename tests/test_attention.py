"""Attention and the shared Transformer block (velm_course.nn): the teaching formula against
torch's fused kernel, our multi-head module against torch.nn.MultiheadAttention given the
same weights, the KV cache and the returned weights against recomputation, and the block with
cross-attention against the same sums written out with torch's modules."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from velm_course.nn.attention import (
    KVCache,
    MultiHeadAttention,
    attention,
    attention_weights,
    causal_mask,
    softmax,
)
from velm_course.nn.block import MLP, Block, BlockConfig, BlockWeights

DOUBLE = dict(dtype=torch.double)


def reference(ours: MultiHeadAttention, d_model: int, n_head: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d_model, n_head, batch_first=True).double()
    with torch.no_grad():
        # torch packs q, k, v projections as one (3C, C) matrix; ours packs k, v together
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.kv_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.kv_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref


def random_mha(d_model: int, n_head: int, seed: int) -> MultiHeadAttention:
    """Random weights and biases (nn.Linear's default init, plus non-zero biases everywhere)."""
    torch.manual_seed(seed)
    mha = MultiHeadAttention(d_model, n_head).double()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return mha


def lower_right(T: int, S: int) -> torch.Tensor:
    """(T, S): the last T of S positions are the queries; query i, at position S - T + i,
    sees keys 0 .. S - T + i."""
    return torch.arange(S)[None, :] <= (S - T + torch.arange(T))[:, None]


def padding_mask(lengths: list[int], S: int) -> torch.Tensor:
    """(B, 1, 1, S) booleans, True on the first lengths[b] keys of row b."""
    return (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]


# --- the teaching formula --------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_explicit_attention_equals_torch_kernel(causal):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, 8, **DOUBLE)  # (B, nh, T, hs)
    k, v = torch.randn(2, 3, 7, 8, **DOUBLE), torch.randn(2, 3, 7, 8, **DOUBLE)
    if causal:  # square for is_causal's meaning to agree
        k, v = k[:, :, :5], v[:, :, :5]
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(attention(q, k, v, causal=causal), expected, rtol=1e-12, atol=1e-12)
    # an explicit boolean mask, and the softmax against torch's
    mask = torch.rand(5, k.shape[2]) > 0.3
    mask[:, 0] = True  # every query keeps at least one key
    torch.testing.assert_close(
        attention(q, k, v, mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    )
    s = torch.randn(4, 9, **DOUBLE) * 30
    torch.testing.assert_close(softmax(s), torch.softmax(s, dim=-1))


@pytest.mark.parametrize("seed", range(4))
def test_explicit_attention_with_random_masks_equals_torch_kernel(seed):
    g = torch.Generator().manual_seed(seed)
    B, nh, T, S, hs = 3, 2, 4, 9, 8
    q = torch.randn(B, nh, T, hs, generator=g, **DOUBLE) * 2
    k, v = torch.randn(B, nh, S, hs, generator=g, **DOUBLE), torch.randn(B, nh, S, hs, generator=g, **DOUBLE)
    # a full (B, nh, T, S) mask, different for every batch row, head and query
    mask = torch.rand(B, nh, T, S, generator=g) > 0.5
    mask[..., 0] = True
    torch.testing.assert_close(attention(q, k, v, mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=1e-12, atol=1e-12)
    # a key-padding mask (B, 1, 1, S), broadcast over heads and queries
    pad = padding_mask([9, 3, 6], S)
    torch.testing.assert_close(attention(q, k, v, mask=pad),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=pad), rtol=1e-12, atol=1e-12)
    # causal with more keys than queries (a KV cache): aligned bottom-right, as torch's
    # causal_lower_right bias, and combined with padding
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, S))
    torch.testing.assert_close(attention(q, k, v, causal=True), expected, rtol=1e-12, atol=1e-12)
    both = pad & lower_right(T, S)
    torch.testing.assert_close(attention(q, k, v, mask=pad, causal=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=both), rtol=1e-12, atol=1e-12)
    w = attention_weights(q, k, mask=pad, causal=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, nh, T, **DOUBLE))
    assert bool((w[~both.expand_as(w)] == 0).all())


def test_a_query_that_sees_nothing_gets_zero_like_the_torch_kernel():
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=g, **DOUBLE) for _ in range(3))
    mask = torch.rand(2, 2, 4, 4, generator=g) > 0.4
    mask[..., 0] = True
    mask[0, 1, 2] = False  # query 2 of head 1 of the first example may look at nothing
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask=mask), expected, rtol=1e-12, atol=1e-12)
    w = attention_weights(q, k, mask=mask)
    assert bool((w[0, 1, 2] == 0).all()) and not w.isnan().any()


def test_causal_mask_is_bottom_right_aligned():
    assert causal_mask(3, 3).tolist() == torch.ones(3, 3, dtype=torch.bool).tril().tolist()
    for T, S in [(1, 4), (2, 5), (4, 4)]:
        assert torch.equal(causal_mask(T, S), lower_right(T, S))


def test_softmax_is_stable_and_nan_on_an_all_masked_row():
    s = torch.tensor([[1000.0, 1000.0 + torch.log(torch.tensor(3.0)).item()], [-1000.0, -1000.0]])
    torch.testing.assert_close(softmax(s), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    assert bool(softmax(torch.full((1, 3), float("-inf"))).isnan().all())


# --- the multi-head module -------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_torch(causal):
    ours = random_mha(16, 4, seed=0)
    ref = reference(ours, 16, 4)
    x = torch.randn(3, 7, 16, **DOUBLE)
    mask = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1) if causal else None
    expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(ours(x, causal=causal), expected, rtol=1e-10, atol=1e-10)


def test_cross_attention_matches_torch():
    ours = random_mha(16, 2, seed=1)
    ref = reference(ours, 16, 2)
    x, memory = torch.randn(2, 5, 16, **DOUBLE), torch.randn(2, 9, 16, **DOUBLE)
    expected, _ = ref(x, memory, memory, need_weights=False)
    torch.testing.assert_close(ours(x, memory=memory), expected, rtol=1e-10, atol=1e-10)
    # the weights torch returns (averaged over heads) and ours, per head
    y, w = ours(x, memory=memory, need_weights=True)
    _, ref_w = ref(x, memory, memory, need_weights=True, average_attn_weights=False)
    assert w.shape == (2, 2, 5, 9)
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask_matches_torch_and_hides_the_padding(causal):
    ours = random_mha(16, 4, seed=5)
    ref = reference(ours, 16, 4)
    x = torch.randn(3, 6, 16, **DOUBLE)
    lengths = [6, 2, 4]
    mask = padding_mask(lengths, 6)  # True: a real token
    attn_mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1) if causal else None
    expected, _ = ref(x, x, x, key_padding_mask=~mask[:, 0, 0], attn_mask=attn_mask, need_weights=False)
    y = ours(x, causal=causal, mask=mask)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    # whatever the padded positions hold, the real ones' outputs do not change
    changed = x.clone()
    for b, n in enumerate(lengths):
        changed[b, n:] = torch.randn(6 - n, 16, **DOUBLE)
    y2 = ours(changed, causal=causal, mask=mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(y2[b, :n], y[b, :n], rtol=1e-12, atol=1e-12)
    # the written-out path agrees, and gives masked keys no weight
    y3, w = ours(x, causal=causal, mask=mask, need_weights=True)
    torch.testing.assert_close(y3, y, rtol=1e-10, atol=1e-10)
    for b, n in enumerate(lengths):
        assert bool((w[b, ..., n:] == 0).all())


def test_causal_attention_ignores_the_future():
    attn = random_mha(8, 2, seed=2)
    x = torch.randn(1, 6, 8, **DOUBLE)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8, **DOUBLE)  # change only positions 4 and 5
    torch.testing.assert_close(attn(x, causal=True)[:, :4], attn(y, causal=True)[:, :4])
    assert not torch.allclose(attn(x)[:, :4], attn(y)[:, :4])  # without the mask they do see it


@pytest.mark.parametrize("memory,causal", [(False, False), (False, True), (True, False)])
def test_need_weights_gives_the_fused_output_and_softmax_rows(memory, causal):
    mha = random_mha(12, 3, seed=3)
    x = torch.randn(2, 6, 12, **DOUBLE)
    mem = torch.randn(2, 10, 12, **DOUBLE) if memory else None
    fused = mha(x, memory=mem, causal=causal)
    y, w = mha(x, memory=mem, causal=causal, need_weights=True)
    S = 10 if memory else 6
    assert w.shape == (2, 3, 6, S)
    torch.testing.assert_close(y, fused, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6, **DOUBLE))
    assert bool((w >= 0).all())
    if causal:
        assert bool((w[..., ~causal_mask(6, 6)] == 0).all())
    # the weights are those of the formula with the module's own projections
    q = mha.q_proj(x).view(2, 6, 3, 4).transpose(1, 2)
    k = mha.kv_proj(x if mem is None else mem)[..., :12].view(2, S, 3, 4).transpose(1, 2)
    torch.testing.assert_close(w, attention_weights(q, k, causal=causal), rtol=1e-12, atol=1e-12)


def test_module_attention_is_the_explicit_formula():
    mha = random_mha(12, 3, seed=1)
    x = torch.randn(2, 6, 12, **DOUBLE)
    q = mha.q_proj(x).view(2, 6, 3, 4).transpose(1, 2)
    k, v = (t.view(2, 6, 3, 4).transpose(1, 2) for t in mha.kv_proj(x).split(12, dim=2))
    y = attention(q, k, v, causal=True).transpose(1, 2).reshape(2, 6, 12)
    torch.testing.assert_close(mha(x, causal=True), mha.out_proj(y))


def test_kv_cache_attention_equals_full():
    mha = random_mha(8, 2, seed=2)
    x = torch.randn(1, 7, 8, **DOUBLE)
    cache = KVCache()
    parts = [mha(x[:, :3], causal=True, cache=cache)]  # a prompt of 3, then 2 + 1 + 1 tokens
    parts += [mha(x[:, 3:5], causal=True, cache=cache), mha(x[:, 5:6], causal=True, cache=cache)]
    parts.append(mha(x[:, 6:], causal=True, cache=cache))
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat(parts, dim=1), mha(x, causal=True))
    with pytest.raises(ValueError, match="cross-attention"):
        mha(x, memory=x, cache=KVCache())


def test_kv_cache_with_padding_and_weights_equals_full():
    """Batched generation from left-padded prompts: the cache, the padding mask and the
    returned weights together give what one causal pass over the whole sequence gives."""
    mha = random_mha(16, 4, seed=7)
    B, T = 3, 9
    x = torch.randn(B, T, 16, **DOUBLE)
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[1, :2] = keep[2, :4] = False  # left padding of 2 and 4 tokens
    full, full_w = mha(x, causal=True, mask=keep[:, None, None, :], need_weights=True)
    cache, parts, weights = KVCache(), [], []
    for start, stop in [(0, 5), (5, 6), (6, 8), (8, 9)]:
        m = keep[:, None, None, :stop]  # every key cached so far, and the new ones
        y, w = mha(x[:, start:stop], causal=True, mask=m, cache=cache, need_weights=True)
        torch.testing.assert_close(y, mha(x[:, start:stop], causal=True, mask=m, cache=_copy(cache, stop - start)))
        parts.append(y)
        weights.append(F.pad(w, (0, T - stop)))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat(weights, dim=2), full_w, rtol=1e-10, atol=1e-10)
    # reorder keeps the chosen batch rows, e.g. the surviving beams
    cache.reorder(torch.tensor([2, 0]))
    assert cache.k.shape == (2, 4, T, 4)


def _copy(cache: KVCache, drop_last: int) -> KVCache:
    """A cache holding what ``cache`` held before its last ``drop_last`` tokens were added."""
    c = KVCache()
    c.append(cache.k[:, :, :-drop_last], cache.v[:, :, :-drop_last])
    return c


def test_bad_head_count_and_mlp_shape():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    assert MLP(8)(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    assert MLP(8).fc.out_features == 32 and MLP(8, hidden=5).fc.out_features == 5


def test_mlp_activation_and_bias_options():
    torch.manual_seed(3)
    mlp = MLP(6, activation="gelu_tanh").double()
    x = torch.randn(2, 4, 6, **DOUBLE)
    h = mlp.fc(x)
    # GPT-2's tanh approximation of GELU, written out
    gelu_tanh = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.proj(gelu_tanh))
    # and the exact GELU, x * Phi(x), by default
    exact = MLP(6).double()
    h = exact.fc(x)
    torch.testing.assert_close(exact(x), exact.proj(h * 0.5 * (1 + torch.erf(h / 2**0.5))))
    assert MLP(6, bias=False).fc.bias is None and MultiHeadAttention(6, 2, bias=False).q_proj.bias is None
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(6, activation="swish")


# --- the block -------------------------------------------------------------------------------


def random_block(cfg: BlockConfig, seed: int) -> Block:
    torch.manual_seed(seed)
    block = Block(cfg).double().eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if ".ln" in "." + name and name.endswith("weight")
                    else 0.3 * torch.randn_like(p))
    return block


def test_block_with_cross_attention_equals_the_sum_written_out():
    cfg = BlockConfig(d_model=16, n_head=4, mlp_hidden=24, causal=True, cross_attention=True, ln_eps=1e-6)
    block = random_block(cfg, seed=8)
    self_ref, cross_ref = reference(block.attn, 16, 4), reference(block.cross_attn, 16, 4)
    x, memory = torch.randn(2, 5, 16, **DOUBLE), torch.randn(2, 7, 16, **DOUBLE)
    memory_mask = padding_mask([7, 3], 7)

    def ln(layer, t):  # LayerNorm written out with the block's own gain and shift
        return F.layer_norm(t, (16,), layer.weight, layer.bias, eps=1e-6)

    future = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    h = ln(block.ln_1, x)
    expected = x + self_ref(h, h, h, attn_mask=future, need_weights=False)[0]
    h = ln(block.ln_cross, expected)
    expected = expected + cross_ref(h, memory, memory, key_padding_mask=~memory_mask[:, 0, 0],
                                    need_weights=False)[0]
    h = block.mlp.fc(ln(block.ln_2, expected))
    expected = expected + block.mlp.proj(F.gelu(h))
    y = block(x, memory=memory, memory_mask=memory_mask)
    assert y.shape == (2, 5, 16)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    # with the weights: the same output, a causal self-attention map and a cross map
    y2, w = block(x, memory=memory, memory_mask=memory_mask, need_weights=True)
    assert isinstance(w, BlockWeights)
    torch.testing.assert_close(y2, y, rtol=1e-10, atol=1e-10)
    assert w.self_attn.shape == (2, 4, 5, 5) and w.cross_attn.shape == (2, 4, 5, 7)
    assert bool((w.self_attn[..., future] == 0).all()) and bool((w.cross_attn[1, ..., 3:] == 0).all())
    torch.testing.assert_close(w.cross_attn.sum(-1), torch.ones(2, 4, 5, **DOUBLE))
    # the image tokens matter, the masked ones do not
    other = memory.clone()
    other[1, 3:] = torch.randn(4, 16, **DOUBLE)
    torch.testing.assert_close(block(x, memory=other, memory_mask=memory_mask)[1], y[1])
    assert not torch.allclose(block(x, memory=torch.randn_like(memory), memory_mask=memory_mask), y)


def test_block_cache_equals_full_and_memory_must_match_the_build():
    block = random_block(BlockConfig(d_model=8, n_head=2, causal=True, cross_attention=True), seed=9)
    x, memory = torch.randn(2, 6, 8, **DOUBLE), torch.randn(2, 4, 8, **DOUBLE)
    cache = KVCache()
    steps = [block(x[:, :3], memory=memory, cache=cache)] + [
        block(x[:, t:t + 1], memory=memory, cache=cache) for t in range(3, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), block(x, memory=memory), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="cross_attention"):
        block(x)
    plain = Block(BlockConfig(d_model=8, n_head=2))
    assert plain.cross_attn is None
    with pytest.raises(ValueError, match="cross_attention"):
        plain(x.float(), memory=memory.float())
    _, w = plain(x.float(), need_weights=True)
    assert w.cross_attn is None and w.self_attn.shape == (2, 2, 6, 6)


def test_non_causal_block_sees_the_whole_sequence():
    block = random_block(BlockConfig(d_model=8, n_head=2, causal=False), seed=10)
    causal = random_block(BlockConfig(d_model=8, n_head=2, causal=True), seed=10)
    x = torch.randn(1, 5, 8, **DOUBLE)
    changed = x.clone()
    changed[:, -1] = torch.randn(8, **DOUBLE)  # (not a constant shift: LayerNorm removes those)
    assert not torch.allclose(block(x)[:, 0], block(changed)[:, 0])
    torch.testing.assert_close(causal(x)[:, :-1], causal(changed)[:, :-1])


def test_block_config_is_checked():
    with pytest.raises(ValueError, match="multiple of n_head"):
        BlockConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="dropout"):
        BlockConfig(d_model=8, n_head=2, dropout=1.0)
    block = Block(BlockConfig(d_model=8, n_head=2, bias=False, mlp_hidden=12))
    assert block.ln_1.bias is None and block.attn.kv_proj.bias is None and block.mlp.fc.out_features == 12
