"""The COCO-format loader on a generated shapes set, on hand-made bad inputs, and the fetcher
on local file:// and http://127.0.0.1 URLs (the real download code, no internet)."""

import http.server
import json
import shutil
import threading
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from velm_course.data.coco import (
    CocoCaptions,
    DatasetFormatError,
    DatasetNotFoundError,
    coco_split,
    fetch_coco,
    load_karpathy_split,
)
from velm_course.data.download import Remote
from velm_course.data.shapes import ShapesConfig, generate_shapes, shapes_split

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    cfg = ShapesConfig(image_size=48, n_train=12, n_val=6, n_test=6, seed=7)
    return generate_shapes(tmp_path_factory.mktemp("shapes"), cfg, progress=False)


@pytest.fixture
def shapes_copy(shapes_root, tmp_path):
    """A private copy that a test may damage."""
    return shutil.copytree(shapes_root, tmp_path / "copy")


def json_captions(root, split):
    data = json.loads((root / "annotations" / f"captions_{split}.json").read_text())
    caps = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        caps[ann["image_id"]].append(ann["caption"])
    return data, caps


# ----------------------------------------------------------------------------------------------
# Reading a good dataset

@pytest.mark.parametrize("split", SPLITS)
def test_reads_generated_split_like_the_json_and_torchvision(shapes_root, split):
    from torchvision.datasets import CocoCaptions as TorchvisionCocoCaptions

    ds = shapes_split(shapes_root, split)
    data, caps = json_captions(shapes_root, split)
    assert len(ds) == len(data["images"]) and ds.num_skipped == 0 and ds.skipped == []
    assert ds.image_ids == [img["id"] for img in data["images"]]
    assert ds.captions_by_id() == caps
    # torchvision's reader (via pycocotools) as an independent reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TorchvisionCocoCaptions(str(shapes_root / "images" / split),
                                      str(shapes_root / "annotations" / f"captions_{split}.json"))
    assert len(ref) == len(ds)
    for i in range(len(ds)):
        image, captions = ds[i]
        ref_image, ref_captions = ref[i]
        assert image.dtype == torch.float32 and image.shape == (3, 48, 48)
        assert 0.0 <= image.min() and image.max() <= 1.0
        expected = torch.from_numpy(np.array(ref_image)).permute(2, 0, 1).float() / 255
        assert torch.equal(image, expected)
        assert sorted(captions) == sorted(ref_captions)


def test_resize_and_negative_index(shapes_root):
    ds = shapes_split(shapes_root, "val", image_size=32)
    image, _ = ds[-1]
    assert image.shape == (3, 32, 32)
    with Image.open(shapes_root / "images" / "val" / f"{ds.image_ids[-1]:012d}.png") as im:
        ref = np.array(im.resize((32, 32), Image.Resampling.BILINEAR))  # (H, W, 3)
    assert torch.allclose(image, torch.from_numpy(ref).permute(2, 0, 1).float() / 255)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(ValueError, match="image_size"):
        shapes_split(shapes_root, "val", image_size=0)
    with pytest.raises(ValueError, match="unknown split"):
        shapes_split(shapes_root, "dev")


def test_karpathy_split_matches_per_split_files(shapes_root):
    for split in SPLITS:
        per_split = shapes_split(shapes_root, split)
        karpathy = load_karpathy_split(shapes_root, shapes_root / "dataset_shapes.json", split)
        assert karpathy.image_ids == per_split.image_ids
        assert karpathy.captions_by_id() == per_split.captions_by_id()
        for i in (0, len(karpathy) - 1):
            assert torch.equal(karpathy[i][0], per_split[i][0])


def test_karpathy_train_includes_restval_and_bad_split(tmp_path, shapes_root):
    entries = json.loads((shapes_root / "dataset_shapes.json").read_text())["images"]
    val = [e for e in entries if e["split"] == "val"]
    for e in val[:2]:
        e["split"] = "restval"
    (tmp_path / "split.json").write_text(json.dumps({"images": entries}))
    restval_ids = {e["cocoid"] for e in val[:2]}
    train = load_karpathy_split(shapes_root, tmp_path / "split.json", "train")
    assert restval_ids <= set(train.image_ids)
    assert len(train) == sum(e["split"] in ("train", "restval") for e in entries)
    assert not restval_ids & set(load_karpathy_split(shapes_root, tmp_path / "split.json", "val").image_ids)
    assert set(load_karpathy_split(shapes_root, tmp_path / "split.json", "restval").image_ids) == restval_ids
    with pytest.raises(ValueError, match="unknown split"):
        load_karpathy_split(shapes_root, tmp_path / "split.json", "dev")
    del entries[0]["sentences"]
    (tmp_path / "split.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(DatasetFormatError, match=r"split\.json: images\[0\] has no field 'sentences'"):
        load_karpathy_split(shapes_root, tmp_path / "split.json", "train")


def make_annotated_folder(folder, images):
    """Write PIL images and a matching captions file; returns the annotation path."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, anns = [], []
    for i, (name, image) in enumerate(images.items(), start=1):
        image.save(folder / name)
        entries.append({"id": i, "file_name": name})
        anns.append({"id": i, "image_id": i, "caption": f"caption {i}"})
    ann_file = folder / "captions.json"
    ann_file.write_text(json.dumps({"images": entries, "annotations": anns}))
    return ann_file


def test_grayscale_palette_and_rgba_become_rgb(tmp_path):
    gray = Image.new("L", (4, 4), 100)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent: shown on white
    rgba.putpixel((1, 0), (0, 0, 0, 51))  # 20% black over white: 255 * 0.8 = 204
    ann = make_annotated_folder(tmp_path, {"g.png": gray, "p.png": palette, "a.png": rgba})
    ds = CocoCaptions(tmp_path, ann)
    (g, _), (p, _), (a, caps) = ds[0], ds[1], ds[2]
    assert caps == ["caption 3"]
    assert g.shape == p.shape == a.shape == (3, 4, 4)
    assert torch.equal(g, torch.full((3, 4, 4), 100 / 255))
    assert torch.equal(p[:, 2, 2] * 255, torch.tensor([10.0, 200.0, 30.0]))
    assert torch.equal(a[:, 3, 3] * 255, torch.tensor([10.0, 20.0, 30.0]))
    assert torch.equal(a[:, 0, 0], torch.ones(3))
    assert torch.allclose(a[:, 0, 1] * 255, torch.full((3,), 204.0), atol=1)


# ----------------------------------------------------------------------------------------------
# Bad images: skipped and counted

def damage(shapes_copy, split="train", index=2, how="garbage"):
    data, _ = json_captions(shapes_copy, split)
    name = data["images"][index]["file_name"]
    path = shapes_copy / "images" / split / name
    if how == "garbage":
        path.write_bytes(b"this is not a png" * 20)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    else:
        path.unlink()
    return name, data["images"][index]["id"]


@pytest.mark.parametrize("how", ["garbage", "truncated", "missing"])
def test_bad_image_is_skipped_when_verifying(shapes_copy, how):
    name, image_id = damage(shapes_copy, how=how)
    with pytest.warns(UserWarning, match=r"captions_train\.json: skipped 1"):
        ds = shapes_split(shapes_copy, "train")
    assert ds.num_skipped == 1 and ds.skipped == [name]
    assert len(ds) == 11 and image_id not in ds.image_ids and image_id not in ds.captions_by_id()
    assert all(ds[i][0].shape == (3, 48, 48) for i in range(len(ds)))


def test_bad_image_is_skipped_at_load_time_without_verifying(shapes_copy):
    name, image_id = damage(shapes_copy, index=2)
    _, caps = json_captions(shapes_copy, "train")
    ds = shapes_split(shapes_copy, "train", verify=False)
    assert len(ds) == 12 and ds.num_skipped == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
        ds[2]  # the same bad file again: counted once, no second warning
    assert len(caught) == 1 and name in str(caught[0].message)
    assert ds.num_skipped == 1 and ds.skipped == [name]
    # the bad item is replaced by the next good one
    assert sorted(items[2][1]) == sorted(caps[ds.image_ids[3]])
    assert all(x.shape == (3, 48, 48) for x, _ in items)


def test_all_images_unreadable_is_an_error(tmp_path):
    ann = make_annotated_folder(tmp_path, {"a.png": Image.new("RGB", (4, 4))})
    (tmp_path / "a.png").write_bytes(b"junk")
    ds = CocoCaptions(tmp_path, ann, verify=False)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="none of the 1 images"):
        ds[0]


# ----------------------------------------------------------------------------------------------
# Bad annotation files: a clear error naming the file and the field

GOOD = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "x"},
                        {"id": 2, "image_id": 2, "caption": "y"}]}


def broken(change):
    data = json.loads(json.dumps(GOOD))
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"captions_bad\.json: not valid JSON"),
    ("[1, 2]", r"captions_bad\.json: top level should be an object"),
    (broken(lambda d: d.pop("images")), r"captions_bad\.json: top level has no field 'images'"),
    (broken(lambda d: d.pop("annotations")), r"captions_bad\.json: top level has no field 'annotations'"),
    (broken(lambda d: d.update(images={})), r"field 'images' should be list, got dict"),
    (broken(lambda d: d["annotations"][1].pop("caption")),
     r"captions_bad\.json: annotations\[1\] has no field 'caption'"),
    (broken(lambda d: d["annotations"][0].update(caption=3)),
     r"annotations\[0\] field 'caption' should be str, got int"),
    (broken(lambda d: d["annotations"][1].update(image_id=99)),
     r"annotations\[1\] field 'image_id' points to unknown image 99"),
    (broken(lambda d: d["annotations"][0].pop("image_id")), r"annotations\[0\] has no field 'image_id'"),
    (broken(lambda d: d["images"][1].pop("file_name")), r"images\[1\] has no field 'file_name'"),
    (broken(lambda d: d["images"][1].update(id="2")), r"images\[1\] field 'id' should be int, got str"),
    (broken(lambda d: d["images"][1].update(id=1)), r"images\[1\] repeats image id 1"),
    (broken(lambda d: d["images"].append(7)), r"images\[2\] should be an object, got int"),
])
def test_malformed_annotation_file(tmp_path, text, message):
    ann = tmp_path / "captions_bad.json"
    ann.write_text(text)
    with pytest.raises(DatasetFormatError, match=message):
        CocoCaptions(tmp_path, ann)
    assert issubclass(DatasetFormatError, ValueError)


def test_good_reference_annotation_parses(tmp_path):
    # the unbroken GOOD file reads fine, so each case above fails for its own reason
    for name in ("a.png", "b.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    (tmp_path / "captions_bad.json").write_text(json.dumps(GOOD))
    assert CocoCaptions(tmp_path, tmp_path / "captions_bad.json").captions_by_id() == {1: ["x"], 2: ["y"]}


# ----------------------------------------------------------------------------------------------
# Real COCO layout

def test_missing_coco_names_the_fetch_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"velm-course fetch coco --dest .*nowhere"):
        coco_split(tmp_path / "nowhere", "train")
    (tmp_path / "coco" / "train2014").mkdir(parents=True)
    for scheme in ("karpathy", "official"):
        with pytest.raises(DatasetNotFoundError, match="velm-course fetch coco") as err:
            coco_split(tmp_path / "coco", "val", scheme=scheme)
        assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="ensure_shapes"):
        shapes_split(tmp_path / "nowhere", "train")


def test_coco_layout_both_schemes(tmp_path, shapes_root):
    """A miniature COCO tree, made from shapes images, read through both split schemes."""
    root = tmp_path / "coco"
    karpathy = []
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        data, _ = json_captions(shapes_root, split)
        (root / folder).mkdir(parents=True)
        for img in data["images"]:
            img["file_name"] = f"COCO_{folder}_{img['id']:012d}.png"
            shutil.copy(shapes_root / "images" / split / f"{img['id']:012d}.png",
                        root / folder / img["file_name"])
            sentences = [{"raw": a["caption"]} for a in data["annotations"] if a["image_id"] == img["id"]]
            karpathy.append({"filepath": folder, "filename": img["file_name"], "cocoid": img["id"],
                             "split": "test" if split == "val" else "train", "sentences": sentences})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{folder}.json").write_text(json.dumps(data))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy}))

    official = coco_split(root, "val", scheme="official")
    test = coco_split(root, "test")
    assert official.image_ids == test.image_ids and len(test) == 6
    assert official.captions_by_id() == test.captions_by_id() == json_captions(shapes_root, "val")[1]
    assert torch.equal(official[0][0], test[0][0])
    assert len(coco_split(root, "train", image_size=24)) == 12
    assert coco_split(root, "train", image_size=24)[0][0].shape == (3, 24, 24)
    with pytest.raises(ValueError, match="train and val"):
        coco_split(root, "test", scheme="official")
    with pytest.raises(ValueError, match="unknown scheme"):
        coco_split(root, "test", scheme="2017")


# ----------------------------------------------------------------------------------------------
# fetch_coco, with the real download code on local URLs

def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def archives(tmp_path):
    src = tmp_path / "server"
    src.mkdir()
    ann = make_zip(src / "annotations_trainval2014.zip",
                   {"annotations/captions_val2014.json": json.dumps(GOOD)})
    karpathy = make_zip(src / "caption_datasets.zip", {"dataset_coco.json": '{"images": []}'})
    return {"annotations_trainval2014.zip": ann, "caption_datasets.zip": karpathy}


def test_fetch_from_file_urls_then_skip(tmp_path, archives):
    remotes = [Remote(name, path.as_uri()) for name, path in archives.items()]
    dest = fetch_coco(tmp_path / "coco", remotes=remotes, progress=False)
    assert json.loads((dest / "annotations" / "captions_val2014.json").read_text()) == GOOD
    assert (dest / "dataset_coco.json").is_file()
    assert not (dest / "caption_datasets.zip").exists()  # archives removed after unpacking
    assert sorted(p.name for p in dest.glob(".*.done")) == [
        ".annotations_trainval2014.zip.done", ".caption_datasets.zip.done"]
    for path in archives.values():
        path.unlink()  # a second run must not download (the sources are gone)
    fetch_coco(dest, remotes=remotes, progress=False)
    assert json.loads((dest / "annotations" / "captions_val2014.json").read_text()) == GOOD


def test_fetch_reuses_a_complete_archive_and_restarts_a_stale_part(tmp_path, archives):
    remotes = [Remote(name, path.as_uri()) for name, path in archives.items()]
    dest = tmp_path / "coco"
    dest.mkdir()
    # a stale partial download: file:// cannot resume, so it starts over
    (dest / "caption_datasets.zip.part").write_bytes(b"stale bytes")
    fetch_coco(dest, remotes=remotes, progress=False, keep_archives=True)
    assert (dest / "caption_datasets.zip").read_bytes() == archives["caption_datasets.zip"].read_bytes()
    assert not (dest / "caption_datasets.zip.part").exists()
    # downloaded but not unpacked (e.g. interrupted while unzipping): unpack without downloading
    (dest / ".caption_datasets.zip.done").unlink()
    (dest / "dataset_coco.json").unlink()
    archives["caption_datasets.zip"].unlink()
    fetch_coco(dest, remotes=remotes, progress=False, keep_archives=True)
    assert (dest / "dataset_coco.json").read_text() == '{"images": []}'


def test_fetch_rejects_a_non_zip(tmp_path):
    page = tmp_path / "error.html"
    page.write_text("<html>moved</html>")
    with pytest.raises(DatasetFormatError, match="x.zip: the downloaded file .* is not a zip"):
        fetch_coco(tmp_path / "coco", remotes=[Remote("x.zip", page.as_uri())], progress=False)
    assert not (tmp_path / "coco" / "x.zip").exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload and honours 'Range: bytes=N-' like a real file server."""

    payload = b""
    ranges = []

    def do_GET(self):
        start = 0
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            self.ranges.append(start)
        body = self.payload[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_fetch_resumes_a_partial_http_download(tmp_path):
    payload = make_zip(tmp_path / "big.zip", {f"file{i}.txt": f"line {i}\n" * 500 for i in range(20)})
    RangeHandler.payload = payload.read_bytes()
    RangeHandler.ranges = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dest = tmp_path / "coco"
        dest.mkdir()
        half = len(RangeHandler.payload) // 2
        (dest / "big.zip.part").write_bytes(RangeHandler.payload[:half])  # an interrupted run
        url = f"http://127.0.0.1:{server.server_address[1]}/big.zip"
        fetch_coco(dest, remotes=[Remote("big.zip", url)], progress=False, keep_archives=True)
    finally:
        server.shutdown()
        server.server_close()
    assert RangeHandler.ranges == [half]  # only the missing half was requested
    assert (dest / "big.zip").read_bytes() == RangeHandler.payload
    assert (dest / "file7.txt").read_text() == "line 7\n" * 500
