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
import urllib.error
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .download import COCO_2014, COCO_2017, KARPATHY_SPLIT, Remote, download, safe_extract

# The official files, with sizes and checksums, are the tables in ``download.py``;
# {file name: url} of COCO 2014 stays here for code that imports it.
COCO_URLS = {remote.name: remote.url for remote in COCO_2014}
KARPATHY_SPLITS = ("train", "val", "test", "restval")


class DatasetFormatError(ValueError):
    """An annotation or split file does not have the expected structure."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; the message says how to get it."""


class UnreadableImagesError(RuntimeError):
    """More of a split's images are missing or damaged than a run should quietly skip."""


# A few bad files in 120,000 are normal (an interrupted unzip, a disk hiccup) and skipping them
# costs nothing; many mean a broken download or the wrong folder, and training on what is left
# would give numbers that look fine and mean little. Past this fraction of a split, stop.
MAX_UNREADABLE = 0.01


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
    worker processes each worker keeps its own count). When more than ``max_unreadable`` of
    the split's images (a fraction; at least one image is always allowed) turn out to be
    unreadable, ``UnreadableImagesError`` stops the run and names them.

    >>> ds = CocoCaptions("images/val", "annotations/captions_val.json")  # doctest: +SKIP
    >>> ds.captions_by_id()[ds.image_ids[0]]                              # doctest: +SKIP
    ['a red circle', ...]
    """

    def __init__(self, root, ann_file, image_size: int | None = None, verify: bool = True,
                 max_unreadable: float = MAX_UNREADABLE):
        records = read_coco_captions(ann_file)
        self._setup(Path(root), records, image_size, verify, source=Path(ann_file).name,
                    max_unreadable=max_unreadable)

    @classmethod
    def from_records(cls, root, records, image_size: int | None = None, verify: bool = True,
                     source: str = "records", max_unreadable: float = MAX_UNREADABLE) -> CocoCaptions:
        """Build from ``[(image_id, path relative to root, [captions]), ...]``."""
        self = cls.__new__(cls)
        self._setup(Path(root), list(records), image_size, verify, source, max_unreadable)
        return self

    def _setup(self, root: Path, records, image_size, verify: bool, source: str,
               max_unreadable: float = MAX_UNREADABLE) -> None:
        if image_size is not None and image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 <= max_unreadable <= 1:
            raise ValueError(f"max_unreadable is a fraction of the images, in [0, 1]; got {max_unreadable}")
        # how many bad images are skipped before the run stops; one is always forgiven, so a
        # single damaged file cannot stop a run on a small set
        self.max_skipped = max(1, int(max_unreadable * len(records)))
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
        self._check_skipped(len(records))
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

    @property
    def file_names(self) -> list[str]:
        """Each image's file, relative to ``root``, in item order."""
        return [file_name for _, file_name, _ in self._items]

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

    def _check_skipped(self, n_images: int) -> None:
        if len(self.skipped) > self.max_skipped:
            shown = ", ".join(self.skipped[:10]) + (", ..." if len(self.skipped) > 10 else "")
            raise UnreadableImagesError(
                f"{self.source}: {len(self.skipped)} of {n_images} images are missing or cannot be read, "
                f"more than the {self.max_skipped} a run skips quietly: {shown} (under {self.root}). "
                "An interrupted unzip or a damaged copy is the usual cause. For COCO, delete the image "
                "folder and its marker (e.g. train2014/ and .train2014.zip.done) and run velm-course fetch "
                "coco again; or pass a larger max_unreadable.")

    def _note_unreadable(self, file_name: str) -> None:
        if file_name not in self.skipped:
            self.skipped.append(file_name)
            self._check_skipped(len(self._items))
        if not self._warned:
            self._warned = True
            warnings.warn(f"{self.source}: cannot read {file_name}; skipping it and any other "
                          "unreadable image (see .num_skipped)", stacklevel=3)


def load_karpathy_split(root, split_file, split: str, image_size: int | None = None,
                        verify: bool = True, max_unreadable: float = MAX_UNREADABLE) -> CocoCaptions:
    """A split of a Karpathy-style split file; image paths are ``root/filepath/filename``.

    >>> ds = load_karpathy_split("coco", "coco/dataset_coco.json", "test")  # doctest: +SKIP
    """
    records = read_karpathy_split(split_file, split)
    return CocoCaptions.from_records(root, records, image_size=image_size, verify=verify,
                                     source=Path(split_file).name, max_unreadable=max_unreadable)


def check_disjoint(splits: dict[str, list[int]]) -> None:
    """Raise ``DatasetFormatError`` if any image id is in two of the named splits.

    A test image seen in training makes every test score a memory test. The Karpathy split
    keeps its splits apart; a hand-made mix (COCO 2017's train with Karpathy's test, say)
    does not, and this is the check that notices.

    >>> check_disjoint({"train": [1, 2], "test": [3]})
    >>> check_disjoint({"train": [1, 2], "val": [4], "test": [2, 3]})
    Traceback (most recent call last):
    ...
    velm_course.data.coco.DatasetFormatError: 1 image(s) are in both train and test, e.g. image id 2
    """
    names = list(splits)
    for i, a in enumerate(names):
        ids_a = set(splits[a])
        for b in names[i + 1:]:
            shared = sorted(ids_a.intersection(splits[b]))
            if shared:
                raise DatasetFormatError(f"{len(shared)} image(s) are in both {a} and {b}, "
                                         f"e.g. image id {shared[0]}")


def _require(path: Path, root: Path, year: int = 2014) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(f"COCO not found: {path} is missing. Fetch it with: "
                                   f"velm-course fetch coco --dest {root}" + (" --year 2017" if year == 2017 else ""))
    return path


def _records_in_2017_layout(root: Path, records):
    """Karpathy's records (2014 file names) pointed at the same images in COCO 2017's folders.

    COCO 2017 holds the same images as 2014 under the same ids, re-split into train2017 and
    val2017 and renamed ``<id:012d>.jpg``; the 2017 caption files say which folder has which id.
    """
    folder_of = {}
    for folder in ("train2017", "val2017"):
        for image_id, file_name, _ in read_coco_captions(
                _require(root / "annotations" / f"captions_{folder}.json", root, 2017)):
            folder_of[image_id] = f"{folder}/{file_name}"
    missing = [image_id for image_id, _, _ in records if image_id not in folder_of]
    if missing:
        raise DatasetFormatError(f"{len(missing)} image(s) of dataset_coco.json are in neither COCO 2017 "
                                 f"caption file, e.g. id {missing[0]}")
    return [(image_id, folder_of[image_id], captions) for image_id, _, captions in records]


def coco_split(root, split: str, image_size: int | None = None, scheme: str = "karpathy",
               verify: bool = False, year: int = 2014, max_unreadable: float = MAX_UNREADABLE) -> CocoCaptions:
    """COCO captions from the standard layout under ``root`` (what ``velm-course fetch coco``
    writes).

    ``scheme="karpathy"`` (the usual one for captioning) reads ``dataset_coco.json`` with the
    splits train (with restval), val and test: 113,287 / 5,000 / 5,000 images on real COCO.
    With ``year=2014`` the images are read from ``train2014/`` and ``val2014/``; with
    ``year=2017`` the same images are read from ``train2017/`` and ``val2017/`` (the same
    pictures under the same ids, renamed), so the split, and every paper's test set, stay the
    same. ``scheme="official"`` reads ``annotations/captions_<split><year>.json`` (train or
    val). Beware: COCO 2017's official train contains most of the 5,000 Karpathy test images
    (2017's val is 5,000 of 2014's 40,504 val images; the rest of 2014's val went into train),
    so a model trained on it must not be scored on the Karpathy test. Verification is off by
    default (checking 120k files takes a while); unreadable images are then skipped when they
    are first read, up to ``max_unreadable`` of the split.
    """
    if year not in (2014, 2017):
        raise ValueError(f"COCO captions come as 2014 or 2017, not {year!r}")
    root = Path(root)
    _require(root, root, year)
    for folder in (f"train{year}", f"val{year}"):
        _require(root / folder, root, year)
    kept = {"image_size": image_size, "verify": verify, "max_unreadable": max_unreadable}
    if scheme == "karpathy":
        split_file = _require(root / "dataset_coco.json", root, year)
        records = read_karpathy_split(split_file, split)
        if year == 2017:
            records = _records_in_2017_layout(root, records)
        return CocoCaptions.from_records(root, records, source=split_file.name, **kept)
    if scheme == "official":
        if split not in ("train", "val"):
            raise ValueError(f"the official COCO {year} captions have train and val, not {split!r}")
        ann_file = _require(root / "annotations" / f"captions_{split}{year}.json", root, year)
        return CocoCaptions(root / f"{split}{year}", ann_file, **kept)
    raise ValueError(f"unknown scheme {scheme!r}; expected 'karpathy' or 'official'")


def pack_shapes_as_coco(shapes_root, dest, year: int = 2014) -> Path:
    """Copy a generated shapes dataset into COCO's layout, so every COCO code path can run
    offline. Returns ``dest``; ``coco_split(dest, ..., year=year)`` reads it.

    Both years get a Karpathy ``dataset_coco.json`` whose train, val and test splits are the
    shapes train, val and test splits, written as the real one is (2014 folders and names).
    ``year=2014``: ``train2014/`` and ``val2014/`` images named ``COCO_<folder>_<id:012d>.png``
    (val and test images live in ``val2014/``, as Karpathy's do) and
    ``annotations/captions_{train,val}2014.json``. ``year=2017``: images named ``<id:012d>.png``
    in ``train2017/`` and ``val2017/``, with every other test image in ``train2017/``, as in
    the real COCO 2017, whose train holds most of Karpathy's test images.

    >>> root = pack_shapes_as_coco(shapes_root, tmp / "coco")  # doctest: +SKIP
    >>> len(coco_split(root, "test")) == len(shapes_split(shapes_root, "test"))  # doctest: +SKIP
    True
    """
    import shutil

    if year not in (2014, 2017):
        raise ValueError(f"COCO captions come as 2014 or 2017, not {year!r}")
    shapes_root, dest = Path(shapes_root), Path(dest)
    karpathy_folder = {"train": "train2014", "val": "val2014", "test": "val2014"}
    official = {f"{part}{year}": {"images": [], "annotations": []} for part in ("train", "val")}
    karpathy = []
    for split, folder14 in karpathy_folder.items():
        data = _load_json(shapes_root / "annotations" / f"captions_{split}.json")
        annotations: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            annotations.setdefault(ann["image_id"], []).append(ann)
        for k, img in enumerate(data["images"]):
            suffix = Path(img["file_name"]).suffix
            name14 = f"COCO_{folder14}_{img['id']:012d}{suffix}"
            if year == 2014:
                folder, name = folder14, name14
            else:
                folder = "train2017" if split == "train" or (split == "test" and k % 2 == 0) else "val2017"
                name = f"{img['id']:012d}{suffix}"
            (dest / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shapes_root / "images" / split / img["file_name"], dest / folder / name)
            official[folder]["images"].append({"id": img["id"], "file_name": name, "height": img["height"],
                                               "width": img["width"]})
            official[folder]["annotations"] += annotations[img["id"]]
            karpathy.append({"filepath": folder14, "filename": name14, "cocoid": img["id"], "split": split,
                             "sentences": [{"raw": a["caption"]} for a in annotations[img["id"]]]})
    (dest / "annotations").mkdir(exist_ok=True)
    for folder, data in official.items():
        (dest / "annotations" / f"captions_{folder}.json").write_text(json.dumps(data))
    (dest / "dataset_coco.json").write_text(json.dumps({"images": karpathy}))
    return dest


def mirror_coco(root, dest, year: int = 2014) -> list:
    """Zip a folder in COCO's layout (``pack_shapes_as_coco``'s) into the archives the COCO
    servers offer, laid out as theirs are, and return their ``download.Remote`` entries with
    ``file://`` URLs, sizes and md5s: a local stand-in for the servers, so ``fetch_coco`` runs
    its real path (checks, unpacking, markers) offline.

    >>> remotes = mirror_coco(pack_shapes_as_coco(shapes_root, tmp / "coco"), tmp / "mirror")  # doctest: +SKIP
    >>> fetch_coco(tmp / "fetched", remotes=remotes)                                            # doctest: +SKIP
    """
    import hashlib

    root, dest = Path(root), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    members = {  # archive -> what it holds, as on the servers
        f"annotations_trainval{year}.zip": sorted((root / "annotations").glob(f"captions_*{year}.json")),
        "caption_datasets.zip": [root / "dataset_coco.json"],
        f"val{year}.zip": sorted((root / f"val{year}").iterdir()),
        f"train{year}.zip": sorted((root / f"train{year}").iterdir()),
    }
    remotes = []
    for name, files in members.items():
        archive = dest / name
        # images are compressed already: store them; the JSON compresses well
        method = zipfile.ZIP_DEFLATED if name.startswith(("annotations", "caption")) else zipfile.ZIP_STORED
        with zipfile.ZipFile(archive, "w", method) as zf:
            for path in files:
                # a fixed timestamp: the same files give the same bytes, so the same md5, every time
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                zf.writestr(info, path.read_bytes(), compress_type=method)
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        remotes.append(Remote(name, archive.resolve().as_uri(), archive.stat().st_size, md5))
    return remotes


# ----------------------------------------------------------------------------------------------
# Downloading

def fetch_coco(dest, year: int = 2014, remotes: Sequence[Remote] | None = None, progress: bool = True,
               keep_archives: bool = False, karpathy_from_hub: bool = True) -> Path:
    """Download and unpack COCO captions of ``year`` (2014 or 2017) and Karpathy's split into
    ``dest``, or the files ``remotes`` names (``download.Remote``; tests use local URLs).

    Each archive is fetched by ``download.download`` (disk space checked first, resumed after
    an interruption, size and md5 checked, then renamed from ``<name>.part``) and unpacked by
    ``download.safe_extract`` into ``dest``; a marker ``.<name>.done`` records the unpacking,
    so running the fetch again skips finished files and resumes an interrupted download.
    Archives are deleted after unpacking unless ``keep_archives``. COCO 2014 is ~20 GB of
    downloads and as much again unpacked (2017: ~20 GB too).

    Karpathy's ``caption_datasets.zip`` is on a personal page that has answered 404 before. Then
    (``karpathy_from_hub``) ``dataset_coco.json`` is rebuilt from the Hugging Face dataset
    ``hf_captions.HUB_NAME`` (``hf_captions.write_karpathy_split_from_hub``; with the official
    servers, its images per split must be Karpathy's 113,287 / 5,000 / 5,000); when that fails
    too, ``DatasetNotFoundError`` says why and where to put a copy by hand.

    >>> fetch_coco("data/coco")  # doctest: +SKIP
    """
    official = remotes is None  # the real COCO, whose Karpathy split has known counts
    if remotes is None:
        tables = {2014: COCO_2014, 2017: COCO_2017}
        if year not in tables:
            raise ValueError(f"COCO captions come as 2014 or 2017, not {year!r}")
        remotes = tables[year]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for remote in remotes:
        name = remote.name
        archive, done = dest / name, dest / f".{name}.done"
        if done.exists() or (name == KARPATHY_SPLIT.name and (dest / "dataset_coco.json").is_file()):
            continue  # unpacked before, or Karpathy's split file put there by hand
        # reserve: unpacked JPEGs take about as much room as their zip, next to it until deleted
        try:
            download(remote, dest, progress=progress, reserve=remote.size or 0)
        except urllib.error.HTTPError as err:
            if name != KARPATHY_SPLIT.name or err.code != 404:
                raise
            # Karpathy's zip lives on a personal university page, which has stopped serving it before
            _karpathy_split_from_hub(dest, remote.url, official, karpathy_from_hub)
            continue
        if not zipfile.is_zipfile(archive):  # e.g. an HTML error page, when no md5 is published
            archive.unlink()
            raise DatasetFormatError(
                f"{name}: the downloaded file from {remote.url} is not a zip archive (deleted it; "
                "check the URL and run the fetch again)")
        safe_extract(archive, dest, progress=progress)
        done.write_text(remote.url + "\n")
        if not keep_archives:
            archive.unlink()
    return dest


def _karpathy_split_from_hub(dest: Path, url: str, official: bool, use_hub: bool) -> None:
    """``dest/dataset_coco.json`` built from the Hugging Face copy of Karpathy's split, after his
    ``url`` answered 404; else ``DatasetNotFoundError`` naming both sources and where the file goes."""
    from .hf_captions import HUB_NAME, KARPATHY_COCO_COUNTS, write_karpathy_split_from_hub

    if use_hub:
        try:
            write_karpathy_split_from_hub(dest, expected_counts=KARPATHY_COCO_COUNTS if official else None)
            return
        except (DatasetNotFoundError, DatasetFormatError) as err:
            why = " ".join(str(err).split())  # one line
    else:
        why = "not asked (karpathy_from_hub=False)"
    raise DatasetNotFoundError(
        f"{url} answers 404: Karpathy's split is not served there any more, and dataset_coco.json could not "
        f"be built from its copy on the Hugging Face hub either ({why}). Put a copy of dataset_coco.json (the "
        f"Hugging Face dataset {HUB_NAME} and several Kaggle datasets hold one) into {dest} and run the fetch "
        f"again, or run it again where the hub can be reached (not with HF_HUB_OFFLINE=1); the archives "
        f"fetched so far are kept.") from None
