"""The GPT-2 captioner (Hugging Face transformers): cached decoding equals recomputation, beam
width 1 is greedy, causal and image-dependent, trains through the engine, falls back offline with
a warning, reloads from ``save_pretrained`` exactly, and runs on a (tiny) BPE tokenizer."""

import json

import pytest
import torch

from velm_course.data.captions import BOS, EOS, PAD, CaptionVocab, caption_targets
from velm_course.data.loader import collate_captions
from velm_course.decoding import beam_search
from velm_course.engine import TrainConfig, fit
from velm_course.multimodal.hf_gpt2 import (
    GPT2Captioner,
    GPT2CaptionerConfig,
    GPT2CaptionTokenizer,
    gpt2_config_for,
    load_gpt2,
    small_gpt2,
)
from velm_course.nn.loss import IGNORE_INDEX
from velm_course.pipeline import captioner_loss

pytest.importorskip("transformers")

V, L = 12, 8  # vocabulary, longest caption in tokens


def config(**kw) -> GPT2CaptionerConfig:
    return GPT2CaptionerConfig(**{"vocab_size": V, "n_embd": 32, "n_layer": 2, "n_head": 4, "max_len": L,
                                  "dropout": 0.0, **kw})


def randomised(scale: float = 0.5) -> GPT2Captioner:
    """Large random weights: sharp, varied next-token distributions to decode."""
    torch.manual_seed(0)
    model = GPT2Captioner(config())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def strip(row):
    row = row.tolist()
    return row[: row.index(EOS) + 1] if EOS in row else row


def greedy_reference(model, images):
    """Greedy captions re-running the whole prefix through ``forward`` (no cache), with
    <pad> and <bos> ruled out by hand."""
    rows = []
    for row in range(len(images)):
        idx = torch.tensor([[BOS]])
        for _ in range(L - 1):
            logits, _ = model(images[row : row + 1], idx)
            last = logits[0, -1].clone()
            last[[PAD, BOS]] = float("-inf")
            idx = torch.cat([idx, last.argmax().view(1, 1)], 1)
            if idx[0, -1] == EOS:
                break
        rows.append(idx[0, 1:].tolist())
    return rows


def test_cached_generation_equals_uncached_and_beam_width_one_is_greedy():
    model = randomised()
    images = torch.rand(4, 3, 64, 64)
    cached = model.generate(images)
    uncached = model.generate_from(model.encode(images), use_cache=False)
    assert torch.equal(cached, uncached)
    assert [strip(r) for r in cached] == greedy_reference(model, images)
    assert len({tuple(strip(r)) for r in cached}) > 1  # the images get different captions
    beam = model.beam_search(images, beam_width=1, length_penalty=0.0)
    assert [strip(r) for r in beam] == [strip(r) for r in cached]
    # sampling: repeatable, and top_k=1 is greedy
    assert torch.equal(model.sample(images, seed=1), model.sample(images, seed=1))
    assert torch.equal(model.sample(images, top_k=1, seed=1), cached)


def test_cached_beam_search_reorders_gpt2s_cache():
    """Beams change parents along the way (checked); the cached search must then agree with one
    that re-runs every beam's prefix."""
    model = randomised(scale=0.2)  # flatter distributions: beams overtake one another
    images = torch.rand(4, 3, 64, 64)
    K = 3
    cached = model.beam_search(images, beam_width=K)
    grid, pooled = (x.repeat_interleave(K, dim=0) for x in model.encode(images))
    history = {"idx": torch.zeros(4 * K, 0, dtype=torch.long), "reordered": False}

    def step(new):
        history["idx"] = torch.cat([history["idx"], new], dim=1)
        logits = model.decode((grid, pooled), history["idx"])[:, -1]
        return logits.index_fill(-1, torch.tensor([PAD, BOS]), float("-inf"))

    def reorder(index):
        history["reordered"] |= not torch.equal(index, torch.arange(len(index)))
        history["idx"] = history["idx"][index]

    uncached, _ = beam_search(step, reorder, 4, BOS, EOS, PAD, K, L - 1)
    assert history["reordered"]
    assert [strip(r) for r in cached] == [strip(r) for r in uncached]


def test_causal_and_sees_the_image():
    model = randomised()
    images = torch.rand(2, 3, 64, 64)
    idx = torch.randint(3, V, (2, 6))
    changed = idx.clone()
    changed[:, 4:] = (changed[:, 4:] + 1) % V
    a, _ = model(images, idx)
    b, _ = model(images, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the future does not leak backwards
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    c, _ = model(torch.rand(2, 3, 64, 64), idx)
    assert not torch.allclose(a[:, 0], c[:, 0])  # another picture, other predictions from the start


def test_the_blind_model_writes_the_same_whatever_the_picture():
    torch.manual_seed(0)
    model = GPT2Captioner(config(blind=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))  # the blind token and cross-attention far from zero
    model.eval()
    assert model.encoder is None
    idx = torch.randint(3, V, (2, 6))
    a, _ = model(torch.rand(2, 3, 64, 64), idx)
    b, _ = model(torch.rand(2, 3, 64, 64), idx)
    assert torch.equal(a, b)
    with torch.no_grad():
        model.blind_token.add_(1.0)  # but the token is read: GPT-2 cross-attends to it
    assert not torch.allclose(model(torch.rand(2, 3, 64, 64), idx)[0], a)
    rows = model.generate(torch.rand(2, 3, 64, 64))
    assert torch.equal(rows[0], rows[1])  # two pictures, one caption


def test_trains_through_the_engine_with_captioner_loss():
    torch.manual_seed(0)
    model = GPT2Captioner(config())
    tokens = torch.tensor([[BOS, 4, 5, EOS, PAD], [BOS, 4, 6, 7, EOS]])
    idx, targets = caption_targets(tokens)
    assert (targets == IGNORE_INDEX).any()
    batch = {"images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), "idx": idx, "targets": targets}
    before = captioner_loss(model.eval(), batch)
    before = (before[0] / before[1]).item()

    def batches(start_step):
        while True:
            yield batch

    history = fit(model, captioner_loss, batches, TrainConfig(steps=30, batch_size=2, lr=3e-3, warmup=1,
                                                               device="cpu", log_every=10), progress=False)
    assert history[-1]["loss"] < 0.5 * before


def test_offline_fallback_warns_and_can_be_refused(monkeypatch):
    import velm_course.text.hf_encoder as hf_encoder

    monkeypatch.setattr(hf_encoder, "hub_reachable", lambda *a, **k: False)
    vocab = CaptionVocab.build(["a red circle", "a blue box"])
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loaded = load_gpt2("gpt2", vocab=vocab, config=config(vocab_size=len(vocab)))
    assert loaded.source == "random" and not loaded.pretrained and loaded.tokenizer is vocab
    model = GPT2Captioner(gpt2_config_for(loaded, config()), loaded.model)
    assert model.banned_tokens == (PAD, BOS)
    assert model(torch.rand(1, 3, 64, 64), torch.tensor([[BOS, 4]]))[0].shape == (1, 2, len(vocab))
    with pytest.raises(RuntimeError, match="cannot be reached"):
        load_gpt2("gpt2", vocab=vocab, allow_fallback=False)
    with pytest.raises(RuntimeError, match="pass vocab"):
        load_gpt2("gpt2")
    # Hugging Face's own offline switch: the hub is not even probed
    monkeypatch.setattr(hf_encoder, "hub_reachable", lambda *a, **k: pytest.fail("the hub was probed"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="HF_HUB_OFFLINE is set"):
        assert load_gpt2("gpt2", vocab=vocab, config=config(vocab_size=len(vocab))).source == "random"


def test_a_save_pretrained_folder_loads_back_the_same_logits(tmp_path):
    torch.manual_seed(1)
    gpt2 = small_gpt2(config()).eval()
    with torch.no_grad():
        for p in gpt2.parameters():
            p.add_(0.1 * torch.randn_like(p))  # nothing like a fresh init
    gpt2.save_pretrained(tmp_path)
    vocab = CaptionVocab(["<pad>", "<bos>", "<eos>", "<unk>", *"abcdefgh"])
    loaded = load_gpt2(str(tmp_path), vocab=vocab)
    assert loaded.source == f"local:{tmp_path}" and loaded.tokenizer is vocab
    idx, memory = torch.randint(0, V, (2, 6)), torch.randn(2, 5, 32)
    a = gpt2(idx, encoder_hidden_states=memory).logits
    b = loaded.model.eval()(idx, encoder_hidden_states=memory).logits
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no tokenizer"):
        load_gpt2(str(tmp_path))


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte alphabet, in its vocabulary order (id 0 is "!")."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_bpe(folder):
    """A GPT-2 tokenizer laid out as GPT-2's: 256 byte tokens, a few merges, <|endoftext|> last."""
    from transformers import AutoTokenizer

    merges = ["Ġ a", "Ġ r", "Ġr e", "Ġre d", "Ġ b", "Ġb o", "Ġbo x", "Ġ c", "Ġc i", "Ġci r"]
    vocab = {c: i for i, c in enumerate(bytes_to_unicode())}
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    return AutoTokenizer.from_pretrained(str(folder))


def test_the_bpe_path_tokenises_trains_and_generates(tmp_path):
    hf_tok = tiny_bpe(tmp_path / "tok")
    tok = GPT2CaptionTokenizer(hf_tok)
    end = hf_tok.eos_token_id
    assert tok.bos_id == tok.eos_id == end and tok.pad_id == 0
    assert tok.encode("A red box.") == [hf_tok.convert_tokens_to_ids(t) for t in ("Ġa", "Ġred", "Ġbox")]
    assert tok.decode([*tok.encode("a red circle"), end, 5]) == "a red circle"
    captions = ["a red box", "a blue circle"]
    tokens = tok.encode_batch(captions, tok.max_tokens(captions))
    batch = collate_captions([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "tokens": t} for t in tokens])
    # the course's data path: <eos> is a target, the padding after it is not
    assert (batch["targets"] == end).sum() == 2 and (batch["targets"] == IGNORE_INDEX).sum() > 0
    with pytest.raises(ValueError, match="more than max_len"):
        tok.encode_batch(captions, 2)

    torch.manual_seed(0)
    gpt2 = small_gpt2(config(vocab_size=len(hf_tok), bos_id=end, eos_id=end, pad_id=0, max_len=24))
    gpt2.save_pretrained(tmp_path / "model")
    hf_tok.save_pretrained(tmp_path / "model")
    loaded = load_gpt2(str(tmp_path / "model"))
    assert isinstance(loaded.tokenizer, GPT2CaptionTokenizer)
    cfg = gpt2_config_for(loaded, GPT2CaptionerConfig(vocab_size=0, max_len=12))
    assert (cfg.bos_id, cfg.eos_id, cfg.pad_id, cfg.max_len, cfg.n_embd) == (end, end, 0, 12, 32)
    model = GPT2Captioner(cfg, loaded.model)
    assert model.banned_tokens == (0,)  # "!" only: <bos> is <eos>, a fine next word
    batch["images"] = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    loss_sum, count = captioner_loss(model, batch)
    assert count == (batch["targets"] != IGNORE_INDEX).sum() and torch.isfinite(loss_sum)
    out = model.generate(torch.rand(3, 3, 64, 64))
    assert out.shape[0] == 3
    for row in out.tolist():
        written = row[: row.index(end) + 1] if end in row else row
        assert 0 not in written  # "!" never written
        tok.decode(row)  # text, whatever it says
