"""COCO's splits: Karpathy's test kept out of training, COCO 2017's layout, and the limit on
unreadable images. Run on a small shapes set packed in COCO's layouts (``pack_shapes_as_coco``),
through the same functions that read the real COCO."""

import json
import shutil
import warnings
from dataclasses import replace

import pytest
import torch

from velm_course.data.coco import (
    DatasetFormatError,
    DatasetNotFoundError,
    UnreadableImagesError,
    check_disjoint,
    coco_split,
    pack_shapes_as_coco,
    read_karpathy_split,
)
from velm_course.data.registry import open_caption_data
from velm_course.data.shapes import ShapesConfig, generate_shapes, shapes_split
from velm_course.engine.config import DataConfig

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    cfg = ShapesConfig(image_size=48, n_train=40, n_val=8, n_test=10, seed=11)
    return generate_shapes(tmp_path_factory.mktemp("shapes"), cfg, progress=False)


@pytest.fixture(scope="module")
def packed(shapes_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("packed")
    return {year: pack_shapes_as_coco(shapes_root, base / str(year), year=year) for year in (2014, 2017)}


# ----------------------------------------------------------------------------------------------
# Karpathy's test images never reach training

def test_no_karpathy_test_image_is_in_training(packed):
    for year, root in packed.items():
        ids = {s: set(coco_split(root, s, year=year).image_ids) for s in SPLITS}
        assert ids["train"] and ids["val"] and ids["test"]
        assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"] and not ids["val"] & ids["test"]
        # and through the registry, which checks it on every launch
        data = open_caption_data(DataConfig(dataset="coco" if year == 2014 else "coco2017", root=str(root)))
        assert set(data.train.image_ids) == ids["train"] and set(data.test.image_ids) == ids["test"]


def test_a_split_file_that_leaks_test_into_train_is_refused(packed, tmp_path):
    root = shutil.copytree(packed[2014], tmp_path / "coco")
    karpathy = json.loads((root / "dataset_coco.json").read_text())
    test_entry = next(img for img in karpathy["images"] if img["split"] == "test")
    # the same image listed again as restval: each split alone is well formed, so only the
    # disjointness check can notice
    karpathy["images"].insert(0, dict(test_entry, split="restval"))
    (root / "dataset_coco.json").write_text(json.dumps(karpathy))
    assert test_entry["cocoid"] in {i for i, _, _ in read_karpathy_split(root / "dataset_coco.json", "train")}
    with pytest.raises(DatasetFormatError, match=f"in both train and test, e.g. image id {test_entry['cocoid']}"):
        open_caption_data(DataConfig(dataset="coco", root=str(root)))


def test_check_disjoint_names_every_pair():
    check_disjoint({"train": [1, 2, 3], "val": [4], "test": [5, 6]})
    with pytest.raises(DatasetFormatError, match="2 image.* in both train and val, e.g. image id 2"):
        check_disjoint({"train": [1, 2, 3], "val": [3, 2], "test": [9]})
    with pytest.raises(DatasetFormatError, match="in both val and test"):
        check_disjoint({"train": [1], "val": [7], "test": [7]})


# ----------------------------------------------------------------------------------------------
# COCO 2017: the same Karpathy split over the 2017 folders

def test_2017_layout_gives_the_same_splits_and_images(packed, shapes_root):
    for split in SPLITS:
        a, b = coco_split(packed[2014], split), coco_split(packed[2017], split, year=2017)
        original = shapes_split(shapes_root, split)
        assert a.image_ids == b.image_ids == original.image_ids
        assert a.captions_by_id() == b.captions_by_id() == original.captions_by_id()
        for i in (0, len(b) - 1):
            assert torch.equal(b.get_uint8(i)[0], original.get_uint8(i)[0])
    # the images really come from both 2017 folders
    test_files = {file_name.split("/")[0] for _, file_name, _ in coco_split(packed[2017], "test", year=2017)._items}
    assert test_files == {"train2017", "val2017"}


def test_2017_official_train_holds_karpathy_test_images(packed):
    """Why the docs warn: COCO 2017's train split contains Karpathy test images."""
    official_train = set(coco_split(packed[2017], "train", scheme="official", year=2017).image_ids)
    karpathy_test = set(coco_split(packed[2017], "test", year=2017).image_ids)
    assert official_train & karpathy_test
    with pytest.raises(DatasetFormatError, match="in both train and test"):
        check_disjoint({"train": sorted(official_train), "test": sorted(karpathy_test)})


def test_missing_2017_folder_names_the_fetch_command(packed, tmp_path):
    root = shutil.copytree(packed[2017], tmp_path / "coco")
    shutil.rmtree(root / "val2017")
    with pytest.raises(DatasetNotFoundError, match=r"velm-course fetch coco --dest .* --year 2017"):
        coco_split(root, "test", year=2017)
    with pytest.raises(ValueError, match="2014 or 2017"):
        coco_split(root, "test", year=2015)


# ----------------------------------------------------------------------------------------------
# Unreadable images: a few are skipped and counted, too many stop the run and are named

def damage(root, folder, names, how):
    for name in names:
        path = root / folder / name
        if how == "missing":
            path.unlink()
        else:
            path.write_bytes(path.read_bytes()[:50])  # truncated, as by an interrupted unzip


def train_names(root):
    return [file_name.split("/")[1] for _, file_name, _ in read_karpathy_split(root / "dataset_coco.json", "train")]


@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_one_bad_image_is_skipped_when_verifying(packed, tmp_path, how):
    root = shutil.copytree(packed[2014], tmp_path / "coco")
    names = train_names(root)
    damage(root, "train2014", names[3:4], how)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = coco_split(root, "train", verify=True)
    assert ds.skipped == [f"train2014/{names[3]}"] and len(ds) == len(names) - 1


@pytest.mark.parametrize("verify", [True, False])
def test_too_many_bad_images_stop_the_run_and_are_named(packed, tmp_path, verify):
    root = shutil.copytree(packed[2014], tmp_path / "coco")
    names = train_names(root)
    bad = names[5:9]  # 4 of 40 training images: 10 %
    damage(root, "train2014", bad, "truncated")
    # 10 % is more than a 5 % limit (2 images) ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UnreadableImagesError) as err:
            ds = coco_split(root, "train", verify=verify, max_unreadable=0.05)
            for i in range(len(ds)):
                ds.get_uint8(i)
    message = str(err.value)
    # verifying reads every file first; without, the run stops at the third bad image it meets
    assert f"dataset_coco.json: {4 if verify else 3} of 40 images" in message
    assert "more than the 2 a run skips quietly" in message and ".train2014.zip.done" in message
    assert all(f"train2014/{name}" in message for name in bad[:3])
    # ... and within a 10 % limit (4 images) the run goes on, with every bad image counted
    with pytest.warns(UserWarning):
        ds = coco_split(root, "train", verify=verify, max_unreadable=0.1)
        for i in range(len(ds)):
            ds.get_uint8(i)
    assert sorted(ds.skipped) == sorted(f"train2014/{name}" for name in bad)


def test_the_limit_is_a_fraction(packed):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        coco_split(packed[2014], "val", max_unreadable=5)
    assert coco_split(packed[2014], "train").max_skipped == 1  # 1 % of 40, and never below one image
    assert replace(DataConfig(), dataset="coco2017").dataset == "coco2017"


# ----------------------------------------------------------------------------------------------
# COCO's captions are tokenised once (Hugging Face datasets) and read back by later launches

def test_coco_caption_tokens_come_from_the_datasets_cache(packed, tmp_path, monkeypatch):
    from velm_course.data.captions import CaptionVocab, normalize_caption
    from velm_course.data.loader import CaptionPairs

    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))  # where the cache goes
    data = open_caption_data(DataConfig(dataset="coco", root=str(packed[2014])))
    refs = [c for caps in data.train.captions_by_id().values() for c in caps]
    vocab = CaptionVocab.build(refs[: len(refs) // 2])  # some words of val and train unknown
    max_words = max(len(normalize_caption(c).split()) for split in ("train", "val")
                    for caps in data.split(split).captions_by_id().values() for c in caps)
    for split in ("train", "val"):
        own = CaptionPairs(data.split(split), vocab, max_words)  # tokenised here, by CaptionVocab
        cached = CaptionPairs(data.split(split), vocab, max_words,
                              tokens=data.caption_tokens(split, vocab, max_words))
        assert len(own) == len(cached) == 5 * len(data.split(split))
        assert all(torch.equal(own[j]["tokens"], cached[j]["tokens"]) for j in range(len(own)))
    assert any((tmp_path / "generated" / "hf_captions").rglob("*.arrow"))

    expected = CaptionPairs(data.train, vocab, max_words).tokens
    calls = []
    real_encode = CaptionVocab.encode
    monkeypatch.setattr(CaptionVocab, "encode", lambda self, c: calls.append(c) or real_encode(self, c))
    again = open_caption_data(DataConfig(dataset="coco", root=str(packed[2014])))
    tokens = again.caption_tokens("train", vocab, max_words)  # a second launch
    assert calls == []  # read from the cache: not one caption tokenised
    assert all(torch.equal(tokens[i], t) for i, t in zip(data.train.image_ids, expected, strict=True))
    # another vocabulary is tokenised afresh, never served the first one's ids
    again.caption_tokens("train", CaptionVocab.build(refs), max_words)
    assert len(calls) == len(refs)


# ----------------------------------------------------------------------------------------------
# A local stand-in for the COCO servers: fetch_coco's real path, offline

@pytest.mark.parametrize("year", [2014, 2017])
def test_mirror_then_fetch_gives_back_the_same_folder(packed, tmp_path, year):
    from velm_course.data.coco import fetch_coco, mirror_coco
    from velm_course.data.download import ChecksumError

    remotes = mirror_coco(packed[year], tmp_path / "mirror", year=year)
    assert [r.name for r in remotes] == [f"annotations_trainval{year}.zip", "caption_datasets.zip",
                                         f"val{year}.zip", f"train{year}.zip"]
    assert all(r.url.startswith("file://") and len(r.md5) == 32 and r.size > 0 for r in remotes)
    again = mirror_coco(packed[year], tmp_path / "mirror2", year=year)  # the same bytes every time
    assert [(r.size, r.md5) for r in again] == [(r.size, r.md5) for r in remotes]
    fetched = fetch_coco(tmp_path / "fetched", remotes=remotes, progress=False)
    original = sorted(p.relative_to(packed[year]) for p in packed[year].rglob("*") if p.is_file())
    copied = sorted(p.relative_to(fetched) for p in fetched.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert copied == original
    assert all((fetched / p).read_bytes() == (packed[year] / p).read_bytes() for p in original)
    assert coco_split(fetched, "test", year=year).captions_by_id() == coco_split(packed[year], "test", year=year).captions_by_id()
    # a mirror whose archive changed after its md5 was taken is refused
    archive = tmp_path / "mirror" / remotes[0].name
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte, same size
    archive.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        fetch_coco(tmp_path / "again", remotes=remotes[:1], progress=False)


def test_a_gone_karpathy_zip_says_where_to_put_the_split_file(tmp_path, monkeypatch):
    """Karpathy's zip is on a personal page that has answered 404 before: say what to do, keep the rest.
    (With the hub unreachable too; tests/test_karpathy_from_hub.py builds the file from the hub.)"""
    import http.server
    import threading

    from velm_course.data.coco import fetch_coco
    from velm_course.data.download import KARPATHY_SPLIT, Remote

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: False)  # no network
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gone = Remote(KARPATHY_SPLIT.name, f"http://127.0.0.1:{server.server_address[1]}/caption_datasets.zip")
    try:
        with pytest.raises(DatasetNotFoundError, match="answers 404.*Put a copy of dataset_coco.json"):
            fetch_coco(tmp_path / "coco", remotes=[gone], progress=False)
        (tmp_path / "coco" / "dataset_coco.json").write_text('{"images": []}')  # placed by hand
        fetch_coco(tmp_path / "coco", remotes=[gone], progress=False)  # now skipped, no request made
    finally:
        server.shutdown()
        server.server_close()
