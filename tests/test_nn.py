"""The shared token loss (velm_course.nn.loss) and the initialisation (velm_course.nn.init)."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from velm_course.nn.block import Block, BlockConfig
from velm_course.nn.init import init_transformer_
from velm_course.nn.loss import IGNORE_INDEX, check_token_ids, lm_loss, lm_objective
from velm_course.text.gpt import GPT, GPTConfig

# --- loss ------------------------------------------------------------------------------------


def test_ignore_index_is_cross_entropys_default():
    assert IGNORE_INDEX == -100
    assert inspect.signature(F.cross_entropy).parameters["ignore_index"].default == IGNORE_INDEX


def test_lm_loss_against_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.double)
    targets = torch.randint(0, 7, (3, 5), generator=g)
    targets[0, 3:] = IGNORE_INDEX
    targets[2, 0] = IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1)
    nll = [-logp[b, t, targets[b, t]] for b in range(3) for t in range(5) if targets[b, t] != IGNORE_INDEX]
    assert len(nll) == 12
    torch.testing.assert_close(lm_loss(logits, targets, reduction="sum"), torch.stack(nll).sum())
    torch.testing.assert_close(lm_loss(logits, targets), torch.stack(nll).mean())
    assert lm_loss(logits, None) is None


def test_label_smoothing_against_a_hand_computation():
    # smoothed target: (1 - eps) on the right token plus eps / V on every token, so the loss is
    # (1 - eps) * NLL + eps * (mean over the vocabulary of -log p)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.double)
    targets = torch.randint(0, 6, (2, 3), generator=g)
    targets[1, 2] = IGNORE_INDEX
    eps, logp = 0.2, torch.log_softmax(logits, dim=-1)
    keep = targets != IGNORE_INDEX
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    uniform = -logp.mean(dim=-1)  # (B, T)
    expected = ((1 - eps) * nll + eps * uniform)[keep]
    torch.testing.assert_close(lm_loss(logits, targets, label_smoothing=eps), expected.mean())
    torch.testing.assert_close(lm_loss(logits, targets, reduction="sum", label_smoothing=eps), expected.sum())
    assert not torch.isclose(lm_loss(logits, targets, label_smoothing=eps), lm_loss(logits, targets))


def test_check_token_ids_names_the_problem():
    ok = torch.zeros(2, 4, dtype=torch.long)
    check_token_ids(ok, vocab_size=1, max_len=4)
    with pytest.raises(ValueError, match="int64"):
        check_token_ids(ok.int())
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        check_token_ids(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        check_token_ids(torch.tensor([[0, 3]]), vocab_size=3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        check_token_ids(torch.tensor([[-1, 0]]), vocab_size=3)
    check_token_ids(torch.zeros(2, 0, dtype=torch.long), vocab_size=3)  # empty is fine
    # off the CPU the values are not read back (that would make the host wait for a GPU every step):
    # a meta tensor has no values, so reading them would raise
    check_token_ids(torch.empty(2, 4, dtype=torch.long, device="meta"), vocab_size=3, max_len=4)
    with pytest.raises(ValueError, match="longer than"):  # the shape is still checked
        check_token_ids(torch.empty(2, 5, dtype=torch.long, device="meta"), vocab_size=3, max_len=4)
    with pytest.raises(ValueError, match="context of 6 tokens is longer than max_len=5"):
        check_token_ids(ok, max_len=5, past=2)
    with pytest.raises(ValueError, match="longer than block_size=3"):
        check_token_ids(ok, max_len=3, max_len_name="block_size")


def test_lm_objective_is_the_summed_loss_and_the_token_count():
    torch.manual_seed(1)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)).double()
    idx = torch.randint(0, 11, (3, 8))
    targets = torch.randint(0, 11, (3, 8))
    targets[1, 5:] = IGNORE_INDEX
    total, count = lm_objective(model, {"idx": idx, "targets": targets})
    assert count.item() == 21
    _, mean = model(idx, targets)
    torch.testing.assert_close(total / count, mean)


# --- initialisation --------------------------------------------------------------------------


def test_init_transformer_follows_gpt2():
    torch.manual_seed(2)
    n_layer = 8
    blocks = nn.ModuleList([Block(BlockConfig(d_model=256, n_head=4)) for _ in range(n_layer)])
    emb = nn.Embedding(500, 256)
    untouched = nn.Linear(256, 256)  # e.g. a pretrained encoder: not passed, not changed
    before = untouched.weight.detach().clone()
    with torch.no_grad():
        for p in blocks.parameters():
            p.fill_(3.0)  # so every value checked below was written by the initialiser
    init_transformer_([blocks, emb], n_layer)
    assert torch.equal(untouched.weight, before)
    residual = 0.02 / math.sqrt(2 * n_layer)
    for name, p in blocks.named_parameters():
        if "ln" in name:
            assert bool((p == (1.0 if name.endswith("weight") else 0.0)).all()), name
        elif name.endswith("bias"):
            assert bool((p == 0).all()), name
        else:
            std = residual if name.rsplit(".", 2)[-2] in ("out_proj", "proj") else 0.02
            assert p.mean().abs().item() < 3 * std / math.sqrt(p.numel()) + 1e-12, name
            assert p.std().item() == pytest.approx(std, rel=0.05), name
    assert emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # which projections count as writing into the residual stream
    assert blocks[0].attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert blocks[0].mlp.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert blocks[0].attn.kv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
