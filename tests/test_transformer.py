"""Our GPT (a stack of the shared ``velm_course.nn.Block``) against Hugging Face's GPT-2 given
the same weights, the KV cache against recomputation, and BERT's masking statistics. The
attention formula and the block themselves are tested in test_attention.py."""

import pytest
import torch

from velm_course.nn import IGNORE_INDEX, Block, BlockConfig, KVCache
from velm_course.text.bert import BertConfig, BertMLM, mask_tokens
from velm_course.text.gpt import GPT, GPTConfig, convert_hf_gpt2_state_dict, gpt_config_from_hf

transformers = pytest.importorskip("transformers")


def small_hf_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    # GPT-2's own init (std 0.02, zero biases, unit LayerNorms) would hide mistakes: a swapped
    # bias or the wrong GELU changes the logits by less than 1e-5. Random everything instead.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if ".ln" in name and name.endswith("weight")
                    else 0.1 * torch.randn_like(p))
    return hf


def test_gpt_matches_hf_gpt2():
    hf = small_hf_gpt2()
    ours = GPT.from_hf(hf).eval()
    assert ours.config.activation == "gelu_tanh"
    idx = torch.randint(0, 100, (3, 64))
    with torch.no_grad():
        expected = hf(idx, labels=idx)
        logits, _ = ours(idx)
        # HF shifts the labels inside; ours takes targets already shifted by one
        _, loss = ours(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, expected.loss, rtol=1e-5, atol=1e-5)
    # the exact GELU is a different function: the conversion must not silently ignore it
    ours.config.activation = "gelu"
    exact = GPT(ours.config).eval()
    exact.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (exact(idx)[0] - expected.logits).abs().max() > 1e-4


def test_gpt_is_a_stack_of_shared_blocks_matching_hf_layer_by_layer():
    """In float64, every block's output against HF's hidden states: a near miss in one layer
    cannot hide behind float32 rounding or be repaired by a later one."""
    hf = small_hf_gpt2(seed=2).double()
    config = gpt_config_from_hf(hf.config)
    assert config.block_config() == BlockConfig(d_model=32, n_head=2, activation="gelu_tanh", causal=True)
    ours = GPT(config).double().eval()
    ours.load_state_dict(convert_hf_gpt2_state_dict(hf.state_dict(), config), strict=True)
    assert all(type(b) is Block and b.causal and b.cross_attn is None for b in ours.blocks)
    outputs = []
    for block in ours.blocks:
        block.register_forward_hook(lambda mod, inp, out: outputs.append(out))
    idx = torch.randint(0, 100, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx, output_hidden_states=True)
        logits, _ = ours(idx)
    # hidden_states: the embeddings, then each block's output (the last one after ln_f)
    torch.testing.assert_close(outputs[0], expected.hidden_states[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.ln_f(outputs[1]), expected.hidden_states[2], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits, expected.logits, rtol=1e-10, atol=1e-10)
    # HF's c_attn holds [q k v] as (C, 3C) columns: ours keeps q apart from (k, v)
    sd = convert_hf_gpt2_state_dict(hf.state_dict(), config)
    c_attn = hf.state_dict()["transformer.h.1.attn.c_attn.weight"]
    assert torch.equal(torch.cat([sd["blocks.1.attn.q_proj.weight"], sd["blocks.1.attn.kv_proj.weight"]]), c_attn.t())


def test_from_pretrained_local_folder_and_missing(tmp_path):
    hf = small_hf_gpt2(seed=5)
    hf.save_pretrained(tmp_path / "tiny")
    ours = GPT.from_pretrained(tmp_path / "tiny").eval()
    idx = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], hf(idx).logits, rtol=0, atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="could not load GPT-2 weights"):
        GPT.from_pretrained(tmp_path / "empty")


def test_unsupported_hf_config_is_refused():
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10, n_positions=8,
                                  activation_function="relu")
    with pytest.raises(ValueError, match="activation"):
        GPT.from_hf(transformers.GPT2LMHeadModel(cfg))
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10, n_positions=8, n_inner=16)
    with pytest.raises(ValueError, match="n_inner"):
        GPT.from_hf(transformers.GPT2LMHeadModel(cfg))


def test_cached_generation_equals_recomputation():
    torch.manual_seed(3)
    model = GPT(GPTConfig(block_size=12, vocab_size=30, n_layer=2, n_head=2, n_embd=16)).double().eval()
    prompt = torch.randint(0, 30, (2, 4))
    # 14 new tokens run past block_size = 12: the cropped-context fallback is exercised too
    cached = model.generate(prompt, 14, temperature=0, use_cache=True)
    full = model.generate(prompt, 14, temperature=0, use_cache=False)
    assert torch.equal(cached, full)
    # and against a plain loop over forward()
    expected = prompt
    for _ in range(14):
        logits, _ = model(expected[:, -12:])
        expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, expected)
    # the cached logits themselves, token by token
    caches = [KVCache() for _ in model.blocks]
    seq = expected[:, :12]
    steps = [model(seq[:, :5], caches=caches)[0]] + [model(seq[:, t:t + 1], caches=caches)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(seq)[0])
    # sampling with top-k is reproducible and the same with or without the cache
    a = model.generate(prompt, 6, temperature=0.8, top_k=5, seed=11)
    assert torch.equal(a, model.generate(prompt, 6, temperature=0.8, top_k=5, seed=11, use_cache=False))


def test_context_too_long_and_bad_config():
    model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="longer than block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    cache = KVCache()
    cache.append(torch.zeros(1, 1, 7, 8), torch.zeros(1, 1, 7, 8))  # 7 tokens already cached
    with pytest.raises(ValueError, match="context of 9 tokens is longer than block_size=8"):
        model(torch.zeros(1, 2, dtype=torch.long), caches=[cache])
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation="relu")
    with pytest.raises(ValueError, match="block_size"):
        GPTConfig(block_size=0)
    with pytest.raises(ValueError, match="dropout"):
        BertConfig(dropout=1.0)


def test_mask_tokens_rates():
    vocab, mask_id, pad_id = 1000, 1, 0
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(2, vocab, (100, 1000), generator=gen)
    idx[:, -100:] = pad_id  # padding: a special token
    inputs, labels = mask_tokens(idx, vocab, mask_id, special_ids=[pad_id], p=0.15, generator=gen)
    ordinary = idx != pad_id
    selected = labels != IGNORE_INDEX
    assert not bool(selected[~ordinary].any())  # special tokens are never selected
    assert torch.equal(inputs[~ordinary], idx[~ordinary])
    assert torch.equal(labels[selected], idx[selected])
    assert torch.equal(inputs[~selected], idx[~selected])  # unselected tokens are untouched
    rate = selected.sum().item() / ordinary.sum().item()
    assert abs(rate - 0.15) < 0.005
    n = selected.sum().item()
    masked = (inputs[selected] == mask_id).sum().item() / n
    kept = (inputs[selected] == idx[selected]).sum().item() / n
    randomised = 1 - masked - kept
    assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1) < 0.015 and abs(randomised - 0.1) < 0.015
    replaced = inputs[selected & (inputs != mask_id) & (inputs != idx)]
    assert bool((replaced >= 2).all())  # random replacements are ordinary tokens
    # the generator makes it reproducible
    again = mask_tokens(idx, vocab, mask_id, [pad_id], generator=torch.Generator().manual_seed(3))
    assert torch.equal(again[0], mask_tokens(idx, vocab, mask_id, [pad_id], generator=torch.Generator().manual_seed(3))[0])


def test_mask_tokens_bad_input():
    idx = torch.randint(2, 10, (2, 5))
    with pytest.raises(ValueError, match="p must be"):
        mask_tokens(idx, 10, 1, p=1.5)
    with pytest.raises(ValueError, match="mask_id"):
        mask_tokens(idx, 10, 10)
    with pytest.raises(ValueError, match="outside"):
        mask_tokens(idx + 5, 10, 1)
    with pytest.raises(ValueError, match="special_ids"):
        mask_tokens(idx, 10, 1, special_ids=[12])
    with pytest.raises(ValueError, match="nothing is left"):
        mask_tokens(torch.zeros(2, 3, dtype=torch.long), 3, 1, special_ids=[0, 2])


def test_bert_is_bidirectional_and_scores_masked_positions():
    torch.manual_seed(4)
    cfg = BertConfig(block_size=16, vocab_size=40, n_layer=2, n_head=2, n_embd=16)
    bert = BertMLM(cfg).double().eval()
    gpt = GPT(cfg).double().eval()
    idx = torch.randint(2, 40, (2, 10))
    changed = idx.clone()
    changed[:, -1] = (idx[:, -1] + 1) % 40
    # changing the last token changes BERT's predictions at the first position, not GPT's
    assert not torch.allclose(bert(idx)[0][:, 0], bert(changed)[0][:, 0])
    torch.testing.assert_close(gpt(idx)[0][:, :-1], gpt(changed)[0][:, :-1])
    inputs, labels = mask_tokens(idx, 40, mask_id=1, special_ids=[0], p=0.3,
                                 generator=torch.Generator().manual_seed(0))
    logits, loss = bert(inputs, labels)
    sel = labels != IGNORE_INDEX
    expected = -torch.log_softmax(logits[sel], dim=-1).gather(1, labels[sel][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="longer than block_size"):
        bert(torch.zeros(1, 17, dtype=torch.long))


def test_mlm_batches_mask_random_windows_and_resume_by_step():
    from velm_course.text.bert import mlm_batches

    data = torch.arange(2000) % 37 + 1  # ids 1..37; 0 is [MASK]
    batches = mlm_batches(data, batch_size=16, block_size=32, vocab_size=38, mask_id=0, seed=5)
    stream = iter(batches(0))
    first = [next(stream) for _ in range(3)]
    again = next(iter(batches(2)))  # resuming at step 2 gives step 2's batch
    assert torch.equal(again["idx"], first[2]["idx"]) and torch.equal(again["targets"], first[2]["targets"])
    for batch in first:
        labels, inputs = batch["targets"], batch["idx"]
        selected = labels != -100
        # every window is a run of consecutive ids of data (mod 37): rebuild it from the labels' positions
        assert 0.08 < selected.float().mean() < 0.22
        # unselected positions are untouched, so consecutive unselected ids follow data's pattern
        both = ~selected[:, 1:] & ~selected[:, :-1]
        assert ((inputs[:, 1:] - inputs[:, :-1]) % 37 == 1)[both].all()
        # selected positions carry the original token as label, and 0 ([MASK]) appears only there
        assert ((inputs == 0) <= selected).all()
        assert ((labels[:, 1:] - labels[:, :-1]) % 37 == 1)[selected[:, 1:] & selected[:, :-1]].all()
    assert not torch.equal(first[0]["idx"], first[1]["idx"])
