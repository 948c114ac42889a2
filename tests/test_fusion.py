"""The four fusion variants: one interface, causal where they decode, and what each can see."""

import pytest
import torch

from velm_course.multimodal.captioner import Captioner, CaptionerConfig
from velm_course.multimodal.fusion import FUSION_KINDS, FusionConfig, build_fusion
from velm_course.vision.encoders import ENCODER_NAMES, build_image_encoder

B, T, N, D, DV = 3, 7, 5, 16, 12


def randomise_(module):
    """Large random weights everywhere but the gates: the small initialisation would hide a
    leak or a missing path under float noise."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "gate_" not in name:
                p.add_(0.3 * torch.randn_like(p))
    return module


def make(kind, **kw):
    torch.manual_seed(0)
    cfg = FusionConfig(kind=kind, d_model=D, image_dim=DV, n_layer=2, n_head=2, **kw)
    return randomise_(build_fusion(cfg)).eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, D, generator=g), torch.randn(B, N, DV, generator=g),
            torch.randn(B, DV, generator=g))


VARIANTS = [dict(kind=k) for k in FUSION_KINDS] + [
    dict(kind="concat", concat_mode="concat"), dict(kind="cross_attention", gated=True)]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
@pytest.mark.parametrize("causal", [True, False])
def test_every_variant_maps_text_and_image_to_text_states(kw, causal):
    fusion = make(causal=causal, **kw)
    out = fusion(*inputs())
    assert out.shape == (B, T, D)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_decoders_are_causal(kw):
    """Changing word t+1 (and later) leaves every output at positions <= t unchanged."""
    fusion = make(**kw)
    text, grid, pooled = inputs()
    t = 3
    changed = text.clone()
    changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:])
    a, b = fusion(text, grid, pooled), fusion(changed, grid, pooled)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3  # and the later ones do change


def test_co_attention_encoder_lets_later_words_reach_earlier_ones_through_the_image():
    """Why the causal co-attention model keeps the image stream from reading the text: with
    text→image attention, word 0 hears about word 6 via the image tokens even when the text
    self-attention itself were causal."""
    torch.manual_seed(0)
    leaky = make("co_attention", causal=False)
    for block in leaky.text_blocks:
        block.causal = True  # causal text self-attention; the image stream still reads all words
    text, grid, pooled = inputs()
    changed = text.clone()
    changed[:, -1] += 1.0
    assert (leaky(text, grid, pooled)[:, 0] - leaky(changed, grid, pooled)[:, 0]).abs().max() > 1e-2
    causal = make("co_attention")  # the same weights, the image stream deaf to the text
    torch.testing.assert_close(causal(text, grid, pooled)[:, 0], causal(changed, grid, pooled)[:, 0],
                               rtol=0, atol=1e-6)


def test_gate_at_zero_is_the_text_only_model_exactly():
    fusion = make("cross_attention", gated=True)  # random weights everywhere but the gates
    text, grid, pooled = inputs()
    x = text
    for block in fusion.blocks:  # the same text layers with no image at all
        x = block(x)
    assert torch.equal(fusion(text, grid, pooled), x)
    with torch.no_grad():
        for gate in fusion.gates:
            gate.gate_attn.fill_(0.5)
    opened = fusion(text, grid, pooled)
    assert (opened - x).abs().max() > 1e-3
    assert (opened - fusion(text, grid.flip(0), pooled)).abs().max() > 1e-3  # now it reads the image


@pytest.mark.parametrize("kind", ["concat", "prefix"])
def test_pooled_variants_cannot_see_where_things_are(kind):
    """concat and prefix read only the pooled vector: shuffling the grid tokens changes nothing."""
    fusion = make(kind)
    text, grid, pooled = inputs()
    assert torch.equal(fusion(text, grid, pooled), fusion(text, grid[:, torch.randperm(N)], pooled))


@pytest.mark.parametrize("kind", ["cross_attention", "co_attention"])
def test_grid_variants_read_the_grid_and_return_attention_maps(kind):
    fusion = make(kind)
    text, grid, pooled = inputs()
    changed = grid.clone()
    changed[:, 0] += 1.0  # one region differs, the pooled vector stays
    assert (fusion(text, grid, pooled) - fusion(text, changed, pooled)).abs().max() > 1e-4
    out, maps = fusion(text, grid, pooled, need_weights=True)
    torch.testing.assert_close(out, fusion(text, grid, pooled))
    assert len(maps) == 2 and all(m.shape == (B, 2, T, N) for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(B, 2, T))


def test_bad_inputs_are_named():
    fusion = make("cross_attention")
    text, grid, pooled = inputs()
    with pytest.raises(ValueError, match="batch sizes differ"):
        fusion(text[:2], grid, pooled)
    with pytest.raises(ValueError, match=r"grid \(B, N, 12\)"):
        fusion(text, grid[..., :4], pooled)
    with pytest.raises(ValueError, match="text must be"):
        fusion(text[..., :4], grid, pooled)
    with pytest.raises(ValueError, match="unknown fusion kind"):
        FusionConfig(kind="late")
    with pytest.raises(ValueError, match="gated"):
        FusionConfig(kind="prefix", gated=True)
    with pytest.raises(ValueError, match="only a causal"):
        make("concat", causal=False).new_caches()


@pytest.mark.parametrize("encoder", ENCODER_NAMES)
@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_any_encoder_feeds_any_fusion(encoder, kind):
    """Encoders return grid (B, N, Dv) and pooled (B, Dv); every fusion takes any Dv."""
    torch.manual_seed(0)
    size = 32 if encoder in ("vit_b_16", "resnet18", "resnet50") else 64
    enc = _encoder(encoder, size)
    grid, pooled = enc(torch.rand(2, 3, size, size))
    fusion = build_fusion(FusionConfig(kind=kind, d_model=D, image_dim=enc.out_dim, n_layer=1, n_head=2))
    assert fusion(torch.randn(2, 4, D), grid, pooled).shape == (2, 4, D)


_ENCODERS = {}


def _encoder(name, size):
    # torchvision's ViT-B/16 and ResNet-50 take a second to build: once per test session
    if name not in _ENCODERS:
        _ENCODERS[name] = build_image_encoder(name, image_size=size).eval()
    return _ENCODERS[name]


@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_frozen_encoder_gets_no_gradient(kind):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=8,
                                      fusion=kind, freeze_encoder=True)).train()
    idx = torch.randint(3, 12, (2, 5))
    _, loss = model(torch.rand(2, 3, 64, 64), idx, idx.roll(-1, 1))
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for n, p in model.fusion.named_parameters() if "gate" not in n)


@pytest.mark.parametrize("kind", FUSION_KINDS)
def test_blind_captioner_ignores_the_image_for_every_fusion(kind):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=8,
                                      fusion=kind, blind=True)).eval()
    idx = torch.randint(3, 12, (2, 5))
    a, _ = model(torch.rand(2, 3, 64, 64), idx)
    b, _ = model(torch.rand(2, 3, 64, 64), idx)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_encoders_with_a_text_mask_ignore_padding(kw):
    """Non-causal: appending padded positions (masked out) leaves the real words' states unchanged."""
    fusion = make(causal=False, **kw)
    text, grid, pooled = inputs()
    mask = torch.ones(B, T, dtype=torch.bool)
    padded = torch.cat([text, torch.randn(B, 3, D)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(B, 3, dtype=torch.bool)], dim=1)
    a = fusion(text, grid, pooled, text_mask=mask)
    b = fusion(padded, grid, pooled, text_mask=pad_mask)[:, :T]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    unmasked = fusion(padded, grid, pooled)[:, :T]
    assert (unmasked - a).abs().max() > 1e-3  # without the mask the padding does leak in
    with pytest.raises(ValueError, match="text_mask"):
        fusion(text, grid, pooled, text_mask=mask[:, :2])
