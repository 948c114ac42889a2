"""The CLIP-style dual encoder (velm_course.multimodal.dual_encoder): shapes and unit norms,
padding that changes nothing while a real token does, the temperature learnable or fixed,
the engine loss against clip_loss, zero-shot classification and the retrieval matrix against
brute force, feature extraction in batches, and clear errors for bad input."""

import pytest
import torch
import torch.nn.functional as F

from velm_course.data.captions import BOS, EOS, PAD
from velm_course.engine import TrainConfig, fit
from velm_course.multimodal.dual_encoder import (
    DualEncoder,
    DualEncoderConfig,
    ImageTower,
    TextTower,
    contrastive_loss_fn,
    encode_images,
    similarity_matrix,
    zero_shot_scores,
)
from velm_course.multimodal.losses import LOGIT_SCALE_INIT, clip_loss
from velm_course.multimodal.pretrainer import image_batches
from velm_course.vision.encoders import CNNEncoder, CNNEncoderConfig

V, DV, N = 12, 8, 5  # vocabulary, image feature width, image tokens


def tiny(**kw) -> DualEncoder:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, image_dim=DV, d_model=16, embed_dim=8, n_layer=2, n_adapter=1,
               n_head=2, max_len=10)
    return DualEncoder(DualEncoderConfig(**{**cfg, **kw}))


def features(B: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(B, N, DV, generator=g)
    return grid, grid.mean(dim=1)


def captions(B: int, T: int = 7, seed: int = 2) -> torch.Tensor:
    """<bos> 1..4 random words <eos> <pad>... of different lengths, (B, T)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((B, T), PAD, dtype=torch.long)
    for b in range(B):
        n = int(torch.randint(1, T - 2, (1,), generator=g))
        out[b, : n + 2] = torch.tensor([BOS, *torch.randint(4, V, (n,), generator=g).tolist(), EOS])
    return out


def test_shapes_and_unit_norm():
    model = tiny()
    grid, pooled = features(4)
    img, txt, scale = model(grid, pooled, captions(4))
    assert img.shape == (4, 8) and txt.shape == (4, 8) and scale.shape == ()
    torch.testing.assert_close(img.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(txt.norm(dim=1), torch.ones(4))
    states, vec = model.text(captions(4))
    assert states.shape == (4, 7, 16) and vec.shape == (4, 16)
    tokens, vec = model.image(grid, pooled)
    assert tokens.shape == (4, N, 16) and vec.shape == (4, 16)


def test_linear_adapter_without_blocks():
    tower = ImageTower(DV, 16, n_adapter=0, n_head=2)
    grid, pooled = features(3)
    tokens, vec = tower(grid, pooled)
    assert len(tower.blocks) == 0 and tokens.shape == (3, N, 16)
    torch.testing.assert_close(vec, tokens.mean(dim=1))


def test_padding_changes_nothing_and_a_real_token_does():
    model = tiny().eval()
    short = torch.tensor([[BOS, 5, 7, 6, EOS]])
    padded = torch.cat([short, torch.full((1, 4), PAD)], dim=1)
    torch.testing.assert_close(model.embed_texts(padded), model.embed_texts(short),
                               rtol=0, atol=1e-6)
    # in a batch with a longer caption: the same vector as alone
    longer = torch.tensor([[BOS, 4, 5, 6, 7, 8, 9, 10, EOS]])
    batch = torch.cat([torch.cat([short, torch.full((1, 4), PAD)], dim=1), longer])
    torch.testing.assert_close(model.embed_texts(batch)[0], model.embed_texts(short)[0],
                               rtol=0, atol=1e-6)
    changed = short.clone()
    changed[0, 2] = 9
    assert (model.embed_texts(changed) - model.embed_texts(short)).norm() > 1e-3


def test_empty_caption_raises():
    model = tiny()
    idx = torch.tensor([[BOS, 5, EOS], [PAD, PAD, PAD]])
    with pytest.raises(ValueError, match="caption 1 holds only padding"):
        model.embed_texts(idx)


def test_bad_input_raises():
    model = tiny()
    grid, pooled = features(2)
    with pytest.raises(ValueError, match="image features"):
        model.embed_images(grid[..., :4], pooled)
    with pytest.raises(ValueError, match="longer than max_len"):
        model.embed_texts(torch.ones(2, 11, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_head"):
        DualEncoderConfig(vocab_size=V, image_dim=DV, d_model=10, n_head=4)
    with pytest.raises(ValueError, match="same image more than once"):
        contrastive_loss_fn(model, {"grid": grid, "pooled": pooled, "idx": captions(2),
                                    "image_id": torch.tensor([3, 3])})


@pytest.mark.parametrize("learn", [True, False])
def test_temperature_learnable_or_fixed(learn):
    model = tiny(learn_temperature=learn)
    grid, pooled = features(4)
    loss, _ = contrastive_loss_fn(model, {"grid": grid, "pooled": pooled, "idx": captions(4)})
    loss.backward()
    value = model.scale.value
    assert value.item() == pytest.approx(LOGIT_SCALE_INIT)
    params = [p for p in model.parameters()]
    if learn:
        assert any(p is value for p in params)
        assert value.grad is not None and value.grad.abs() > 0
    else:
        assert all(p is not value for p in params) and not value.requires_grad
        assert "scale.value" in model.state_dict()  # a buffer: saved with the model


def test_contrastive_loss_fn_is_clip_loss_times_batch():
    model = tiny()
    grid, pooled = features(6)
    idx = captions(6)
    loss_sum, count = contrastive_loss_fn(model, {"grid": grid, "pooled": pooled, "idx": idx})
    img, txt = model.embed_images(grid, pooled), model.embed_texts(idx)
    expected = clip_loss(img, txt, model.logit_scale()) * 6
    assert count == 6
    torch.testing.assert_close(loss_sum, expected)


def test_zero_shot_picks_the_prompt_that_matches(monkeypatch):
    model = tiny()
    prompts = torch.tensor([[BOS, 4, 5, EOS, PAD], [BOS, 6, 7, EOS, PAD], [BOS, 8, 9, 10, EOS]])
    with torch.no_grad():
        class_vectors = model.eval().embed_texts(prompts)  # (3, E)
    labels = torch.tensor([2, 0, 1, 2, 1])
    g = torch.Generator().manual_seed(3)
    # images whose embeddings lie near the embedding of their class's prompt
    near = F.normalize(class_vectors[labels] + 0.05 * torch.randn(5, 8, generator=g), dim=-1)
    monkeypatch.setattr(model, "embed_images", lambda grid, pooled: near)
    model.train()
    scores = zero_shot_scores(model, *features(5), prompts)
    assert scores.shape == (5, 3) and not scores.requires_grad
    assert scores.argmax(dim=1).tolist() == labels.tolist()
    torch.testing.assert_close(scores, near @ class_vectors.T)
    assert model.training  # the caller's mode comes back


def test_similarity_matrix_equals_brute_force_cosine():
    model = tiny()
    grid, pooled = features(7)
    idx = captions(5)
    model.train()
    sim = similarity_matrix(model, grid, pooled, idx, batch_size=3)
    assert sim.shape == (7, 5) and model.training and not sim.requires_grad
    with torch.no_grad():
        model.eval()
        brute = torch.tensor([[F.cosine_similarity(
            model.image_proj(model.image(grid[i:i + 1], pooled[i:i + 1])[1]),
            model.text_proj(model.text(idx[j:j + 1])[1])).item() for j in range(5)]
            for i in range(7)])
    torch.testing.assert_close(sim, brute, rtol=0, atol=1e-5)


def test_encode_images_in_batches_in_eval_mode():
    torch.manual_seed(0)
    encoder = CNNEncoder(CNNEncoderConfig(d_model=8, image_size=16, widths=(4, 4, 8, 8)))
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    grid, pooled = encode_images(encoder, images, batch_size=2)
    assert encoder.training  # put back as it was
    assert not grid.requires_grad and not pooled.requires_grad
    with torch.no_grad():
        expected = encoder.eval()(images.float() / 255)
    # in train mode BatchNorm would normalise with each batch's own statistics
    torch.testing.assert_close(grid, expected[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, expected[1], rtol=0, atol=1e-5)
    grid_f, _ = encode_images(encoder, images.float() / 255, batch_size=5)
    torch.testing.assert_close(grid_f, grid, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 or float"):
        encode_images(encoder, images.long())


def test_text_tower_alone_is_usable():
    tower = TextTower(V, 16, n_layer=1, n_head=2, max_len=6)
    states, vec = tower(torch.tensor([[BOS, 5, EOS, PAD]]))
    keep = torch.tensor([True, True, True, False])
    torch.testing.assert_close(vec[0], states[0, keep].mean(dim=0))


def test_training_pulls_each_image_towards_its_caption():
    """60 engine steps on 16 images with one caption each: the contrastive loss falls and
    image -> text retrieval gets far above chance (1 in 16; 14 of 16 right when written)."""
    grid, pooled = features(16)
    idx = captions(16, seed=4)
    tokens = idx[:, None, :]  # (16, 1, T): one caption per image
    batches = image_batches(grid, pooled, tokens, torch.zeros(16, 1), batch_size=8, seed=0,
                            steps=60)
    model = tiny()
    before = similarity_matrix(model, grid, pooled, idx)
    cfg = TrainConfig(steps=60, batch_size=8, lr=3e-3, warmup=3, log_every=10,
                      checkpoint_every=0, device="cpu", seed=0)
    history = fit(model, contrastive_loss_fn, batches, cfg, progress=False)
    after = similarity_matrix(model, grid, pooled, idx)
    assert history[-1]["loss"] < history[0]["loss"]
    hits = [int((sim.argmax(dim=1) == torch.arange(16)).sum()) for sim in (before, after)]
    assert hits[1] >= 11 and hits[1] > hits[0], hits
