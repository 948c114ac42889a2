"""Karpathy captions through Hugging Face ``datasets`` (velm_course.data.hf_captions): the rows
equal ``read_karpathy_split``'s from the json and from the zip, the hub is tried first and falls
back offline, the hub's columns map onto ours, and the tokenised table is cached: a second load
calls no tokenizer, and a changed vocabulary or source file never gets stale ids.

The Karpathy file is the one ``pack_shapes_as_coco`` writes for a small shapes set, with a third
of the train images moved to restval and one caption given outer spaces. No network is used:
every cache (ours and Hugging Face's) is pointed at the test's temporary folder."""

import json
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import coco_with_restval

from velm_course.data import hf_captions
from velm_course.data.captions import BOS, EOS, PAD, CaptionVocab
from velm_course.data.coco import (
    DatasetFormatError,
    DatasetNotFoundError,
    read_karpathy_split,
)
from velm_course.data.hf_captions import (
    COLUMNS,
    HUB_NAME,
    as_records,
    karpathy_captions,
    tokenized_cache_file,
    tokenized_captions,
    tokenizer_fingerprint,
)

SPLITS = ("train", "val", "test", "restval")
MESSY = "  A Red circle, above.  "  # read_karpathy_split strips it; so must every source


pytestmark = pytest.mark.usefixtures("hf_caches_in_tmp")  # Hugging Face's caches in each test's folder


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A COCO folder with a Karpathy ``dataset_coco.json`` holding train, restval, val and test."""
    root, data = coco_with_restval(tmp_path_factory.mktemp("coco"), n_train=9, n_val=3, n_test=3, seed=5)
    next(img for img in data["images"] if img["split"] == "train")["sentences"][0]["raw"] = MESSY
    (root / "dataset_coco.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def zipped(coco, tmp_path_factory):
    """The same file inside Karpathy's ``caption_datasets.zip``, next to a Flickr file that must
    not be read."""
    root = tmp_path_factory.mktemp("zipped")
    with zipfile.ZipFile(root / "caption_datasets.zip", "w") as zf:
        zf.writestr("dataset_flickr8k.json", json.dumps({"images": []}))
        zf.write(coco / "dataset_coco.json", "dataset_coco.json")
    return root


def load(root, split, tmp_path, **kw):
    kw.setdefault("offline", True)
    return karpathy_captions(root, split, cache_dir=tmp_path / "cache", **kw)


def hub_like(split_file, parts, sentence_dicts=False):
    """Rows with yerevann/coco-karpathy's real columns for the Karpathy splits ``parts``, in the
    hub's order (one split after the other, as datasets concatenates "train+restval")."""
    from datasets import Dataset

    images = json.loads(Path(split_file).read_text())["images"]
    rows = []
    for part in parts:
        for k, img in enumerate(i for i in images if i["split"] == part):
            raw = [s["raw"] for s in img["sentences"]]
            rows.append({"filepath": img["filepath"], "sentids": list(range(len(raw))), "filename": img["filename"],
                         "imgid": k, "split": img["split"],
                         "sentences": [{"raw": r, "tokens": r.split()} for r in raw] if sentence_dicts else raw,
                         "cocoid": img["cocoid"], "url": f"http://images.cocodataset.org/{img['filename']}"})
    return Dataset.from_list(rows)


# ----------------------------------------------------------------------------------------------
# The rows: from the json, from the zip, the same as read_karpathy_split

@pytest.mark.parametrize("split", SPLITS)
def test_json_rows_are_read_karpathy_split_one_row_per_caption(coco, tmp_path, split):
    ds = load(coco, split, tmp_path)
    expected = read_karpathy_split(coco / "dataset_coco.json", split)
    assert tuple(ds.column_names) == COLUMNS
    assert as_records(ds) == expected  # same ids, same order, same (stripped) captions
    assert len(ds) == sum(len(caps) for _, _, caps in expected)
    assert "local file" in ds.info.description
    own = {img["cocoid"]: img["split"] for img in json.loads((coco / "dataset_coco.json").read_text())["images"]}
    assert [own[i] for i in ds["cocoid"]] == list(ds["split"])
    if split == "train":
        assert set(ds["split"]) == {"train", "restval"}  # train includes restval
        assert MESSY.strip() in ds["caption"]


def test_zip_gives_the_json_rows_without_unpacking_the_folder(coco, zipped, tmp_path):
    for split in SPLITS:
        from_zip, from_json = load(zipped, split, tmp_path), load(coco, split, tmp_path)
        assert from_zip.to_dict() == from_json.to_dict()
        assert "dataset_coco.json in" in from_zip.info.description
    assert [p.name for p in zipped.iterdir()] == ["caption_datasets.zip"]  # nothing unpacked beside it


def test_missing_source_names_the_fetch_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"velm-course fetch coco --dest {tmp_path / 'nowhere'}"):
        load(tmp_path / "nowhere", "test", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="velm-course fetch coco --dest DIR"):
        load(None, "test", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load(tmp_path, "validation", tmp_path)


# ----------------------------------------------------------------------------------------------
# The hub: tried first, falls back fast offline, its columns mapped onto ours

def test_hub_is_tried_first_and_an_offline_failure_falls_back(coco, tmp_path, monkeypatch):
    calls = []

    def offline_hub(name, hub_split, cache_dir):
        calls.append((name, hub_split, cache_dir))
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(hf_captions, "_load_hub", offline_hub)
    ds = load(coco, "val", tmp_path, offline=False)
    assert calls == [(HUB_NAME, "validation", tmp_path / "cache" / "hub")]
    assert as_records(ds) == read_karpathy_split(coco / "dataset_coco.json", "val")
    assert "OfflineModeIsEnabled" in ds.info.description and "local file" in ds.info.description


def test_an_unreachable_or_offline_hub_is_not_asked(coco, tmp_path, monkeypatch):
    """No load_dataset call (25 s of retries) when the probe fails, nor any probe offline."""
    probes = []
    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: probes.append(a) or False)
    monkeypatch.setattr(hf_captions, "_load_hub", lambda *a: pytest.fail("load_dataset called"))
    assert "cannot be reached" in load(coco, "test", tmp_path, offline=False).info.description
    assert len(probes) == 1
    monkeypatch.setattr(hf_captions, "_library_offline", lambda: False)
    assert "offline" in load(coco, "test", tmp_path, offline=True).info.description
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert "offline" in load(coco, "test", tmp_path, offline=None).info.description
    assert len(probes) == 1


def test_real_load_dataset_with_hf_datasets_offline_falls_back_in_seconds(coco, tmp_path, monkeypatch):
    """HF_DATASETS_OFFLINE=1 as a user sets it: the real load_dataset is called, finds no cached
    copy and fails at once (online, it retries for ~25 s); the local file is used. datasets reads
    the variable when imported, so the test sets what it derives from it too."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    ds = load(coco, "test", tmp_path, offline=None)
    seconds = time.perf_counter() - start
    assert f"hub {HUB_NAME}: ConnectionError" in ds.info.description and "local file" in ds.info.description
    assert as_records(ds) == read_karpathy_split(coco / "dataset_coco.json", "test")
    assert seconds < 5, seconds  # the hub attempt itself takes milliseconds


@pytest.mark.parametrize("variant", ["strings", "karpathy-dicts", "no-split-column"])
def test_hub_columns_map_onto_ours(coco, tmp_path, monkeypatch, variant):
    asked = []

    def fake_hub(name, hub_split, cache_dir):
        asked.append(hub_split)
        parts = {"train": ["train"], "validation": ["val"], "test": ["test"], "restval": ["restval"],
                 "train+restval": ["train", "restval"]}[hub_split]
        hub = hub_like(coco / "dataset_coco.json", parts, sentence_dicts=variant == "karpathy-dicts")
        return hub.remove_columns("split") if variant == "no-split-column" else hub

    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(hf_captions, "_load_hub", fake_hub)
    for split in SPLITS:
        ds = load(None, split, tmp_path, offline=False)
        local = load(coco, split, tmp_path)  # offline: the local file
        assert tuple(ds.column_names) == COLUMNS and ds.features == local.features
        assert f"hub {HUB_NAME}" in ds.info.description
        if variant == "no-split-column":  # every image gets the split asked for
            assert set(ds["split"]) == {split}
            ds, local = ds.remove_columns("split"), local.remove_columns("split")
        # the hub lists train then restval; the local file interleaves them: compare as sets of rows
        rows = sorted(zip(*ds.to_dict().values(), strict=True))
        assert rows == sorted(zip(*local.to_dict().values(), strict=True))
        assert sorted(as_records(ds)) == sorted(read_karpathy_split(coco / "dataset_coco.json", split))
    assert asked == ["train+restval", "validation", "test", "restval"]


def test_an_empty_split_is_an_empty_table_and_a_bad_file_says_why(tmp_path):
    image = {"cocoid": 3, "filepath": "val2014", "filename": "x.jpg", "split": "test",
             "sentences": [{"raw": "a dog"}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [image]}))
    empty = load(tmp_path, "restval", tmp_path)
    assert len(empty) == 0 and tuple(empty.column_names) == COLUMNS
    image["sentences"] = [{"text": "a dog"}]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [image]}))
    with pytest.raises(DatasetFormatError, match=r"dataset_coco.json: images\[0\].sentences\[0\] has no field 'raw'"):
        load(tmp_path, "test", tmp_path)


# ----------------------------------------------------------------------------------------------
# Tokenised once

class CountingTokenizer:
    """A CaptionVocab that counts its encode calls."""

    def __init__(self, vocab):
        self.vocab, self.calls = vocab, 0

    def encode(self, caption):
        self.calls += 1
        return self.vocab.encode(caption)

    def to_list(self):
        return self.vocab.to_list()


@pytest.fixture(scope="module")
def vocab(coco):
    captions = [c for _, _, caps in read_karpathy_split(coco / "dataset_coco.json", "train") for c in caps]
    return CaptionVocab.build(captions)


def test_ids_are_the_tokenizers_padded_like_encode_batch(coco, vocab, tmp_path):
    ds = load(coco, "train", tmp_path)
    max_len = max(len(vocab.encode(c)) for c in ds["caption"])
    tok = tokenized_captions(ds, vocab, "train", max_len, cache_dir=tmp_path / "cache")
    assert tok.select_columns(list(COLUMNS)).to_dict() == ds.to_dict()  # the rows are kept
    for row in tok:
        ids = vocab.encode(row["caption"])
        assert row["input_ids"] == [BOS, *ids, EOS] + [PAD] * (max_len - len(ids))
        assert row["length"] == len(ids)
    assert torch.equal(tok.with_format("torch")[:]["input_ids"], vocab.encode_batch(list(ds["caption"]), max_len))


def test_long_captions_are_cut_without_eos_and_counted(coco, vocab, tmp_path):
    ds = load(coco, "test", tmp_path)
    with pytest.warns(UserWarning, match="longer than max_len=2"):
        tok = tokenized_captions(ds, vocab, "test", 2, cache_dir=tmp_path / "cache")
    assert any(n > 2 for n in tok["length"])
    for row in tok:
        ids = vocab.encode(row["caption"])
        expected = [BOS, *ids, EOS, PAD, PAD][:4] if len(ids) <= 2 else [BOS, *ids[:2], PAD]
        assert row["input_ids"] == expected and row["length"] == len(ids)


def test_second_load_reads_the_cache_and_calls_no_tokenizer(coco, vocab, tmp_path, monkeypatch):
    first = CountingTokenizer(vocab)
    tok1 = tokenized_captions(coco, first, "test", 20, cache_dir=tmp_path / "cache", offline=True)
    assert first.calls == len(tok1) > 0
    cache = tokenized_cache_file(load(coco, "test", tmp_path), vocab, "test", 20, tmp_path / "cache")
    assert cache.is_file() and cache.parent == tmp_path / "cache" / "tokenized" and cache.name.startswith("test-")
    assert [f["filename"] for f in tok1.cache_files] == [str(cache)]

    # a second launch: neither the file is parsed nor a caption tokenised again
    monkeypatch.setattr(hf_captions, "read_karpathy_split", lambda *a: pytest.fail("the json was parsed again"))
    second = CountingTokenizer(vocab)
    tok2 = tokenized_captions(coco, second, "test", 20, cache_dir=tmp_path / "cache", offline=True)
    assert second.calls == 0
    assert tok2.to_dict() == tok1.to_dict()
    assert [f["filename"] for f in tok2.cache_files] == [str(cache)]


def test_a_changed_vocabulary_gets_its_own_cache_not_stale_ids(coco, vocab, tmp_path):
    ds = load(coco, "val", tmp_path)
    other = CaptionVocab(vocab.to_list()[:4] + vocab.to_list()[4:][::-1])  # same words, other ids
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(vocab)
    assert tokenizer_fingerprint(CountingTokenizer(vocab)) == tokenizer_fingerprint(vocab)
    tok_a = tokenized_captions(ds, vocab, "val", 20, cache_dir=tmp_path / "cache")
    tok_b = tokenized_captions(ds, other, "val", 20, cache_dir=tmp_path / "cache")
    for row in tok_b:  # the other vocabulary's ids, not the stale ones of the first cache
        assert row["input_ids"][1:1 + row["length"]] == other.encode(row["caption"])
    assert list(tok_a["input_ids"]) != list(tok_b["input_ids"])
    assert tok_a.cache_files != tok_b.cache_files
    with pytest.raises(TypeError, match="tokenizer_id"):
        tokenizer_fingerprint(object())


def test_gpt2_bpe_ids_and_merges_key_the_cache(coco, tmp_path):
    """GPT2CaptionTokenizer: <bos> = <eos> = <|endoftext|>, padding id 0, as its encode_batch; two
    BPE tokenizers with the same tokens but other merges cut words differently: other caches."""
    from test_hf_gpt2 import tiny_bpe  # a small GPT-2 BPE tokenizer written to a folder

    from velm_course.multimodal.hf_gpt2 import GPT2CaptionTokenizer

    tok = GPT2CaptionTokenizer(tiny_bpe(tmp_path / "tok"))
    ds = load(coco, "test", tmp_path)
    n = tok.max_tokens(ds["caption"])
    out = tokenized_captions(ds, tok, "test", n, cache_dir=tmp_path / "cache")
    assert torch.equal(out.with_format("torch")[:]["input_ids"], tok.encode_batch(list(ds["caption"]), n))
    folder = tmp_path / "tok"
    merges = (folder / "merges.txt").read_text().splitlines()
    (folder / "merges.txt").write_text("\n".join(merges[:-2]) + "\n")  # "Ġ c", "Ġc i", then not "Ġci r"
    from transformers import AutoTokenizer

    fewer_merges = GPT2CaptionTokenizer(AutoTokenizer.from_pretrained(str(folder)))
    assert fewer_merges.encode("a circle") != tok.encode("a circle")
    assert tokenizer_fingerprint(fewer_merges) != tokenizer_fingerprint(tok)


def test_a_changed_source_file_is_read_again(coco, vocab, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    data = json.loads((coco / "dataset_coco.json").read_text())
    (root / "dataset_coco.json").write_text(json.dumps(data))
    before = tokenized_captions(root, vocab, "test", 20, cache_dir=tmp_path / "cache", offline=True)
    test_image = next(img for img in data["images"] if img["split"] == "test")
    test_image["sentences"][0]["raw"] = "a blue square"
    time.sleep(0.01)  # a later modification time, whatever the file system's resolution
    (root / "dataset_coco.json").write_text(json.dumps(data))
    after = tokenized_captions(root, vocab, "test", 20, cache_dir=tmp_path / "cache", offline=True)
    assert as_records(after) == read_karpathy_split(root / "dataset_coco.json", "test")
    assert after[0]["input_ids"][1:4] == vocab.encode("a blue square")
    assert after.cache_files != before.cache_files
