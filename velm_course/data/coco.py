"""Load image-captioning data in the COCO captions format (real COCO or the shapes dataset).

A COCO captions annotation file is JSON with a list of ``images`` ({"id", "file_name", ...})
and a list of ``annotations`` ({"id", "image_id", "caption"}); most images have five captions.
The Karpathy split file (``dataset_coco.json``) regroups COCO 2014 train+val into the
train / val / test (+ restval) splits most captioning papers report on.

``CocoCaptions`` returns ``(image, captions)``: image a float tensor (3, H, W) in [0, 1],
captions a list of strings. Unreadable images are skipped and counted, never a crash;
a malformed annotation file raises ``DatasetFormatError`` naming the file and the field.

    >>> from velm_course.data.shapes import ShapesConfig, ensure_shapes  # doctest: +SKIP
    >>> ds = shapes_split(ensure_shapes(ShapesConfig()), "val")           # doctest: +SKIP
    >>> image, captions = ds[0]                                           # doctest: +SKIP
    >>> image.shape, len(captions)                                        # doctest: +SKIP
    (torch.Size([3, 64, 64]), 5)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# The official COCO 2014 files and Karpathy's split (a zip with dataset_coco.json and the
# Flickr8k/30k split files). The Karpathy zip is hosted on a personal university page and
# has moved before; if it is gone, any copy of dataset_coco.json placed in the COCO folder
# works the same (mirrors exist on Kaggle and in several repositories).
COCO_URLS = {
    "annotations_trainval2014.zip":
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
    "caption_datasets.zip":
        "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    "val2014.zip": "http://images.cocodataset.org/zips/val2014.zip",  # ~6 GB
    "train2014.zip": "http://images.cocodataset.org/zips/train2014.zip",  # ~13 GB
}
KARPATHY_SPLITS = ("train", "val", "test", "restval")


class DatasetFormatError(ValueError):
    """An annotation or split file does not have the expected structure."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says how to get it."""


# ----------------------------------------------------------------------------------------------
# Reading annotation files (strictly: a wrong field is reported, not silently skipped)

def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path.name}: not valid JSON ({e})") from None


def _field(record, key: str, kind, where: str, file: str):
    """record[key], checked to exist and to have type ``kind``, else a DatasetFormatError."""
    if not isinstance(record, dict):
        raise DatasetFormatError(f"{file}: {where} should be an object, got {type(record).__name__}")
    if key not in record:
        raise DatasetFormatError(f"{file}: {where} has no field {key!r}")
    value = record[key]
    # bool is a subclass of int; an id of True is a mistake, not an id
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DatasetFormatError(
            f"{file}: {where} field {key!r} should be {names}, got {type(value).__name__}")
    return value


def read_coco_captions(ann_file) -> list[tuple[int, str, list[str]]]:
    """Parse a COCO captions file into ``[(image_id, file_name, [captions...]), ...]``.

    Images keep the file's order; an image without captions gets an empty list.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DatasetNotFoundError(f"annotation file not found: {path}")
    name = path.name
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{name}: top level should be an object, got {type(data).__name__}")
    images = _field(data, "images", list, "top level", name)
    annotations = _field(data, "annotations", list, "top level", name)

    records: dict[int, tuple[str, list[str]]] = {}
    for i, img in enumerate(images):
        image_id = _field(img, "id", int, f"images[{i}]", name)
        file_name = _field(img, "file_name", str, f"images[{i}]", name)
        if image_id in records:
            raise DatasetFormatError(f"{name}: images[{i}] repeats image id {image_id}")
        records[image_id] = (file_name, [])
    for i, ann in enumerate(annotations):
        image_id = _field(ann, "image_id", int, f"annotations[{i}]", name)
        caption = _field(ann, "caption", str, f"annotations[{i}]", name)
        if image_id not in records:
            raise DatasetFormatError(
                f"{name}: annotations[{i}] field 'image_id' points to unknown image {image_id}")
        records[image_id][1].append(caption.strip())
    return [(image_id, file_name, caps) for image_id, (file_name, caps) in records.items()]


def read_karpathy_split(split_file, split: str) -> list[tuple[int, str, list[str]]]:
    """Parse a Karpathy split file: ``[(cocoid, "filepath/filename", [raw captions]), ...]``.

    ``split="train"`` also takes the ``restval`` images, as is usual for COCO.
    """
    if split not in ("train", "val", "test", "restval"):
        raise ValueError(f"unknown split {split!r}; expected one of {KARPATHY_SPLITS}")
    wanted = {"train", "restval"} if split == "train" else {split}
    path = Path(split_file)
    if not path.is_file():
        raise DatasetNotFoundError(f"Karpathy split file not found: {path}")
    name = path.name
    data = _load_json(path)
    images = _field(data, "images", list, "top level", name)
    records, seen = [], set()
    for i, img in enumerate(images):
        where = f"images[{i}]"
        if _field(img, "split", str, where, name) not in wanted:
            continue
        filename = _field(img, "filename", str, where, name)
        filepath = img.get("filepath", "")  # the Flickr split files have no filepath
        # COCO entries carry the COCO id; other Karpathy files only have their index imgid
        image_id = _field(img, "cocoid" if "cocoid" in img else "imgid", int, where, name)
        if image_id in seen:
            raise DatasetFormatError(f"{name}: {where} repeats image id {image_id}")
        seen.add(image_id)
        sentences = _field(img, "sentences", list, where, name)
        captions = [_field(s, "raw", str, f"{where}.sentences[{j}]", name).strip()
                    for j, s in enumerate(sentences)]
        records.append((image_id, str(Path(filepath) / filename), captions))
    return records


# ----------------------------------------------------------------------------------------------
# The dataset

def open_rgb(path: Path, image_size: int | None):
    """Decode an image file into an RGB PIL image, optionally resized to a square."""
    from PIL import Image

    with Image.open(path) as im:
        return as_rgb(im, image_size)


def as_rgb(im, image_size: int | None = None):
    """A PIL image of any mode as RGB (see-through pixels put on white), optionally resized to
    an ``image_size`` square (bilinear; the aspect ratio is not kept).

    >>> from PIL import Image
    >>> as_rgb(Image.new("LA", (30, 20), (0, 0)), 16).getpixel((0, 0)), as_rgb(Image.new("L", (4, 4))).mode
    ((255, 255, 255), 'RGB')
    """
    from PIL import Image

    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # a palette with a transparent entry: keep the alpha
    if im.mode in ("RGBA", "LA", "PA"):
        # Put see-through pixels on white (dropping alpha would show whatever colour the
        # transparent pixels happen to store, often black).
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    im = im.convert("RGB")  # also grayscale (L), palette (P), CMYK; a copy, so the file may close
    if image_size is not None and im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return im


def _image_is_readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()  # checks the header and, for PNG, chunk checksums without decoding
        return True
    except Exception:  # PIL reports damage with many exception types (OSError, SyntaxError...)
        return False


class CocoCaptions(Dataset):
    """Images and their captions from a COCO-format captions file.

    ``root`` is the image folder and ``ann_file`` the captions JSON (torchvision's layout).
    Items are ``(image, captions)``: image a float tensor (3, H, W) in [0, 1], captions a list
    of str. ``image_size`` resizes to a square. With ``verify=True`` every image file is
    checked once here and unreadable ones are left out; with ``verify=False`` (faster on big
    sets) an image that fails to decode in ``__getitem__`` is counted and the next readable
    item is returned instead. Either way ``skipped`` lists the bad files (in DataLoader
    worker processes each worker keeps its own count).

    >>> ds = CocoCaptions("images/val", "annotations/captions_val.json")  # doctest: +SKIP
    >>> ds.captions_by_id()[ds.image_ids[0]]                              # doctest: +SKIP
    ['a red circle', ...]
    """

    def __init__(self, root, ann_file, image_size: int | None = None, verify: bool = True):
        records = read_coco_captions(ann_file)
        self._setup(Path(root), records, image_size, verify, source=Path(ann_file).name)

    @classmethod
    def from_records(cls, root, records, image_size: int | None = None, verify: bool = True,
                     source: str = "records") -> CocoCaptions:
        """Build from ``[(image_id, path relative to root, [captions]), ...]``."""
        self = cls.__new__(cls)
        self._setup(Path(root), list(records), image_size, verify, source)
        return self

    def _setup(self, root: Path, records, image_size, verify: bool, source: str) -> None:
        if image_size is not None and image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.root = root
        self.image_size = image_size
        self.source = source  # the annotation file's name, used in messages
        self.skipped: list[str] = []
        self._warned = False
        self._items = []  # (image_id, file name as in the annotations, [captions])
        for image_id, file_name, captions in records:
            if verify and not _image_is_readable(root / file_name):
                self.skipped.append(file_name)
                continue
            self._items.append((image_id, file_name, captions))
        if self.skipped:
            self._warned = True
            warnings.warn(f"{source}: skipped {len(self.skipped)} missing or unreadable image(s), "
                          f"e.g. {self.skipped[0]}", stacklevel=3)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def image_ids(self) -> list[int]:
        return [image_id for image_id, _, _ in self._items]

    def captions_by_id(self) -> dict[int, list[str]]:
        """``{image_id: [captions]}``: the references a caption metric compares against."""
        return {image_id: list(captions) for image_id, _, captions in self._items}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int):
        image, captions = self.get_uint8(index)
        return image.float().div(255), captions  # (3, H, W) in [0, 1]

    def get_uint8(self, index: int) -> tuple[torch.Tensor, list[str]]:
        """Item ``index`` with the image as uint8 (3, H, W): 4× fewer bytes to move to the
        device, where it is converted to float."""
        n = len(self._items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for step in range(n):  # on a decode failure, move on to the next image
            _, file_name, captions = self._items[(index + step) % n]
            try:
                image = open_rgb(self.root / file_name, self.image_size)
            except Exception:  # any decode error: count it, do not crash a long training run
                self._note_unreadable(file_name)
                continue
            x = torch.from_numpy(np.array(image, dtype=np.uint8))  # (H, W, 3)
            return x.permute(2, 0, 1).contiguous(), list(captions)  # (3, H, W)
        raise RuntimeError(f"{self.source}: none of the {n} images could be read")

    def _note_unreadable(self, file_name: str) -> None:
        if file_name not in self.skipped:
            self.skipped.append(file_name)
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.source}: cannot read {file_name}; skipping it and any other "
                          "unreadable image (see .num_skipped)", stacklevel=3)


def load_karpathy_split(root, split_file, split: str, image_size: int | None = None,
                        verify: bool = True) -> CocoCaptions:
    """A split of a Karpathy-style split file; image paths are ``root/filepath/filename``.

    >>> ds = load_karpathy_split("coco", "coco/dataset_coco.json", "test")  # doctest: +SKIP
    """
    records = read_karpathy_split(split_file, split)
    return CocoCaptions.from_records(root, records, image_size=image_size, verify=verify,
                                     source=Path(split_file).name)


def _require(path: Path, root: Path) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(
            f"COCO not found: {path} is missing. Fetch it with: velm-course fetch coco --dest {root}")
    return path


def coco_split(root, split: str, image_size: int | None = None, scheme: str = "karpathy",
               verify: bool = False) -> CocoCaptions:
    """COCO 2014 captions from the standard layout under ``root``.

    ``scheme="karpathy"`` (the usual one for captioning) reads ``dataset_coco.json`` with the
    splits train (with restval), val and test, over images in ``train2014/`` and
    ``val2014/``; ``scheme="official"`` reads ``annotations/captions_<split>2014.json``
    (train or val). Verification is off by default: checking 120k files takes a while.
    """
    root = Path(root)
    _require(root, root)
    if scheme == "karpathy":
        split_file = _require(root / "dataset_coco.json", root)
        _require(root / "train2014", root)
        _require(root / "val2014", root)
        return load_karpathy_split(root, split_file, split, image_size=image_size, verify=verify)
    if scheme == "official":
        if split not in ("train", "val"):
            raise ValueError(f"the official COCO 2014 captions have train and val, not {split!r}")
        image_dir = _require(root / f"{split}2014", root)
        ann_file = _require(root / "annotations" / f"captions_{split}2014.json", root)
        return CocoCaptions(image_dir, ann_file, image_size=image_size, verify=verify)
    raise ValueError(f"unknown scheme {scheme!r}; expected 'karpathy' or 'official'")


def pack_shapes_as_coco(shapes_root, dest) -> Path:
    """Copy a generated shapes dataset into COCO 2014's layout, so every COCO code path can run
    offline: ``train2014/`` and ``val2014/`` images named ``COCO_<folder>_<id:012d>.png``,
    ``annotations/captions_{train,val}2014.json`` and a Karpathy ``dataset_coco.json`` whose
    train, val and test splits are the shapes train, val and test splits (val and test images
    live in ``val2014/``, as Karpathy's do). Returns ``dest``; ``coco_split(dest, ...)`` reads it.

    >>> root = pack_shapes_as_coco(shapes_root, tmp / "coco")  # doctest: +SKIP
    >>> len(coco_split(root, "test")) == len(shapes_split(shapes_root, "test"))  # doctest: +SKIP
    True
    """
    import shutil

    shapes_root, dest = Path(shapes_root), Path(dest)
    folders = {"train": "train2014", "val": "val2014", "test": "val2014"}
    official = {"train2014": {"images": [], "annotations": []}, "val2014": {"images": [], "annotations": []}}
    karpathy = []
    for split, folder in folders.items():
        data = _load_json(shapes_root / "annotations" / f"captions_{split}.json")
        (dest / folder).mkdir(parents=True, exist_ok=True)
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        for img in data["images"]:
            name = f"COCO_{folder}_{img['id']:012d}{Path(img['file_name']).suffix}"
            shutil.copyfile(shapes_root / "images" / split / img["file_name"], dest / folder / name)
            official[folder]["images"].append({"id": img["id"], "file_name": name, "height": img["height"],
                                               "width": img["width"]})
            karpathy.append({"filepath": folder, "filename": name, "cocoid": img["id"], "split": split,
                             "sentences": [{"raw": c} for c in captions[img["id"]]]})
        official[folder]["annotations"] += data["annotations"]
    (dest / "annotations").mkdir(exist_ok=True)
    for folder, data in official.items():
        (dest / "annotations" / f"captions_{folder}.json").write_text(json.dumps(data))
    (dest / "dataset_coco.json").write_text(json.dumps({"images": karpathy}))
    return dest


# ----------------------------------------------------------------------------------------------
# Downloading

def _download(url: str, target: Path, progress: bool, chunk: int = 1 << 20) -> None:
    """Stream ``url`` into ``target.part``, then rename it to ``target``.

    A leftover ``.part`` from an interrupted run is resumed with an HTTP Range request when the
    server honours it (answers 206); otherwise the download starts over.
    """
    from tqdm.auto import tqdm

    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the range starts at or past the end; start over
            raise
        part.unlink()
        return _download(url, target, progress, chunk)
    with response:
        if have and getattr(response, "status", None) != 206:
            have = 0  # the server sent the whole file (file:// URLs always do)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=target.name,
            disable=not progress,
        ) as bar:
            while block := response.read(chunk):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                      "run the fetch again to resume")
    os.replace(part, target)


def fetch_coco(dest, urls: dict[str, str] = COCO_URLS, progress: bool = True,
               keep_archives: bool = False) -> Path:
    """Download and unpack COCO 2014 captions (and Karpathy's split) into ``dest``.

    Each archive is downloaded to ``<name>.part`` and renamed when complete, then unzipped into
    ``dest``; a marker ``.<name>.done`` records the unpacking, so running the fetch again skips
    finished files and resumes an interrupted download. Archives are deleted after unpacking
    unless ``keep_archives``. This is ~19 GB of downloads and as much again unpacked.

    >>> fetch_coco("data/coco")  # doctest: +SKIP
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, url in urls.items():
        archive, done = dest / name, dest / f".{name}.done"
        if done.exists():
            continue
        if not archive.exists():
            _download(url, archive, progress)
        if not zipfile.is_zipfile(archive):
            archive.unlink()
            raise DatasetFormatError(
                f"{name}: the downloaded file from {url} is not a zip archive (deleted it; "
                "check the URL and run the fetch again)")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # zipfile drops '..' and absolute parts of member names
        done.write_text(url + "\n")
        if not keep_archives:
            archive.unlink()
    return dest
