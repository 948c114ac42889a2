"""The three-objective pretrainer (velm_course.multimodal.pretrainer): every term finite and
computed only when weighted, the objective as the weighted sum, gradient shares, each
objective reaching the shared adapter alone, hard negatives that are never positives and
come from the model's own (saved) generator, distinct-image batches that resume and cover
every image once per epoch, and a short training run that lowers the objective and logs
every term."""

import os
import signal

import pytest
import torch

from velm_course.data.captions import BOS, EOS, PAD, whole_captions
from velm_course.engine import TrainConfig, fit
from velm_course.engine.trainer import TrainingInterrupted
from velm_course.multimodal import pretrainer as pt
from velm_course.multimodal.dual_encoder import similarity_matrix
from velm_course.multimodal.pretrainer import (
    TERMS,
    Pretrainer,
    PretrainerConfig,
    grad_share,
    image_batches,
    objective,
)

V, DV, N, A = 12, 8, 4, 6  # vocabulary, feature width, image tokens, attributes


def tiny(**kw) -> Pretrainer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, image_dim=DV, n_attributes=A, d_model=16, embed_dim=8, n_layer=1,
               n_adapter=1, n_head=2, max_len=8, dropout=0.0, seed=0)
    return Pretrainer(PretrainerConfig(**{**cfg, **kw}))


def data(n: int = 16, K: int = 2, L: int = 7, seed: int = 1):
    """n images of random features, K random captions each (n, K, L), random attributes."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(n, N, DV, generator=g)
    tokens = torch.full((n, K, L), PAD, dtype=torch.long)
    for i in range(n):
        for k in range(K):
            m = int(torch.randint(1, L - 2, (1,), generator=g))
            words = torch.randint(4, V, (m,), generator=g).tolist()
            tokens[i, k, : m + 2] = torch.tensor([BOS, *words, EOS])
    attributes = (torch.rand(n, A, generator=g) < 0.3).float()
    return grid, grid.mean(dim=1), tokens, attributes


def one_batch(B: int = 6, step: int = 0) -> dict:
    batches = image_batches(*data(), batch_size=B, seed=0, steps=step + 1)
    return next(batches(step))


def test_every_term_is_finite_and_joint_is_their_sum():
    model = tiny()
    terms = model.terms(one_batch(), all_terms=True)
    assert sorted(terms) == sorted(TERMS)
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    torch.testing.assert_close(terms["joint"], terms["contrastive"] + terms["itm"])
    no_itm = tiny(itm=False).terms(one_batch(), all_terms=True)
    assert "itm" not in no_itm
    torch.testing.assert_close(no_itm["joint"], no_itm["contrastive"])


def test_only_weighted_terms_are_computed_and_objective_is_alpha_text():
    model = tiny(alpha=0.7, beta=0.0, gamma=0.0)
    batch = one_batch()
    assert sorted(model.terms(batch)) == ["text"]
    loss_sum, count, logs = objective(model, batch)
    text = model.terms(batch)["text"]
    assert count == 6
    torch.testing.assert_close(loss_sum, 6 * 0.7 * text)
    torch.testing.assert_close(logs["text"], 6 * text)


def test_weights_scale_the_objective():
    model = tiny(alpha=0.5, beta=2.0, gamma=3.0)
    batch = one_batch()
    state = model.itm_generator.get_state()
    terms = model.terms(batch, all_terms=True)
    model.itm_generator.set_state(state)  # the same hard negatives again
    loss_sum, count, logs = objective(model, batch)
    expected = 0.5 * terms["text"] + 2.0 * terms["image"] + 3.0 * terms["joint"]
    torch.testing.assert_close(loss_sum, count * expected)
    assert sorted(logs) == sorted(TERMS)
    torch.testing.assert_close(logs["itm"], count * terms["itm"])
    model.config.beta = 0.0  # weights are read at every call
    model.itm_generator.set_state(state)
    loss_sum, _, logs = objective(model, batch)
    torch.testing.assert_close(loss_sum, count * (0.5 * terms["text"] + 3.0 * terms["joint"]))
    assert "image" not in logs


def test_grad_share_sums_to_one_and_a_zero_weight_gets_zero():
    model = tiny()
    batch = one_batch()
    state = model.itm_generator.get_state()
    model.train()
    shares = grad_share(model, batch)
    assert sum(shares[f"share_{k}"] for k in ("text", "image", "joint")) == pytest.approx(1.0)
    assert all(shares[f"norm_{k}"] > 0 for k in ("text", "image", "joint"))
    assert all(p.grad is None for p in model.parameters())  # no .grad pollution
    assert torch.equal(model.itm_generator.get_state(), state) and model.training
    # weighting a term scales its norm
    doubled = tiny(beta=2.0)
    assert grad_share(doubled, batch)["norm_image"] == pytest.approx(2 * shares["norm_image"],
                                                                     rel=1e-5)
    no_image = grad_share(tiny(beta=0.0), batch)
    assert no_image["share_image"] == 0.0 and no_image["norm_image"] == 0.0
    assert no_image["share_text"] + no_image["share_joint"] == pytest.approx(1.0)


@pytest.mark.parametrize("term", ["text", "image", "contrastive", "itm"])
def test_each_objective_alone_reaches_the_shared_adapter(term):
    model = tiny()
    terms = model.terms(one_batch(), all_terms=True)
    adapter = list(model.image.parameters())
    grads = torch.autograd.grad(terms[term], adapter, allow_unused=True)
    # every adapter weight matrix moves: the input projection and the adapter block
    moved = [g is not None and g.abs().sum() > 0 for g in grads]
    names = [n for n, _ in model.image.named_parameters()]
    assert all(moved), [n for n, m in zip(names, moved, strict=True) if not m]


def nearest(rows: torch.Tensor, table: torch.Tensor) -> list[int]:
    """For each of rows (M, ...), the index of the entry of table (B, ...) it equals."""
    dist = (rows.flatten(1)[:, None] - table.flatten(1)[None]).abs().amax(dim=-1)  # (M, B)
    assert bool((dist.amin(dim=1) < 1e-6).all()), "a row is no entry of the table"
    return dist.argmin(dim=1).tolist()


def test_itm_pairs_what_it_labels_and_never_calls_a_positive_a_negative(monkeypatch):
    """What reaches the matching fusion: each of the 3B rows is traced back to the caption and
    the image it was built from, and compared with the label the loss gets."""
    seen = {}
    real_pairs, real_loss = pt.itm_pairs, pt.itm_loss

    def spy_pairs(sim, positive, generator):
        seen["sim"], seen["generator"] = sim, generator
        return real_pairs(sim, positive, generator)

    def spy_loss(logits, labels):
        seen["labels"] = labels
        return real_loss(logits, labels)

    model = tiny()
    real_fusion = model.itm_fusion.forward

    def spy_fusion(text, grid, pooled, *args, **kw):
        seen["text"], seen["grid"] = text.detach(), grid.detach()
        return real_fusion(text, grid, pooled, *args, **kw)

    monkeypatch.setattr(pt, "itm_pairs", spy_pairs)
    monkeypatch.setattr(pt, "itm_loss", spy_loss)
    monkeypatch.setattr(model.itm_fusion, "forward", spy_fusion)
    batch = one_batch()
    with torch.no_grad():
        states = model.text(whole_captions(batch["idx"], batch["targets"]))[0]  # (B, L, D)
        tokens = model.image(batch["grid"], batch["pooled"])[0]  # (B, N, D)
    for _ in range(5):
        model.terms(batch)
        text_of, image_of = nearest(seen["text"], states), nearest(seen["grid"], tokens)
        labels = seen["labels"].tolist()
        assert len(labels) == 18 and sum(labels) == 6
        assert all((t == i) == (y == 1) for t, i, y in zip(text_of, image_of, labels, strict=True))
        # every image meets one negative caption, every caption one negative image
        negatives = [(t, i) for t, i, y in zip(text_of, image_of, labels, strict=True) if y == 0]
        assert sorted(i for _, i in negatives[:6]) == list(range(6))
        assert sorted(t for t, _ in negatives[6:]) == list(range(6))
        assert seen["generator"] is model.itm_generator and not seen["sim"].requires_grad
    # the draws come from the similarities: the contrastive logits of the batch
    with torch.no_grad():
        img = model.embed_images(batch["grid"], batch["pooled"])
        txt = model.embed_texts(whole_captions(batch["idx"], batch["targets"]))
        torch.testing.assert_close(seen["sim"], model.logit_scale().exp() * img @ txt.T)


def test_generator_state_is_saved_with_the_weights():
    model, batch = tiny(seed=5), one_batch()
    model.terms(batch)  # move the generator on
    restored = tiny(seed=99)
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.terms(batch)["itm"], model.terms(batch)["itm"])
    # a different seed draws other negatives (so the check above could fail)
    other = tiny(seed=99)
    other.load_state_dict({k: v for k, v in model.state_dict().items() if k != "_extra_state"},
                          strict=False)
    draws = [other.terms(batch)["itm"].item() for _ in range(3)]
    fresh = tiny(seed=5)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if k != "_extra_state"},
                          strict=False)
    assert draws != [fresh.terms(batch)["itm"].item() for _ in range(3)]


def test_bad_batches_raise():
    model = tiny()
    batch = one_batch()
    batch["image_id"] = batch["image_id"].clone()
    batch["image_id"][1] = batch["image_id"][0]
    with pytest.raises(ValueError, match="same image more than once"):
        model.terms(batch)
    with pytest.raises(ValueError, match="lacks"):
        model.terms({k: v for k, v in one_batch().items() if k != "attributes"})
    # attributes are not needed when the image term is not computed
    tiny(beta=0.0).terms({k: v for k, v in one_batch().items() if k != "attributes"})
    with pytest.raises(ValueError, match="all 0"):
        PretrainerConfig(vocab_size=V, image_dim=DV, n_attributes=A, alpha=0, beta=0, gamma=0)
    with pytest.raises(ValueError, match="beta must be"):
        PretrainerConfig(vocab_size=V, image_dim=DV, n_attributes=A, beta=-1.0)


def test_image_batches_distinct_resumable_and_one_epoch_covers_every_image():
    grid, pooled, tokens, attributes = data(n=16, K=3)
    batches = image_batches(grid, pooled, tokens, attributes, batch_size=4, seed=7, steps=12)
    run = list(batches(0))
    assert len(run) == 12
    for b in run:
        assert len(set(b["image_id"].tolist())) == 4
        rows = b["image_id"]
        torch.testing.assert_close(b["grid"], grid[rows])
        # the caption is one of the image's own K captions, split by caption_targets
        whole = whole_captions(b["idx"], b["targets"])
        assert all(any(torch.equal(whole[r], tokens[i, k]) for k in range(3))
                   for r, i in enumerate(rows.tolist()))
    for epoch in range(3):  # 4 steps per epoch, every image exactly once
        ids = torch.cat([b["image_id"] for b in run[4 * epoch: 4 * epoch + 4]])
        assert sorted(ids.tolist()) == list(range(16))
    assert not torch.equal(run[0]["image_id"], run[4]["image_id"])  # a new order each epoch
    for s in (1, 5, 11):
        resumed = list(batches(s))
        assert len(resumed) == 12 - s
        for a, b in zip(resumed, run[s:], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    # captions differ between steps: not always the first
    chosen = {tuple(whole_captions(b["idx"], b["targets"])[0].tolist()) for b in run}
    assert len(chosen) > 1


def test_image_batches_never_repeat_an_image_across_an_epoch_boundary():
    grid, pooled, tokens, attributes = data(n=10, K=1)
    run = list(image_batches(grid, pooled, tokens, attributes, batch_size=4, seed=0, steps=9)(0))
    assert all(len(set(b["image_id"].tolist())) == 4 for b in run)
    for epoch in range(4):  # 2 steps per epoch: 8 distinct images, 2 sit the epoch out
        ids = torch.cat([b["image_id"] for b in run[2 * epoch: 2 * epoch + 2]]).tolist()
        assert len(set(ids)) == 8
    with pytest.raises(ValueError, match="distinct images"):
        image_batches(grid, pooled, tokens, attributes, batch_size=11, seed=0, steps=1)
    empty = tokens.clone()
    empty[3, 0] = PAD
    with pytest.raises(ValueError, match="empty"):
        image_batches(grid, pooled, empty, attributes, batch_size=4, seed=0, steps=1)


def test_generate_and_retrieval_on_the_pretrainer():
    model = tiny().train()
    grid, pooled, tokens, _ = data(n=5, K=1)
    out = model.generate(grid, pooled)
    assert out.shape[0] == 5 and out.shape[1] <= 7 and model.training
    assert int(out.min()) >= 0 and int(out.max()) < V
    sim = similarity_matrix(model, grid, pooled, tokens[:, 0], batch_size=2)
    assert sim.shape == (5, 5) and float(sim.abs().max()) <= 1 + 1e-5


def test_training_lowers_the_objective_and_logs_every_term():
    grid, pooled, tokens, attributes = data(n=16, K=2)
    model = tiny()
    batches = image_batches(grid, pooled, tokens, attributes, batch_size=8, seed=0, steps=30)
    full = next(image_batches(grid, pooled, tokens, attributes, batch_size=16, seed=1,
                              steps=1)(0))

    def measured() -> float:
        model.eval()
        model.itm_generator.manual_seed(123)
        with torch.no_grad():
            loss_sum, count, _ = objective(model, full)
        return loss_sum.item() / count

    before = measured()
    cfg = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup=3, log_every=5, checkpoint_every=0,
                      device="cpu", seed=0)
    history = fit(model, objective, batches, cfg, progress=False)
    after = measured()
    assert after < before - 0.3, (before, after)
    for row in history:
        assert {"loss_text", "loss_image", "loss_contrastive", "loss_itm"} <= set(row)
    assert history[-1]["loss"] < history[0]["loss"]


def test_an_interrupted_run_resumes_bit_identically(tmp_path):
    """Dropout and the hard-negative draws both continue where they stopped: the engine
    restores the global random state, the model's state_dict carries its generator."""
    grid, pooled, tokens, attributes = data(n=16, K=2)
    cfg = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup=2, log_every=1, checkpoint_every=2,
                      device="cpu", seed=0)
    batches = image_batches(grid, pooled, tokens, attributes, batch_size=4, seed=0, steps=6)
    uninterrupted = tiny(dropout=0.1)
    fit(uninterrupted, objective, batches, cfg, run_dir=tmp_path / "a", progress=False)
    calls = {"n": 0}

    def stop_in_step_3(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return objective(model, batch)

    with pytest.raises(TrainingInterrupted):
        fit(tiny(dropout=0.1), stop_in_step_3, batches, cfg, run_dir=tmp_path / "b",
            progress=False)
    resumed = tiny(dropout=0.1, seed=1)  # another seed: only the checkpoint can set the draws
    fit(resumed, objective, batches, cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = uninterrupted.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k != "_extra_state")
    assert torch.equal(a["_extra_state"]["itm_generator"], b["_extra_state"]["itm_generator"])


def test_training_uses_no_order_dependent_kernels():
    """The same weights with and without torch's deterministic algorithms. The backward of
    advanced indexing with repeated rows (each image and caption is picked three times for
    matching) sums in a thread-dependent order on the CPU, so runs differed in the last bits
    from process to process, and a notebook's stored numbers with them."""
    def train(deterministic):
        torch.use_deterministic_algorithms(deterministic)
        try:
            torch.manual_seed(0)
            n = 96
            grid, tokens = torch.randn(n, 16, 32), torch.randint(4, 30, (n, 3, 12))
            tokens[:, :, 0], tokens[:, :, 9], tokens[:, :, 10:] = BOS, EOS, PAD
            attributes = (torch.rand(n, 6) < 0.2).float()
            model = Pretrainer(PretrainerConfig(vocab_size=30, image_dim=32, n_attributes=6, d_model=32,
                                                embed_dim=16, n_head=2, max_len=14))
            fit(model, objective, image_batches(grid, grid.mean(1), tokens, attributes, 32, 0, 8),
                TrainConfig(steps=8, batch_size=32, lr=2e-3, warmup=1, log_every=8), progress=False)
            return model.state_dict()
        finally:
            torch.use_deterministic_algorithms(False)

    torch.set_num_threads(2)  # the order-dependent kernels only differ with more than one thread
    try:
        a, b = train(False), train(True)
    finally:
        torch.set_num_threads(1)
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
