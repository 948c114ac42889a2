"""Vision Transformer: patch embedding, equality with torchvision, position interpolation."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import interpolate_embeddings

from velm_course.vit import (
    PatchEmbed,
    ViT,
    ViTConfig,
    interpolate_pos_embed,
    patchify,
    vit_state_dict_from_torchvision,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _torchvision_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=64, mlp_dim=128, num_classes=10,
    )
    # torchvision starts the class token and the head at zero; make them count
    with torch.no_grad():
        for p in (model.class_token, model.heads.head.weight, model.heads.head.bias):
            p.normal_(0, 0.5)
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
