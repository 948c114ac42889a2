"""Image encoders: one interface, checked against torchvision's own forward passes."""

import warnings

import pytest
import torch
import torchvision

from velm_course.vision.encoders import (
    CNNEncoder,
    CNNEncoderConfig,
    CourseViTEncoder,
    Projected,
    build_image_encoder,
)


def test_small_cnn_grid_and_pooled():
    enc = CNNEncoder(CNNEncoderConfig(d_model=24, image_size=64)).eval()
    grid, pooled = enc(torch.rand(2, 3, 64, 64))
    assert grid.shape == (2, 64, 24) and pooled.shape == (2, 24)
    torch.testing.assert_close(pooled, grid.mean(1))
    assert build_image_encoder("small_cnn", 16, 128)(torch.rand(1, 3, 128, 128))[0].shape == (1, 256, 16)


def test_grayscale_and_rgba_inputs_are_converted():
    enc = CNNEncoder(CNNEncoderConfig(d_model=16, image_size=64)).eval()
    gray = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(enc(gray)[1], enc(gray.expand(2, 3, 64, 64))[1])
    rgb = torch.rand(2, 3, 64, 64)
    rgba = torch.cat([rgb, torch.rand(2, 1, 64, 64)], dim=1)
    torch.testing.assert_close(enc(rgba)[1], enc(rgb)[1])


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_encoder_matches_torchvision_forward(arch):
    torch.manual_seed(0)
    enc = build_image_encoder(arch, image_size=64).eval()
    ref = torchvision.models.get_model(arch, weights=None)
    ref.fc = torch.nn.Identity()
    ref.load_state_dict(enc.net.state_dict())
    ref.eval()
    images = torch.rand(2, 3, 64, 64)
    grid, pooled = enc(images)
    normalised = (images - enc.mean) / enc.std  # torchvision models expect normalised input
    torch.testing.assert_close(pooled, ref(normalised), rtol=1e-4, atol=1e-5)
    assert grid.shape == (2, 4, enc.out_dim) and enc.out_dim == (512 if arch == "resnet18" else 2048)


def test_vit_encoder_matches_torchvision_forward():
    torch.manual_seed(0)
    enc = build_image_encoder("vit_b_16", image_size=32).eval()
    ref = torchvision.models.vit_b_16(weights=None, image_size=32)
    ref.heads = torch.nn.Identity()
    ref.load_state_dict(enc.net.state_dict())
    ref.eval()
    images = torch.rand(2, 3, 32, 32)
    grid, pooled = enc(images)
    torch.testing.assert_close(pooled, ref((images - enc.mean) / enc.std), rtol=1e-4, atol=1e-5)
    assert grid.shape == (2, 4, 768)


def test_course_vit_and_projection():
    enc = CourseViTEncoder(d_model=32, image_size=32, patch_size=8, n_layer=1, n_head=2).eval()
    grid, pooled = enc(torch.rand(2, 3, 32, 32))
    assert grid.shape == (2, 16, 32) and pooled.shape == (2, 32)
    proj = build_image_encoder("resnet18", d_model=48, image_size=64)
    assert isinstance(proj, Projected)
    grid, pooled = proj.eval()(torch.rand(1, 3, 64, 64))
    assert grid.shape == (1, 4, 48) and pooled.shape == (1, 48)


def test_pretrained_weights_load_when_available(monkeypatch):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, progress=True: source)
    enc = build_image_encoder("resnet18", pretrained=True)
    torch.testing.assert_close(enc.net.conv1.weight, source["conv1.weight"])


def test_pretrained_without_internet_is_a_clear_error_or_an_explicit_fallback(monkeypatch):
    def offline(self, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="fallback_to_random=True"):
        build_image_encoder("resnet18", pretrained=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = build_image_encoder("vit_b_16", pretrained=True, fallback_to_random=True)
    assert any("RANDOM weights" in str(w.message) for w in caught)
    assert enc.image_size == 224


def test_encoder_errors():
    with pytest.raises(ValueError, match="unknown image encoder"):
        build_image_encoder("resnet9000")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_image_encoder("small_cnn", pretrained=True)
    with pytest.raises(ValueError, match="multiple of 8"):
        CNNEncoder(CNNEncoderConfig(image_size=36))
    with pytest.raises(ValueError, match="expected images of 64"):
        build_image_encoder("small_cnn")(torch.rand(1, 3, 32, 32))


def test_cached_features_serve_a_captioner_like_the_encoder_they_cache():
    from velm_course.multimodal.captioner import Captioner, CaptionerConfig
    from velm_course.vision.encoders import CachedFeatures

    torch.manual_seed(0)
    encoder = build_image_encoder("small_cnn", d_model=16, image_size=64).eval()
    for p in encoder.parameters():  # randomised BatchNorm statistics, so a wrong lookup shows
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)
    images = (torch.rand(6, 3, 64, 64) * 255).to(torch.uint8)
    cfg = CaptionerConfig(vocab_size=11, d_model=16, n_layer=1, n_head=2, max_len=6, dropout=0.0,
                          freeze_encoder=True)
    torch.manual_seed(1)
    direct = Captioner(cfg, encoder=encoder).eval()
    torch.manual_seed(1)
    cached = Captioner(cfg, encoder=CachedFeatures.compute(encoder, images)).eval()
    idx = torch.randint(0, 11, (3, 5))
    rows = torch.tensor([5, 2, 2])
    with torch.no_grad():
        want, _ = direct(images[rows].float() / 255, idx)
        got, _ = cached(rows, idx)
        same_words, _ = cached(rows, idx[[0, 0, 0]])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (same_words[0] - same_words[1]).abs().max() > 1e-4  # other image, other logits
    with pytest.raises(TypeError, match="row numbers"):
        cached.encoder(images[:2].float())
