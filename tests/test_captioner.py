import pytest
import torch

from velm_course.data.captions import BOS, EOS, PAD
from velm_course.multimodal.captioner import Captioner, CaptionerConfig, never_special
from velm_course.multimodal.fusion import FUSION_KINDS
from velm_course.nn.loss import IGNORE_INDEX
from velm_course.vision.encoders import build_image_encoder


def tiny(**kw) -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(vocab_size=12, d_model=32, n_layer=2, n_head=4, max_len=8, **kw)).eval()


def test_forward_shapes_and_loss_ignores_padding():
    model = tiny()
    images, idx = torch.rand(2, 3, 64, 64), torch.randint(3, 12, (2, 6))
    targets = idx.roll(-1, 1)
    logits, loss = model(images, idx, targets)
    assert logits.shape == (2, 6, 12)
    padded = targets.clone()
    padded[:, 3:] = IGNORE_INDEX  # what caption_targets puts after a caption's end
    _, loss_padded = model(images, idx, padded)
    expected = torch.nn.functional.cross_entropy(logits[:, :3].reshape(-1, 12), targets[:, :3].reshape(-1))
    torch.testing.assert_close(loss_padded, expected)


def test_decoder_is_causal_and_sees_the_image():
    model = tiny()
    images = torch.rand(2, 3, 64, 64)
    idx = torch.randint(3, 12, (2, 6))
    changed = idx.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % 12
    a, _ = model(images, idx)
    b, _ = model(images, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the future does not leak backwards
    c, _ = model(images.flip(0), idx)
    assert not torch.allclose(a, c.flip(0).flip(0))  # different images, different predictions


def test_blind_model_ignores_the_image():
    model = tiny(blind=True)
    idx = torch.randint(3, 12, (2, 5))
    a, _ = model(torch.rand(2, 3, 64, 64), idx)
    b, _ = model(torch.zeros(2, 3, 64, 64), idx)
    torch.testing.assert_close(a, b)


def randomised(**kw) -> Captioner:
    """A tiny captioner with large random weights: sharp, varied next-word distributions, so
    that greedy, sampled and banned choices all differ from one another."""
    model = tiny(**kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def greedy_reference(model, images):
    """Greedy captions recomputing the whole prefix at every step (no cache), under the one
    rule of every decoder: <pad> and <bos> are never the next word."""
    rows = []
    for row in range(len(images)):
        idx = torch.tensor([[BOS]])
        expected = []
        for _ in range(model.config.max_len - 1):
            logits, _ = model(images[row : row + 1], idx)
            nxt = int(never_special(logits[:, -1])[0].argmax())
            expected.append(nxt)
            idx = torch.cat([idx, torch.tensor([[nxt]])], 1)
            if nxt == EOS:
                break
        rows.append(expected)
    return rows


def test_greedy_generate_equals_step_by_step_argmax():
    """generate() runs with a KV cache; the reference recomputes the whole prefix."""
    model = randomised()
    images = torch.rand(4, 3, 64, 64)
    out = model.generate(images)
    uncached = model.generate_from(model.encode(images), use_cache=False)
    assert torch.equal(out, uncached)
    for got, expected in zip(out.tolist(), greedy_reference(model, images), strict=True):
        assert got[: len(expected)] == expected
        assert all(t == PAD for t in got[len(expected):])  # finished captions are padded


def test_greedy_never_writes_padding_or_bos():
    """An untrained model may like <pad> best; the decoders' rule still never writes it."""
    model = tiny()
    with torch.no_grad():  # every final state becomes e; <pad> and <bos> point along e the most
        e = torch.randn(model.config.d_model)
        model.ln_f.weight.zero_()
        model.ln_f.bias.copy_(e)
        model.lm_head.weight[PAD] = e
        model.lm_head.weight[BOS] = 0.9 * e
    images = torch.rand(3, 3, 64, 64)
    logits, _ = model(images, torch.full((3, 1), BOS))
    assert (logits[:, -1].argmax(-1) == PAD).all()  # the raw model's favourite...
    assert (logits[:, -1].topk(2).indices[:, 1] == BOS).all()  # ...and its second
    out = model.generate(images)
    first_eos = [row.index(EOS) if EOS in row else len(row) for row in out.tolist()]
    assert all(PAD not in row[:n] and BOS not in row for row, n in zip(out.tolist(), first_eos, strict=True))


def test_sampling_is_repeatable_and_an_image_samples_alike_in_any_batch():
    model = randomised()
    images = torch.rand(4, 3, 64, 64)
    a = model.sample(images, seed=3)
    assert torch.equal(a, model.sample(images, seed=3))
    assert not torch.equal(a, model.generate(images)[:, : a.shape[1]])  # it does sample
    seeds = [10, 11, 12, 13]
    together = model.sample(images, top_p=0.9, seed=seeds)
    for row, seed in enumerate(seeds):
        alone = model.sample(images[row : row + 1], top_p=0.9, seed=[seed])[0].tolist()
        assert together[row].tolist()[: len(alone)] == alone
    with pytest.raises(ValueError, match="temperature"):
        model.sample(images, temperature=0)


def test_cold_sampling_and_top_1_are_greedy():
    model = randomised()
    images = torch.rand(4, 3, 64, 64)
    greedy = model.generate(images)
    assert torch.equal(model.sample(images, temperature=1e-6, seed=0), greedy)  # the T -> 0 limit
    assert torch.equal(model.sample(images, temperature=3.0, top_k=1, seed=0), greedy)


def test_caption_logprobs_are_the_log_probabilities_the_decoder_summed():
    """Teacher forcing on a sampled caption gives back, token by token, the log-probabilities
    the cached sampler added up (what self-critical training differentiates)."""
    from velm_course.multimodal.scst import caption_mask

    model = randomised()
    images = torch.rand(4, 3, 64, 64)
    tokens, logp_sum = model.generate_scored_from(model.encode(images), temperature=1.0, seed=4)
    logp = model.caption_logprobs(images, tokens)
    assert logp.shape == tokens.shape and logp.requires_grad
    summed = logp.masked_fill(~caption_mask(tokens, EOS), 0.0).sum(1)
    torch.testing.assert_close(summed, logp_sum, rtol=1e-5, atol=1e-5)


def test_too_long_prefix_raises():
    with pytest.raises(ValueError, match="longer than max_len"):
        tiny()(torch.rand(1, 3, 64, 64), torch.ones(1, 9, dtype=torch.long))


def test_learns_to_tell_two_images_apart():
    """Overfit two images to two captions: the model must use the picture to get both right."""
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=8, d_model=32, n_layer=1, n_head=2, max_len=5, dropout=0.0))
    images = torch.stack([torch.zeros(3, 64, 64), torch.ones(3, 64, 64)])
    captions = torch.tensor([[BOS, 4, 5, EOS], [BOS, 4, 6, EOS]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(images, captions[:, :-1], captions[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert model.generate(images)[:, :3].tolist() == [[4, 5, EOS], [4, 6, EOS]]


def test_building_a_captioner_keeps_the_encoders_weights():
    """A pretrained encoder must come out of Captioner.__init__ untouched (the old captioner
    re-initialised every Linear layer, encoder included)."""
    torch.manual_seed(1)
    encoder = build_image_encoder("course_vit", d_model=32, image_size=64)
    with torch.no_grad():  # stand-in for pretrained weights: anything but a fresh init
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=32, n_layer=1, n_head=4, max_len=8,
                                      encoder="course_vit"), encoder=encoder)
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # while the decoder's own layers were initialised (GPT-2 style: zero biases, std 0.02)
    assert model.fusion.blocks[0].attn.q_proj.bias.abs().sum() == 0
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 0.005


def test_frozen_encoder_gets_no_gradient_and_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=8,
                                      freeze_encoder=True)).train()
    assert not model.encoder.training  # BatchNorm running statistics stay as loaded
    stats = model.encoder.conv_stack[0][1].running_mean.clone()
    _, loss = model(torch.rand(2, 3, 64, 64), torch.randint(3, 12, (2, 5)), torch.randint(3, 12, (2, 5)))
    loss.backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.tok_emb.weight.grad is not None
    assert torch.equal(stats, model.encoder.conv_stack[0][1].running_mean)


def test_a_frozen_backbone_still_trains_its_projection_to_the_decoder_width():
    """A torchvision backbone wider than d_model gets a new projection (``Projected``): freezing
    the encoder keeps the backbone's weights, not that random map."""
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=1, n_head=2, max_len=8, image_size=32,
                                      encoder="resnet18", freeze_encoder=True)).train()
    assert model.encoder.encoder.out_dim == 512 and model.frozen_part() is model.encoder.encoder
    assert not model.encoder.encoder.training
    _, loss = model(torch.rand(2, 3, 32, 32), torch.randint(3, 12, (2, 5)), torch.randint(3, 12, (2, 5)))
    loss.backward()
    assert all(p.grad is None for p in model.encoder.encoder.parameters())
    assert model.encoder.proj.weight.grad is not None and model.encoder.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fusion", FUSION_KINDS)
def test_cached_decoding_equals_recomputation(fusion):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=12, d_model=16, n_layer=2, n_head=2, max_len=8,
                                      fusion=fusion, dropout=0.0)).eval()
    images = torch.rand(2, 3, 64, 64)
    idx = torch.randint(3, 12, (2, 6))
    memory = model.encode(images)
    full = model.decode(memory, idx)
    caches = model.fusion.new_caches()
    steps = [model.decode(memory, idx[:, :3], caches)] + [model.decode(memory, idx[:, t : t + 1], caches)
                                                            for t in range(3, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
