"""Vision Transformer: patch embedding, equality with torchvision, position interpolation."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import interpolate_embeddings

from velm_course.nn import Block
from velm_course.vision.vit import (
    PatchEmbed,
    ViT,
    ViTConfig,
    interpolate_pos_embed,
    patchify,
    vit_state_dict_from_torchvision,
)


def _torchvision_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=64, mlp_dim=128, num_classes=10,
    )
    # torchvision starts the class token, the head and the attention biases at zero and the
    # LayerNorms at (1, 0): a swapped bias or LayerNorm in the key map would change nothing.
    # Random everything instead, so that every key has to land in its place.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name and name.endswith("weight") or name == "encoder.ln.weight":
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias") or name in ("class_token", "heads.head.weight"):
                p.normal_(0, 0.2)
    return model.eval()


CONFIG = dict(image_size=32, patch_size=8, n_layer=2, n_head=2, d_model=64, mlp_dim=128,
              num_classes=10)


def test_patchify_matches_unfold():
    x = torch.randn(2, 3, 16, 24)
    # F.unfold gives (B, C*P*P, N) in the same channel/row/column order
    torch.testing.assert_close(patchify(x, 8), F.unfold(x, 8, stride=8).transpose(1, 2))


def test_patch_embedding_conv_equals_unfold_linear():
    embed = PatchEmbed(patch_size=4, in_channels=3, d_model=16).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    conv_way = embed(x)
    assert conv_way.shape == (2, 9, 16)
    torch.testing.assert_close(conv_way, embed.forward_unfold(x))


def test_matches_torchvision_vit():
    theirs = _torchvision_vit()
    ours = ViT(ViTConfig(**CONFIG)).eval()
    ours.load_state_dict(vit_state_dict_from_torchvision(theirs.state_dict()), strict=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captured = {}  # torchvision's encoder output (B, T, D), caught on its way to the head
    theirs.encoder.register_forward_hook(lambda mod, inp, out: captured.update(tokens=out))
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        feats = ours.forward_features(x)
    tokens = captured["tokens"]
    torch.testing.assert_close(feats.cls_token, tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.patch_tokens, tokens[:, 1:], atol=1e-5, rtol=1e-5)


BLOCK_KEYS = {f"{module}.{p}" for module in ("ln_1", "attn.q_proj", "attn.kv_proj", "attn.out_proj",
                                             "ln_2", "mlp.fc", "mlp.proj") for p in ("weight", "bias")}


def test_key_map_fills_the_shared_block():
    theirs = _torchvision_vit().state_dict()
    ours = vit_state_dict_from_torchvision(theirs)
    for i in range(2):
        assert {k.removeprefix(f"blocks.{i}.") for k in ours if k.startswith(f"blocks.{i}.")} == BLOCK_KEYS
        # torchvision's [q; k; v] rows, cut into q and (k, v)
        layer = f"encoder.layers.encoder_layer_{i}.self_attention."
        q_w, kv_w = ours[f"blocks.{i}.attn.q_proj.weight"], ours[f"blocks.{i}.attn.kv_proj.weight"]
        assert q_w.shape == (64, 64) and kv_w.shape == (128, 64)
        assert torch.equal(torch.cat([q_w, kv_w]), theirs[layer + "in_proj_weight"])
        q_b, kv_b = ours[f"blocks.{i}.attn.q_proj.bias"], ours[f"blocks.{i}.attn.kv_proj.bias"]
        assert torch.equal(torch.cat([q_b, kv_b]), theirs[layer + "in_proj_bias"])
    model = ViT(ViTConfig(**CONFIG))
    assert all(type(b) is Block for b in model.blocks)
    assert set(model.state_dict()) == set(ours)


def test_every_block_matches_its_torchvision_encoder_layer():
    """Block by block in float64, so a near miss cannot hide in float32 rounding."""
    theirs = _torchvision_vit().double()
    ours = ViT(ViTConfig(**CONFIG)).double().eval()
    ours.load_state_dict(vit_state_dict_from_torchvision(theirs.state_dict()), strict=True)
    outputs = {"ours": [], "theirs": []}
    for layer in theirs.encoder.layers:
        layer.register_forward_hook(lambda mod, inp, out: outputs["theirs"].append(out))
    for block in ours.blocks:
        block.register_forward_hook(lambda mod, inp, out: outputs["ours"].append(out))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
    assert len(outputs["ours"]) == len(outputs["theirs"]) == 2
    for a, b in zip(outputs["ours"], outputs["theirs"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_attention_maps_and_both_attention_paths_agree():
    model = ViT(ViTConfig(**CONFIG)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model.forward_features(x)
        slow = model.forward_features(x, return_attention=True)
    assert fast.attentions is None
    assert len(slow.attentions) == 2
    for att in slow.attentions:
        assert att.shape == (2, 2, 17, 17)  # (B, nh, T, T)
        torch.testing.assert_close(att.sum(dim=-1), torch.ones(2, 2, 17))  # rows are softmaxes
    # the fused kernel and the written-out softmax compute the same thing
    torch.testing.assert_close(fast.cls_token, slow.cls_token, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.patch_tokens, slow.patch_tokens, atol=1e-5, rtol=1e-5)


def test_pos_embed_interpolation_matches_torchvision():
    pos = torch.randn(1, 17, 64)
    ours = interpolate_pos_embed(pos, 6)
    assert ours.shape == (1, 37, 64)
    theirs = interpolate_embeddings(48, 8, OrderedDict({"encoder.pos_embedding": pos}))
    torch.testing.assert_close(ours, theirs["encoder.pos_embedding"])
    torch.testing.assert_close(ours[:, :1], pos[:, :1])  # class position untouched
    assert interpolate_pos_embed(pos, 4) is pos  # same grid: nothing to do


def test_resize_pos_embed_runs_at_new_size():
    config = ViTConfig(**CONFIG)
    model = ViT(config).eval()
    model.resize_pos_embed(48)
    assert config.image_size == 32  # the caller's config is not modified
    feats = model.forward_features(torch.randn(2, 3, 48, 48))
    assert feats.patch_tokens.shape == (2, 36, 64)
    assert feats.cls_token.shape == (2, 64)
    assert model.pos_embed.shape == (1, 37, 64)


def test_no_head_returns_class_token():
    model = ViT(ViTConfig(**{**CONFIG, "num_classes": 0})).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_bad_input():
    with pytest.raises(ValueError, match="divide image_size"):
        ViT(ViTConfig(image_size=30, patch_size=8))
    with pytest.raises(ValueError, match="divide d_model"):
        ViT(ViTConfig(d_model=64, n_head=3))
    model = ViT(ViTConfig(**CONFIG))
    with pytest.raises(ValueError, match="resize_pos_embed"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 3, 10, 10), 4)
    with pytest.raises(ValueError, match="square"):
        interpolate_pos_embed(torch.randn(1, 6, 8), 3)
    with pytest.raises(KeyError, match="pre_logits"):
        vit_state_dict_from_torchvision({"heads.pre_logits.weight": torch.zeros(1)})
