"""Fusion losses (velm_course.multimodal.losses): the contrastive loss against open_clip's
ClipLoss in value and gradient and at its closed forms, the chunked loss against the full one
(and that it never stores the B x B logits), the temperature module and its range check, hard
negatives (never a positive, drawn at their softmax rate), the weighted objective, the
attribute targets, and clear errors for bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from velm_course.multimodal.losses import (
    LOGIT_SCALE_INIT,
    LOGIT_SCALE_MAX,
    LogitScale,
    attribute_loss,
    attribute_targets,
    check_logit_scale,
    chunked_clip_loss,
    clip_logits,
    clip_loss,
    hard_negative_indices,
    itm_loss,
    itm_pairs,
    weighted_objective,
)

DOUBLE = dict(dtype=torch.double)


def embeddings(B: int, D: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (unnormalised) image and text embeddings (B, D), leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    img = (3 * torch.randn(B, D, generator=g, **DOUBLE)).requires_grad_()
    txt = (3 * torch.randn(B, D, generator=g, **DOUBLE)).requires_grad_()
    return img, txt


def grads(loss: torch.Tensor, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # kept: some tests take the gradient of graphs that share their first steps
    return torch.autograd.grad(loss, leaves, retain_graph=True)


# --- contrastive loss ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("log_scale", [0.0, 1.3, LOGIT_SCALE_INIT, LOGIT_SCALE_MAX])
def test_clip_loss_equals_open_clip_in_value_and_gradient(seed, log_scale):
    img, txt = embeddings(8, 16, seed)
    ls = torch.tensor(log_scale, **DOUBLE, requires_grad=True)
    # open_clip expects unit-length features and the exponentiated scale; ours normalises
    # inside, so both see the same unit vectors and the gradients reach the same raw leaves
    img_n, txt_n = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    expected = ClipLoss()(img_n, txt_n, ls.exp())
    for ours in (clip_loss(img, txt, ls), clip_loss(img_n, txt_n, ls)):
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
        for g_ours, g_ref in zip(grads(ours, img, txt, ls), grads(expected, img, txt, ls),
                                 strict=True):
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_clip_logits_are_scaled_cosines_and_transposes():
    img, txt = embeddings(5, 4, seed=7)
    ls = torch.tensor(1.5, **DOUBLE)
    per_image, per_text = clip_logits(img, txt, ls)
    cosine = F.cosine_similarity(img[:, None, :], txt[None, :, :], dim=-1)  # (B, B)
    torch.testing.assert_close(per_image, math.exp(1.5) * cosine)
    torch.testing.assert_close(per_text, per_image.T)


@pytest.mark.parametrize("B", [2, 8])
def test_clip_loss_near_zero_at_perfect_large_margin_alignment(B):
    # orthogonal one-hot pairs: logits are s on the diagonal and 0 elsewhere, so each row's
    # cross-entropy is -log(e^s / (e^s + B - 1)) = log(1 + (B - 1) e^-s), in both directions
    img = torch.eye(B, **DOUBLE)
    for log_scale in (math.log(10), LOGIT_SCALE_MAX):
        s = math.exp(log_scale)
        exact = math.log1p((B - 1) * math.exp(-s))
        loss = clip_loss(img, img.clone(), torch.tensor(log_scale, **DOUBLE))
        assert loss.item() == pytest.approx(exact, rel=1e-9, abs=1e-14)
    assert exact < 1e-3  # at s = 100 the bound is (B - 1) e^-100, about 1e-43


@pytest.mark.parametrize("B", [1, 3, 16])
def test_clip_loss_is_ln_b_when_all_embeddings_are_identical(B):
    g = torch.Generator().manual_seed(B)
    same = torch.randn(1, 6, generator=g, **DOUBLE).expand(B, 6)
    for log_scale in (0.0, LOGIT_SCALE_INIT):
        loss = clip_loss(same, same, torch.tensor(log_scale, **DOUBLE))
        assert loss.item() == pytest.approx(math.log(B), rel=1e-12, abs=1e-12)


def test_clip_loss_is_symmetric_in_its_two_directions():
    # swapping the roles of images and captions swaps the two halves; their mean is unchanged,
    # while each half alone changes (so a loss with one half only fails this check)
    img, txt = embeddings(6, 5, seed=3)
    ls = torch.tensor(2.0, **DOUBLE)
    torch.testing.assert_close(clip_loss(img, txt, ls), clip_loss(txt, img, ls))
    per_image, per_text = clip_logits(img, txt, ls)
    target = torch.arange(6)
    assert abs(F.cross_entropy(per_image, target) - F.cross_entropy(per_text, target)) > 1e-3


# --- chunked contrastive loss ----------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 64])
def test_chunked_clip_loss_equals_full_in_value_and_gradient(chunk_size):
    img, txt = embeddings(37, 16, seed=11)
    ls = torch.tensor(2.7, **DOUBLE, requires_grad=True)
    full = clip_loss(img, txt, ls)
    chunked = chunked_clip_loss(img, txt, ls, chunk_size)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    for g_chunked, g_full in zip(grads(chunked, img, txt, ls), grads(full, img, txt, ls),
                                 strict=True):
        torch.testing.assert_close(g_chunked, g_full, rtol=1e-10, atol=1e-12)


def test_chunked_clip_loss_keeps_no_b_by_b_tensor_for_backward():
    B, chunk = 37, 5
    img, txt = embeddings(B, 4, seed=12)
    ls = torch.tensor(2.0, **DOUBLE, requires_grad=True)

    def saved_elements(fn) -> int:
        """Elements held for backward: the distinct storages autograd saved."""
        storages = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes() // t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(storages.values())

    # the full loss keeps the (B, B) logits (and softmaxes) for backward; the chunked one
    # keeps its (B, D) inputs and per-row results, and recomputes each (c, B) chunk in
    # backward. Without the checkpoint its chunks would add up to 2 B^2 again.
    assert saved_elements(lambda: clip_loss(img, txt, ls)) >= B * B
    assert saved_elements(lambda: chunked_clip_loss(img, txt, ls, chunk)) < B * B


def test_chunked_clip_loss_rejects_a_bad_chunk_size():
    img, txt = embeddings(4, 3, seed=0)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            chunked_clip_loss(img, txt, torch.tensor(1.0), bad)


# --- temperature -----------------------------------------------------------------------------


def test_logit_scale_init_clamp_and_learnable_or_fixed():
    learnable = LogitScale()
    assert learnable().item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert LOGIT_SCALE_INIT == pytest.approx(math.log(1 / 0.07))
    assert isinstance(learnable.value, torch.nn.Parameter) and learnable().requires_grad
    assert [n for n, _ in learnable.named_parameters()] == ["value"]

    fixed = LogitScale(1.0, learnable=False)
    assert list(fixed.parameters()) == [] and "value" in dict(fixed.named_buffers())
    assert not fixed().requires_grad and fixed().item() == pytest.approx(1.0)
    assert "value" in fixed.state_dict()

    # pushed above ln 100 (as an optimiser step can), the output stays at the cap and the
    # stored value gets no gradient; below the cap the gradient flows
    with torch.no_grad():
        learnable.value.fill_(LOGIT_SCALE_MAX + 0.5)
    out = learnable()
    assert out.item() == pytest.approx(LOGIT_SCALE_MAX, rel=1e-6)
    out.backward()
    assert learnable.value.grad.item() == 0.0
    with torch.no_grad():
        learnable.value.fill_(3.0)
    learnable.value.grad = None
    learnable().backward()
    assert learnable.value.grad.item() == 1.0


def test_logit_scale_module_feeds_clip_loss_at_the_cap():
    img, txt = embeddings(4, 3, seed=1)
    scale = LogitScale(LOGIT_SCALE_MAX)  # float32 ln 100 must pass the range check
    loss = clip_loss(img.float(), txt.float(), scale())
    loss.backward()
    assert torch.isfinite(scale.value.grad)


@pytest.mark.parametrize("bad", [-0.5, LOGIT_SCALE_MAX + 0.01, 1 / 0.07, math.inf, math.nan])
def test_out_of_range_temperature_is_a_clear_error(bad):
    img, txt = embeddings(4, 3, seed=1)
    for fn in (lambda: clip_loss(img, txt, torch.tensor(bad)),
               lambda: chunked_clip_loss(img, txt, torch.tensor(bad), 2),
               lambda: check_logit_scale(torch.tensor(bad))):
        with pytest.raises(ValueError, match="temperature driven out of range"):
            fn()
    with pytest.raises(ValueError, match="init="):
        LogitScale(bad)


def test_logit_scale_must_be_one_number():
    img, txt = embeddings(4, 3, seed=1)
    with pytest.raises(ValueError, match="logit_scale must be a tensor holding one number"):
        clip_loss(img, txt, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="logit_scale must be a tensor holding one number"):
        clip_loss(img, txt, 2.0)


# --- bad embeddings --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda i, t: clip_loss(i, t, torch.tensor(1.0)),
    lambda i, t: clip_logits(i, t, torch.tensor(1.0)),
    lambda i, t: chunked_clip_loss(i, t, torch.tensor(1.0), 3),
])
def test_bad_embeddings_are_clear_errors(fn):
    with pytest.raises(ValueError, match="batch sizes differ: img has 4 rows, txt has 5"):
        fn(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="empty batch"):
        fn(torch.randn(0, 8), torch.randn(0, 8))
    with pytest.raises(ValueError, match=r"img must be a \(B, D\) tensor"):
        fn(torch.randn(4, 2, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"txt must be a \(B, D\) tensor"):
        fn(torch.randn(4, 8), torch.randn(8))
    with pytest.raises(ValueError, match="embedding widths differ: img is 8 wide, txt is 6"):
        fn(torch.randn(4, 8), torch.randn(4, 6))


# --- hard negatives and image-text matching --------------------------------------------------


def test_hard_negatives_are_never_positive_with_several_captions_per_image():
    g = torch.Generator().manual_seed(0)
    n_img, per_image = 6, 3
    text_image = torch.arange(n_img).repeat_interleave(per_image)  # (B_txt,) caption -> image
    mask = text_image[None, :] == torch.arange(n_img)[:, None]  # (B_img, B_txt)
    # positives made the most similar by far, so a draw that ignored the mask would hit them
    sim = torch.randn(n_img, n_img * per_image, generator=g) + 8 * mask
    seen_text = torch.zeros(n_img, n_img * per_image, dtype=torch.bool)
    for _ in range(300):
        neg_t, neg_i = hard_negative_indices(sim, mask, g)
        assert neg_t.shape == (n_img,) and neg_i.shape == (n_img * per_image,)
        assert not mask[torch.arange(n_img), neg_t].any()
        assert not mask[neg_i, torch.arange(n_img * per_image)].any()
        seen_text[torch.arange(n_img), neg_t] = True
    assert (seen_text == ~mask).sum() > 0.8 * mask.numel()  # nearly every negative gets drawn


def test_hard_negatives_are_drawn_at_their_softmax_rate():
    # image 0: caption 0 is its own; caption 1 is much more similar than captions 2 and 3.
    # caption 0: image 0 is its own; image 2 is the similar one.
    sim = torch.tensor([[5.0, 2.0, 0.0, 0.0],
                        [0.0, 5.0, 0.0, 0.0],
                        [1.5, 0.0, 5.0, 0.0],
                        [0.0, 0.0, 0.0, 5.0]])
    mask = torch.eye(4, dtype=torch.bool)
    p_text = math.exp(2) / (math.exp(2) + 2)  # softmax over image 0's negatives only
    p_image = math.exp(1.5) / (math.exp(1.5) + 2)
    g = torch.Generator().manual_seed(1)
    n = 2000
    draws = [hard_negative_indices(sim, mask, g) for _ in range(n)]
    rate_text = sum(int(t[0] == 1) for t, _ in draws) / n
    rate_image = sum(int(i[0] == 2) for _, i in draws) / n
    # within 4 binomial standard deviations; a uniform draw (1/3) or the plain softmax
    # including the positive (much lower) is tens of deviations away
    for rate, p in ((rate_text, p_text), (rate_image, p_image)):
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_hard_negatives_follow_the_generator():
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(2))
    mask = torch.eye(5, dtype=torch.bool)
    a = [hard_negative_indices(sim, mask, torch.Generator().manual_seed(9)) for _ in range(2)]
    torch.testing.assert_close(a[0], a[1])


def test_hard_negatives_raise_on_a_row_without_negatives():
    sim = torch.zeros(3, 3)
    mask = torch.eye(3, dtype=torch.bool)
    mask[1] = True  # every caption is positive for image 1
    with pytest.raises(ValueError, match="image 1 has no negative caption"):
        hard_negative_indices(sim, mask)
    mask = torch.eye(3, dtype=torch.bool)
    mask[:, 2] = True  # every image is positive for caption 2
    with pytest.raises(ValueError, match="caption 2 has no negative image"):
        hard_negative_indices(sim, mask)
    with pytest.raises(ValueError, match="positive_mask must be a bool tensor"):
        hard_negative_indices(sim, torch.eye(3))
    with pytest.raises(ValueError, match="sim must be a non-empty"):
        hard_negative_indices(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool))


def test_itm_pairs_lists_positives_then_hard_negatives():
    B = 5
    g = torch.Generator().manual_seed(3)
    sim = torch.randn(B, B, generator=g)
    mask = torch.eye(B, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True  # images 0 and 1 are the same picture: their captions agree
    image, text, label = itm_pairs(sim, mask, g)
    assert image.shape == text.shape == label.shape == (3 * B,)
    assert label.tolist() == [1] * B + [0] * (2 * B)
    assert image[:B].tolist() == text[:B].tolist() == list(range(B))
    assert image[B:2 * B].tolist() == list(range(B)) and text[2 * B:].tolist() == list(range(B))
    assert mask[image, text].tolist() == label.bool().tolist()
    with pytest.raises(ValueError, match="True on its diagonal"):
        itm_pairs(sim, torch.zeros(B, B, dtype=torch.bool), g)
    with pytest.raises(ValueError, match="sim must be square"):
        itm_pairs(torch.randn(B, B + 1), torch.ones(B, B + 1, dtype=torch.bool), g)


def test_itm_loss_is_mean_cross_entropy_with_one_for_match():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    labels = torch.tensor([1, 1, 0])
    # -log p(label) per row, written out: p(match) = e^l1 / (e^l0 + e^l1)
    rows = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.0)), math.log(2)]
    assert itm_loss(logits, labels).item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    with pytest.raises(ValueError, match=r"logits must be \(M, 2\)"):
        itm_loss(torch.zeros(3, 3), labels)
    with pytest.raises(ValueError, match=r"labels must be \(M,\)"):
        itm_loss(logits, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="empty batch"):
        itm_loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be int64 0"):
        itm_loss(logits, torch.tensor([1, 2, 0]))


# --- weighted objective ----------------------------------------------------------------------


def test_weighted_objective_weights_terms_and_logs_them_detached():
    text = torch.tensor(2.0, requires_grad=True)
    image = torch.tensor(3.0, requires_grad=True)
    joint = torch.tensor(7.0, requires_grad=True)
    total, logs = weighted_objective({"text": text, "image": image, "joint": joint},
                                     {"text": 1.0, "image": 0.5, "joint": 0.25})
    assert total.item() == pytest.approx(2.0 + 1.5 + 1.75)
    total.backward()
    assert (text.grad.item(), image.grad.item(), joint.grad.item()) == (1.0, 0.5, 0.25)
    assert set(logs) == {"text", "image", "joint"}
    assert all(not v.requires_grad for v in logs.values()) and logs["joint"].item() == 7.0


def test_weighted_objective_skips_zero_weight_terms():
    text = torch.tensor(2.0, requires_grad=True)
    nan_term = torch.tensor(math.nan, requires_grad=True)  # would poison the sum if added in
    total, logs = weighted_objective({"text": text, "image": nan_term},
                                     {"text": 3.0, "image": 0.0, "joint": 0})
    assert total.item() == 6.0 and "joint" not in logs and math.isnan(logs["image"].item())
    total.backward()
    assert nan_term.grad is None


def test_weighted_objective_errors():
    t = torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"terms \['joint'\] have a nonzero weight"):
        weighted_objective({"text": t}, {"text": 1.0, "joint": 0.1})
    with pytest.raises(ValueError, match="weight of 'text' must be a finite number >= 0"):
        weighted_objective({"text": t}, {"text": -1.0})
    for bad in (math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="must be a finite number >= 0"):
            weighted_objective({"text": t}, {"text": bad})
    with pytest.raises(ValueError, match=r"terms \['txet'\] have no weight"):
        weighted_objective({"txet": t}, {"text": 1.0})
    with pytest.raises(ValueError, match="every weight is 0"):
        weighted_objective({"text": t}, {"text": 0.0})
    with pytest.raises(ValueError, match="must be a scalar tensor"):
        weighted_objective({"text": torch.ones(2)}, {"text": 1.0})


# --- attribute objective ---------------------------------------------------------------------


def test_attribute_targets_and_loss_on_a_hand_made_scene():
    colors, shapes = ["red", "green", "blue"], ["circle", "square"]
    scenes = [
        [{"color": "red", "shape": "square", "size": "small"},
         {"color": "blue", "shape": "circle", "size": "large"}],
        [],  # an empty scene has no attribute
        [{"color": "green", "shape": "circle"}, {"color": "green", "shape": "circle"}],
    ]
    targets = attribute_targets(scenes, colors, shapes)
    # index = colour * len(shapes) + shape: red-square 1, blue-circle 4, green-circle 2
    assert targets.tolist() == [[0, 1, 0, 0, 1, 0], [0] * 6, [0, 0, 1, 0, 0, 0]]
    assert targets.dtype == torch.float32

    logits = torch.tensor([[0.0] * 6, [1.0, -1.0, 0.0, 2.0, 0.0, 0.0], [3.0] * 6])
    # BCE with logits written out: -log sigmoid(x) for a 1, -log(1 - sigmoid(x)) for a 0
    sig = torch.sigmoid(logits.double())
    expected = -(targets * sig.log() + (1 - targets) * (1 - sig).log()).mean()
    assert attribute_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_attribute_errors():
    with pytest.raises(ValueError, match="has a colour or shape not in"):
        attribute_targets([[{"color": "pink", "shape": "circle"}]], ["red"], ["circle"])
    with pytest.raises(ValueError, match="empty batch"):
        attribute_targets([], ["red"], ["circle"])
    with pytest.raises(ValueError, match="same shape"):
        attribute_loss(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="empty batch"):
        attribute_loss(torch.zeros(0, 4), torch.zeros(0, 4))
