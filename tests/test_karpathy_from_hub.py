"""Karpathy's ``dataset_coco.json`` rebuilt from the Hugging Face copy of his split
(``hf_captions.karpathy_json_from_hub`` / ``write_karpathy_split_from_hub``), and ``fetch_coco``
doing so when his zip answers 404.

The Karpathy file is the one ``pack_shapes_as_coco`` writes for a small shapes set, with a third
of the train images moved to restval; the "hub" is that file turned into yerevann/coco-karpathy's
rows (its columns, captions as plain strings, one hub split per Karpathy split), saved with
``save_to_disk`` and served by a replaced ``_load_hub``. No network is used: Karpathy's server is
a local one that answers 404, and every cache is in the test's temporary folder."""

import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import coco_with_restval

from velm_course.data import hf_captions
from velm_course.data.captions import normalize_caption
from velm_course.data.coco import (
    DatasetFormatError,
    DatasetNotFoundError,
    check_disjoint,
    coco_split,
    fetch_coco,
    mirror_coco,
    read_karpathy_split,
)
from velm_course.data.download import KARPATHY_SPLIT, Remote
from velm_course.data.hf_captions import (
    HUB_ALL_SPLITS,
    HUB_NAME,
    KARPATHY_COCO_COUNTS,
    karpathy_json_from_hub,
    write_karpathy_split_from_hub,
)
from velm_course.data.registry import open_caption_data
from velm_course.engine.config import DataConfig

SPLITS = ("train", "val", "test", "restval")
HUB_OF = {"train": "train", "restval": "restval", "val": "validation", "test": "test"}  # the hub's split names


@pytest.fixture(autouse=True)
def _caches_in_tmp(hf_caches_in_tmp, tmp_path, monkeypatch):
    """Hugging Face's caches and ours (VELM_DATA_DIR) in the test's folder."""
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """COCO's layout with a Karpathy file holding train, restval, val and test."""
    root, _ = coco_with_restval(tmp_path_factory.mktemp("coco"), n_train=12, n_val=4, n_test=5, seed=3)
    return root


def hub_rows(split_file, sentence_dicts=False):
    """{Karpathy split: rows with yerevann/coco-karpathy's columns}. Karpathy's imgid is the
    image's place in his file and his sentids number every caption; the hub keeps both."""
    images = json.loads(Path(split_file).read_text())["images"]
    rows, sentid = {split: [] for split in SPLITS}, 0
    for imgid, img in enumerate(images):
        raw = [s["raw"] for s in img["sentences"]]
        rows[img["split"]].append({
            "filepath": img["filepath"], "sentids": list(range(sentid, sentid + len(raw))),
            "filename": img["filename"], "imgid": imgid, "split": img["split"],
            "sentences": [{"raw": r, "tokens": r.split()} for r in raw] if sentence_dicts else raw,
            "cocoid": img["cocoid"], "url": f"http://images.cocodataset.org/{img['filepath']}/{img['filename']}"})
        sentid += len(raw)
    return rows


@pytest.fixture(scope="module")
def saved_hub(coco, tmp_path_factory):
    """The hub's four splits saved with save_to_disk, as load_dataset would give them."""
    from datasets import Dataset, DatasetDict

    path = tmp_path_factory.mktemp("hub") / "coco-karpathy"
    rows = hub_rows(coco / "dataset_coco.json")
    DatasetDict({HUB_OF[split]: Dataset.from_list(part) for split, part in rows.items()}).save_to_disk(str(path))
    return path


def serve(monkeypatch, hub, calls=None):
    """Make ``hub`` (a DatasetDict, or a function of the split asked) what the hub answers."""
    from datasets import concatenate_datasets

    def load(name, hub_split, cache_dir):
        if calls is not None:
            calls.append((name, hub_split))
        if callable(hub):
            return hub(hub_split)
        return concatenate_datasets([hub[part] for part in hub_split.split("+")])  # datasets' "a+b"

    monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(hf_captions, "_load_hub", load)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------
# The round trip: Karpathy's file -> the hub's rows -> Karpathy's file

@pytest.mark.parametrize("sentences", ["strings", "karpathy-dicts"])
def test_hub_rows_give_back_the_same_split_file(coco, saved_hub, tmp_path, monkeypatch, capsys, sentences):
    from datasets import Dataset, DatasetDict, load_from_disk

    original = coco / "dataset_coco.json"
    if sentences == "strings":
        hub = load_from_disk(str(saved_hub))  # Arrow files, as load_dataset gives them
    else:
        hub = DatasetDict({HUB_OF[s]: Dataset.from_list(part)
                           for s, part in hub_rows(original, sentence_dicts=True).items()})
    calls = []
    serve(monkeypatch, hub, calls)
    written = write_karpathy_split_from_hub(tmp_path / "out", cache_dir=tmp_path / "cache")
    assert calls == [(HUB_NAME, HUB_ALL_SPLITS)] and written == tmp_path / "out" / "dataset_coco.json"
    assert leftovers(tmp_path / "out") == ["dataset_coco.json"]  # no temporary file left
    for split in SPLITS:  # same images, ids, paths, captions, in the same order
        assert read_karpathy_split(written, split) == read_karpathy_split(original, split), split
    n = {s: len(read_karpathy_split(original, s)) for s in ("train", "val", "test")}
    line = capsys.readouterr().out
    assert (f"dataset_coco.json written from the Hugging Face dataset {HUB_NAME} ({sum(n.values()):,} images: "
            f"{n['train']:,} train with restval, {n['val']:,} val, {n['test']:,} test)") in line

    # Karpathy's format: every key of his entries, imgid = place in the file, one sentid per caption
    data = json.loads(written.read_text())
    assert data["dataset"] == "coco"
    assert [img["imgid"] for img in data["images"]] == list(range(len(data["images"])))
    for img in data["images"]:
        assert set(img) == {"filepath", "sentids", "filename", "imgid", "split", "sentences", "cocoid"}
        assert [s["sentid"] for s in img["sentences"]] == img["sentids"]
        assert all(s["imgid"] == img["imgid"] and s["tokens"] == normalize_caption(s["raw"]).split()
                   for s in img["sentences"])
    assert {img["split"] for img in data["images"]} == set(SPLITS)

    # and COCO's reader over the images gives what it gives for the original file
    root = shutil.copytree(coco, tmp_path / "coco")
    shutil.copyfile(written, root / "dataset_coco.json")
    ids = {}
    for split in ("train", "val", "test"):
        ours, theirs = coco_split(root, split), coco_split(coco, split)
        assert ours.image_ids == theirs.image_ids and ours.file_names == theirs.file_names
        assert ours.captions_by_id() == theirs.captions_by_id()
        ids[split] = ours.image_ids
    check_disjoint(ids)


def test_an_in_memory_dataset_or_plain_rows_convert_alike(coco, saved_hub):
    """Any input kind gives the same dict; rows without imgid or sentids keep their own order."""
    from datasets import concatenate_datasets, load_from_disk

    hub = load_from_disk(str(saved_hub))
    one_table = concatenate_datasets([hub[part] for part in HUB_ALL_SPLITS.split("+")])
    plain = [row for part in HUB_ALL_SPLITS.split("+") for row in hub[part].to_list()]
    assert karpathy_json_from_hub(one_table) == karpathy_json_from_hub(hub) == karpathy_json_from_hub(plain)
    bare = [{k: v for k, v in row.items() if k not in ("imgid", "sentids")} for row in plain]
    data = karpathy_json_from_hub(bare)
    assert [img["cocoid"] for img in data["images"]] == [row["cocoid"] for row in plain]  # the rows' order
    assert [img["imgid"] for img in data["images"]] == list(range(len(plain)))
    sentids = [sid for img in data["images"] for sid in img["sentids"]]
    assert sentids == list(range(len(sentids)))


def test_tokens_are_lower_case_words_of_the_raw_caption():
    image = karpathy_json_from_hub([{"cocoid": 1, "filepath": "val2014", "filename": "a.jpg", "split": "val",
                                     "sentences": ["A Man's red T-shirt, on a chair. "]}])["images"][0]
    assert image["sentences"] == [{"tokens": ["a", "man's", "red", "t-shirt", "on", "a", "chair"],
                                   "raw": "A Man's red T-shirt, on a chair. ", "imgid": 0, "sentid": 0}]


# ----------------------------------------------------------------------------------------------
# fetch_coco when Karpathy's zip answers 404

@pytest.fixture
def gone_server():
    """A local server that answers 404 to everything, and the requests it got."""
    requests = []

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/caption_datasets.zip"
    yield Remote(KARPATHY_SPLIT.name, url), requests
    server.shutdown()
    server.server_close()


def test_a_gone_karpathy_zip_is_rebuilt_from_the_hub(coco, saved_hub, tmp_path, monkeypatch, capsys, gone_server):
    from datasets import load_from_disk

    gone, requests = gone_server
    remotes = [gone if r.name == KARPATHY_SPLIT.name else r for r in mirror_coco(coco, tmp_path / "mirror")]
    calls = []
    serve(monkeypatch, load_from_disk(str(saved_hub)), calls)
    dest = fetch_coco(tmp_path / "fetched", remotes=remotes, progress=False)
    assert requests == ["/caption_datasets.zip"] and calls == [(HUB_NAME, HUB_ALL_SPLITS)]
    assert "dataset_coco.json written from the Hugging Face dataset yerevann/coco-karpathy" in capsys.readouterr().out
    assert not (dest / ".caption_datasets.zip.done").exists()  # no zip was unpacked
    for split in SPLITS:
        assert read_karpathy_split(dest / "dataset_coco.json", split) == read_karpathy_split(
            coco / "dataset_coco.json", split)
    data = open_caption_data(DataConfig(dataset="coco", root=str(dest)))  # checks the splits are disjoint
    for split in ("train", "val", "test"):
        assert data.split(split).captions_by_id() == coco_split(coco, split).captions_by_id()
    # a second fetch finds the file: neither Karpathy's server nor the hub is asked again
    fetch_coco(dest, remotes=remotes, progress=False)
    assert len(requests) == 1 and len(calls) == 1


@pytest.mark.parametrize("hub_state", ["unreachable", "offline", "load-fails"])
def test_with_no_hub_either_the_error_names_both_and_the_path(tmp_path, monkeypatch, gone_server, hub_state):
    gone, requests = gone_server
    monkeypatch.setattr(hf_captions, "_load_hub", lambda *a: pytest.fail("load_dataset called"))
    if hub_state == "unreachable":
        monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: False)
        why = "huggingface.co cannot be reached within 2 s"
    elif hub_state == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(hf_captions, "_library_offline", lambda: False)
        monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: pytest.fail("probed"))
        why = "skipped, offline"
    else:
        def fails(name, hub_split, cache_dir):
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub\n(ProxyError)")

        monkeypatch.setattr("velm_course.text.hf_encoder.hub_reachable", lambda *a, **k: True)
        monkeypatch.setattr(hf_captions, "_load_hub", fails)
        why = "ConnectionError: Couldn't reach 'yerevann/coco-karpathy' on the Hub (ProxyError)"
    dest = tmp_path / "coco"
    with pytest.raises(DatasetNotFoundError) as err:
        fetch_coco(dest, remotes=[gone], progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"{gone.url} answers 404" in message  # Karpathy's page was tried
    assert f"Hugging Face dataset {HUB_NAME} could not be loaded: {why}" in message  # and the hub
    assert f"Put a copy of dataset_coco.json (the Hugging Face dataset {HUB_NAME}" in message
    assert f"into {dest} and run the fetch again" in message
    assert leftovers(dest) == []


# ----------------------------------------------------------------------------------------------
# Refusals: nothing is written

def with_rows(hub, change):
    """The hub with ``change`` applied to each split's rows (a list of dicts, changed in place)."""
    from datasets import Dataset, DatasetDict

    parts = {}
    for name in hub:
        rows = hub[name].to_list()
        change(name, rows)
        parts[name] = Dataset.from_list(rows)
    return DatasetDict(parts)


@pytest.mark.parametrize("fault", ["train-and-test", "train-and-restval", "twice-in-val", "no-split-column",
                                   "unknown-split"])
def test_a_hub_copy_that_is_not_a_karpathy_split_is_refused(saved_hub, tmp_path, monkeypatch, gone_server, fault):
    from datasets import load_from_disk

    hub = load_from_disk(str(saved_hub))
    test_id = hub["test"][0]["cocoid"]
    if fault == "train-and-test":
        def change(name, rows):
            if name == "train":
                rows[0]["cocoid"] = test_id
        match = f"not a Karpathy split: 1 image.* in both train and test, e.g. image id {test_id}"
    elif fault == "train-and-restval":
        restval_id = hub["restval"][0]["cocoid"]

        def change(name, rows):
            if name == "train":
                rows[-1]["cocoid"] = restval_id
        match = f"1 image.* in both train and restval, e.g. image id {restval_id}"
    elif fault == "twice-in-val":
        def change(name, rows):
            if name == "validation":
                rows[1]["cocoid"] = rows[0]["cocoid"]
        match = f"image id {hub['validation'][0]['cocoid']} is in val twice"
    elif fault == "no-split-column":
        def change(name, rows):
            for row in rows:
                del row["split"]
        match = "no 'split' column.* split is needed to write a Karpathy split file"
    else:
        def change(name, rows):
            rows[0]["split"] = "dev"
        match = "split 'dev' is not one of Karpathy's"
    serve(monkeypatch, with_rows(hub, change))
    with pytest.raises(DatasetFormatError, match=match):
        write_karpathy_split_from_hub(tmp_path / "out", cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "out") == []
    # through fetch_coco: the reason, both sources and the path, and still no file
    gone, _ = gone_server
    with pytest.raises(DatasetNotFoundError, match=f"answers 404.*{match}.*Put a copy of dataset_coco.json"):
        fetch_coco(tmp_path / "coco", remotes=[gone], progress=False)
    assert leftovers(tmp_path / "coco") == []


def test_counts_other_than_karpathys_are_refused_for_the_real_coco(saved_hub, tmp_path, monkeypatch):
    """With the official servers fetch_coco expects 113,287 / 5,000 / 5,000 images."""
    from datasets import load_from_disk

    serve(monkeypatch, load_from_disk(str(saved_hub)))
    with pytest.raises(DatasetFormatError, match=r"images per split .*not Karpathy's \{'train': 113287"):
        write_karpathy_split_from_hub(tmp_path / "out", cache_dir=tmp_path / "cache",
                                      expected_counts=KARPATHY_COCO_COUNTS)
    assert leftovers(tmp_path / "out") == []


def test_a_failure_after_writing_leaves_no_temporary_file(saved_hub, tmp_path, monkeypatch):
    from datasets import load_from_disk

    serve(monkeypatch, load_from_disk(str(saved_hub)))
    seen = []

    def broken_reader(path, split):
        seen.append(Path(path))
        assert Path(path).is_file()  # the temporary file, complete, before it is renamed
        raise DatasetFormatError("read back failed")

    monkeypatch.setattr(hf_captions, "read_karpathy_split", broken_reader)
    with pytest.raises(DatasetFormatError, match="read back failed"):
        write_karpathy_split_from_hub(tmp_path / "out", cache_dir=tmp_path / "cache")
    assert seen and seen[0].parent == tmp_path / "out" and seen[0].name != "dataset_coco.json"
    assert leftovers(tmp_path / "out") == []
