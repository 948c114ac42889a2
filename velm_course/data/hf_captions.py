"""Caption annotations through Hugging Face ``datasets``: the Karpathy split, tokenised once.

``coco.py`` reads the Karpathy split into Python lists, and ``CaptionPairs`` tokenises every
caption again at each launch. Here the same captions become a ``datasets.Dataset``, an Arrow
table kept on disk and memory-mapped, and the tokenised table is written once to a cache file
that later launches open instead of calling the tokenizer. On a Karpathy-sized file (566k
train captions, synthetic) on two busy CPU cores, the first launch took 14 s to read the rows
and 7 s to tokenise them; the second, under 1 s for both.

``karpathy_captions(root, split)`` has one row per caption, not per image, because training
iterates (image, caption) pairs (an epoch sees each caption once, as in ``CaptionPairs``) and a
tokenizer works on one caption at a time. Columns:

    cocoid    int      the COCO image id (Karpathy's ``cocoid``)
    filepath  str      the image folder, e.g. "val2014"
    filename  str      the image file, e.g. "COCO_val2014_000000391895.jpg"
    caption   str      the annotator's raw caption, stripped of outer spaces
    split     str      the image's own Karpathy split: "train" also holds "restval" images

``as_records(ds)`` regroups the rows per image as ``read_karpathy_split`` returns them. An image
without captions has no row, so it is absent there (Karpathy's COCO file has none).

Where the captions come from, tried in this order (the first that works is used, and said):

    1. the Hugging Face hub (``hub_name``, Karpathy's split as parquet) where it can be
       reached. A 2-second connection probe comes first: without it, ``load_dataset`` retries
       for about 25 seconds before giving up. With ``HF_HUB_OFFLINE=1`` or
       ``HF_DATASETS_OFFLINE=1``, the network is not touched: when the variable was set before
       ``datasets`` was imported, ``load_dataset`` still looks in its own cache (a copy from an
       earlier online run serves offline), otherwise the hub is skipped;
    2. ``root/dataset_coco.json`` (what ``velm-course fetch coco`` unpacks);
    3. ``root/caption_datasets.zip`` (Karpathy's archive): only its ``dataset_coco.json`` is
       taken out, into a temporary folder, not the Flickr files beside it;
    4. otherwise ``DatasetNotFoundError``, naming the command that fetches the files.

Local files are read with ``read_karpathy_split`` (its checks, its errors), and the rows are
saved with ``save_to_disk`` under a name made from the file's path, size and modification time
(``source_fingerprint``), so a second launch does not parse the 140 MB of JSON again either.

When Karpathy's own zip is gone (his page has answered 404), ``fetch_coco`` rebuilds
``dataset_coco.json`` from the hub with ``write_karpathy_split_from_hub``: the hub's rows
become his file's entries (``karpathy_json_from_hub``), written atomically and checked.

``tokenized_captions(ds_or_root, tokenizer, split, max_len)`` adds ``input_ids`` and
``length`` with ``Dataset.map(batched=True)``, written to a cache file named after the split,
the rows' fingerprint (which follows the source file's size and modification time, see above),
the tokenizer's vocabulary and ``max_len``. A second call opens that file and calls no
tokenizer; a changed vocabulary or source gets a new file, never another's stale ids.

>>> import json, shutil, tempfile
>>> from pathlib import Path
>>> from velm_course.data.captions import CaptionVocab
>>> tmp = Path(tempfile.mkdtemp())
>>> images = [{"cocoid": 7, "filepath": "val2014", "filename": "a.jpg", "split": "test",
...            "sentences": [{"raw": "A red circle."}, {"raw": "a circle"}]}]
>>> _ = (tmp / "dataset_coco.json").write_text(json.dumps({"images": images}))
>>> ds = karpathy_captions(tmp, "test", offline=True, cache_dir=tmp / "cache", verbose=False)
>>> ds[0]["cocoid"], ds[0]["filepath"], list(ds["caption"])
(7, 'val2014', ['A red circle.', 'a circle'])
>>> vocab = CaptionVocab.build(list(ds["caption"]))
>>> tok = tokenized_captions(ds, vocab, "test", max_len=4, cache_dir=tmp / "cache", verbose=False)
>>> tok[0]["input_ids"], vocab.decode(tok[0]["input_ids"]), tok[0]["length"]
([1, 4, 6, 5, 2, 0], 'a red circle', 3)
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path, PurePosixPath

from .captions import BOS, EOS, PAD
from .coco import (
    KARPATHY_SPLITS,
    DatasetFormatError,
    DatasetNotFoundError,
    check_disjoint,
    read_karpathy_split,
)

# yerevann/coco-karpathy: Karpathy's dataset_coco.json as parquet, one row per image, in the
# splits train (82,783 images), validation, test (5,000 each) and restval (30,504). Its columns
# are Karpathy's keys plus a URL: filepath, filename, cocoid, imgid, sentids, split, url, and
# sentences, a list of the raw captions as strings (Karpathy's file has {"raw", "tokens", ...}
# dicts there; mirrors that keep those dicts are read too).
HUB_NAME = "yerevann/coco-karpathy"
# our split -> the hub's: "val" is called "validation", and our train includes restval, as
# ``read_karpathy_split`` does (datasets' split syntax "a+b" concatenates two splits)
HUB_SPLITS = {"train": "train+restval", "val": "validation", "test": "test", "restval": "restval"}

COLUMNS = ("cocoid", "filepath", "filename", "caption", "split")
SPLIT_FILE, SPLIT_ZIP = "dataset_coco.json", "caption_datasets.zip"
# Bump when the code that makes rows or ids changes (normalize_caption included): the cache
# names carry these, so a new version never opens an old version's files.
ROWS_VERSION = 1
TOKENIZED_VERSION = 1
_TRUE = {"1", "ON", "YES", "TRUE"}


def default_cache_dir() -> Path:
    """``<data_dir>/generated/hf_captions`` (git-ignored; see ``velm_course.profiles.data_dir``)."""
    from ..profiles import data_dir

    return data_dir() / "generated" / "hf_captions"


def _row_features():
    from datasets import Features, Value

    return Features({"cocoid": Value("int64"), "filepath": Value("string"), "filename": Value("string"),
                     "caption": Value("string"), "split": Value("string")})


# ----------------------------------------------------------------------------------------------
# The captions as a Dataset, from the first source that has them

def karpathy_captions(root=None, split: str = "train", hub_name: str | None = HUB_NAME, cache_dir=None,
                      offline: bool | None = None, hub_timeout: float = 2.0, verbose: bool = True):
    """One row per caption of Karpathy's ``split`` (train includes restval) as a ``datasets.Dataset``.

    Sources are tried in the order of the module docstring: the hub (``hub_name=None`` skips it),
    then ``root/dataset_coco.json``, then ``root/caption_datasets.zip``. ``offline``: None
    follows ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``; True never opens a connection; False
    ignores those variables and probes the hub (``hub_timeout`` seconds). ``cache_dir`` holds
    the hub download and the cached rows (default ``default_cache_dir()``). The source used,
    and why earlier ones were not, is printed (``verbose``) and kept in ``ds.info.description``.
    """
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {KARPATHY_SPLITS}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    passed_over = []  # why each source before the one used was not used
    ds = None
    if hub_name:
        ds, why_not = _from_hub(hub_name, split, cache_dir, offline, hub_timeout)
        if ds is None:
            passed_over.append(f"hub {hub_name}: {why_not}")
        else:
            source = f"hub {hub_name} (split {HUB_SPLITS[split]})"
    if ds is None and root is not None:
        root = Path(root)
        if (root / SPLIT_FILE).is_file():
            ds, source = _from_local(root / SPLIT_FILE, None, split, cache_dir), f"local file {root / SPLIT_FILE}"
        elif (root / SPLIT_ZIP).is_file():
            member = _split_member(root / SPLIT_ZIP)
            ds, source = _from_local(root / SPLIT_ZIP, member, split, cache_dir), f"{member} in {root / SPLIT_ZIP}"
        else:
            passed_over.append(f"neither {root / SPLIT_FILE} nor {root / SPLIT_ZIP} exists")
    if ds is None:
        if root is None:
            passed_over.append("no local folder given (root=None)")
        dest = root if root is not None else "DIR"
        raise DatasetNotFoundError(f"Karpathy's COCO captions ({split}) not found: {'; '.join(passed_over)}. "
                                   f"Fetch them with: velm-course fetch coco --dest {dest}")
    line = f"Karpathy captions, {split}: {len(ds):,} captions from {source}"
    if passed_over:
        line += f" ({'; '.join(passed_over)})"
    ds.info.description = line
    if verbose:
        print(line)
    return ds


def hub_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else whether ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set
    to a true value now, or was when ``datasets`` was imported (the library reads them then)."""
    if offline is not None:
        return offline
    if any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    return _library_offline()


def _library_offline() -> bool:
    """Whether ``datasets`` itself is in offline mode: then ``load_dataset`` reads its cache only."""
    from datasets import config

    return bool(getattr(config, "HF_HUB_OFFLINE", getattr(config, "HF_DATASETS_OFFLINE", False)))


def _from_hub(hub_name: str, split: str, cache_dir: Path, offline: bool | None, timeout: float):
    """(our rows, None) from the hub, or (None, why not). Online, a ``timeout``-second connection
    probe comes first, so a missing network costs seconds, not load_dataset's retries."""
    hub, why_not = _open_hub(hub_name, HUB_SPLITS[split], cache_dir / "hub", offline, timeout)
    if hub is None:
        return None, why_not
    try:
        return hub_to_rows(hub, default_split=split), None
    except Exception as err:  # a renamed dataset or column...
        return None, f"{type(err).__name__}: {err}"


def _open_hub(hub_name: str, hub_split: str, cache_dir: Path, offline: bool | None, timeout: float):
    """(the hub's ``hub_split`` as loaded by ``_load_hub``, None), or (None, why not): skipped
    offline unless ``load_dataset`` itself is offline (then it reads its cache), and online only
    after a ``timeout``-second connection probe."""
    from urllib.parse import urlparse

    from ..text.hf_encoder import hub_reachable

    if hub_offline(offline):
        if not _library_offline():  # load_dataset would go online: do not call it
            return None, "skipped, offline (datasets was imported online, so load_dataset would not stay offline)"
    else:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        if not hub_reachable(host, timeout):
            return None, f"{host} cannot be reached within {timeout:g} s"
    try:
        return _load_hub(hub_name, hub_split, cache_dir), None
    except Exception as err:  # offline without a cached copy, a proxy, a renamed dataset...
        return None, f"{type(err).__name__}: {err}"


def _load_hub(hub_name: str, hub_split: str, cache_dir: Path):
    """``datasets.load_dataset`` (the one call that may use the network; tests replace it)."""
    from datasets import load_dataset

    return load_dataset(hub_name, split=hub_split, cache_dir=str(cache_dir))


def hub_to_rows(hub, default_split: str = "train"):
    """The hub's rows (one per image, Karpathy's columns) as ours (one per caption).

    ``sentences`` may hold strings (yerevann/coco-karpathy) or Karpathy's {"raw": ...} dicts;
    without a ``split`` column every image gets ``default_split``.
    """
    missing = {"cocoid", "filepath", "filename", "sentences"} - set(hub.column_names)
    if missing:
        raise DatasetFormatError(f"the hub dataset has no column(s) {sorted(missing)}; it has {hub.column_names}")
    return hub.map(_hub_batch_to_rows, batched=True, remove_columns=hub.column_names, features=_row_features(),
                   fn_kwargs={"default_split": default_split}, desc="one row per caption")


def _hub_batch_to_rows(batch, default_split: str) -> dict:
    rows = {c: [] for c in COLUMNS}
    n = len(batch["cocoid"])
    splits = batch["split"] if "split" in batch else [default_split] * n
    for cocoid, filepath, filename, split, sentences in zip(
            batch["cocoid"], batch["filepath"], batch["filename"], splits, batch["sentences"], strict=True):
        for sentence in sentences:
            raw = sentence["raw"] if isinstance(sentence, dict) else sentence
            row = {"cocoid": cocoid, "filepath": filepath or "", "filename": filename, "caption": raw.strip(),
                   "split": split}
            for column in COLUMNS:
                rows[column].append(row[column])
    return rows


# ----------------------------------------------------------------------------------------------
# Karpathy's dataset_coco.json rebuilt from the hub (for when his zip is gone)

# every split of the hub, so that one load gives the whole file (datasets' "a+b" concatenates)
HUB_ALL_SPLITS = "train+restval+validation+test"
# images per split in Karpathy's COCO file; "train" includes restval, as in read_karpathy_split
KARPATHY_COCO_COUNTS = {"train": 113_287, "val": 5_000, "test": 5_000}
_HUB_REQUIRED = ("cocoid", "filepath", "filename", "split", "sentences")
_HUB_SPLIT_NAMES = {"validation": "val"}  # a split column that spells val as the hub's split does


def karpathy_json_from_hub(hub) -> dict:
    """Karpathy's ``dataset_coco.json``, as a dict, from the hub's rows (one per image).

    ``hub``: a ``datasets.Dataset`` with yerevann/coco-karpathy's columns (``cocoid``,
    ``filepath``, ``filename``, ``split`` and ``sentences`` are needed; ``imgid`` and ``sentids``
    are used when present; ``url`` and others are ignored), a ``DatasetDict`` of such splits, or
    any iterable of row dicts. ``sentences`` holds strings or Karpathy's {"raw": ...} dicts.
    Pure: it reads and writes nothing else.

    Each row becomes Karpathy's entry {"filepath", "sentids", "filename", "imgid", "split",
    "sentences": [{"tokens", "raw", "imgid", "sentid"}, ...], "cocoid"} and the dict is
    {"images": [...], "dataset": "coco"}, which ``read_karpathy_split`` reads (it needs
    ``split``, ``filename``, ``filepath``, ``cocoid`` and each sentence's ``raw``). Karpathy's
    ``imgid`` is the image's place in his file: when the rows carry unique integer imgids (the
    hub's do), they are kept and the images put back in that order; otherwise the images keep
    the rows' order and are numbered 0, 1, ... Likewise ``sentids`` are kept when they are unique
    integers, one per sentence, else numbered afresh. ``tokens`` are the caption's lower-case
    words (``normalize_caption``), close to Karpathy's but not identical: nothing in this package
    reads ``tokens``, every reader takes ``raw``.

    Raises ``DatasetFormatError`` (and builds nothing) when a column is missing (``split``
    included: without it no split file can be written), a split is not one of Karpathy's four
    (the hub's "validation" is read as "val"), a value has the wrong type, or an image id is in
    two splits, or twice in one.

    >>> rows = [{"cocoid": 391895, "filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
    ...          "imgid": 0, "split": "test", "sentids": [770337], "sentences": ["A man rides a bike."],
    ...          "url": "http://images.cocodataset.org/val2014/COCO_val2014_000000391895.jpg"}]
    >>> image = karpathy_json_from_hub(rows)["images"][0]
    >>> image["filepath"], image["filename"], image["split"], image["cocoid"], image["sentids"]
    ('val2014', 'COCO_val2014_000000391895.jpg', 'test', 391895, [770337])
    >>> image["sentences"]
    [{'tokens': ['a', 'man', 'rides', 'a', 'bike'], 'raw': 'A man rides a bike.', 'imgid': 0, 'sentid': 770337}]
    >>> karpathy_json_from_hub([{**rows[0], "split": "train"}, rows[0]])
    Traceback (most recent call last):
    ...
    velm_course.data.coco.DatasetFormatError: the hub rows are not a Karpathy split: 1 image(s) are in both train and test, e.g. image id 391895
    """
    from .captions import normalize_caption

    rows = _hub_image_rows(hub)
    seen: dict[int, tuple[str, int]] = {}  # cocoid -> (split, row)
    images = []
    for i, row in enumerate(rows):
        where = f"hub row {i}"
        split = _HUB_SPLIT_NAMES.get(row["split"], row["split"])
        if split not in KARPATHY_SPLITS:
            raise DatasetFormatError(f"{where}: split {split!r} is not one of Karpathy's {KARPATHY_SPLITS}")
        cocoid = _hub_int(row["cocoid"], "cocoid", where)
        filename, filepath = row["filename"], row["filepath"] or ""
        if not isinstance(filename, str) or not filename or not isinstance(filepath, str):
            raise DatasetFormatError(f"{where}: filename and filepath should be strings, got "
                                     f"{filename!r} and {filepath!r}")
        if seen.get(cocoid, (None,))[0] == split:
            raise DatasetFormatError(f"{where}: image id {cocoid} is in {split} twice (also hub row {seen[cocoid][1]})")
        seen.setdefault(cocoid, (split, i))
        raws = [s["raw"] if isinstance(s, dict) else s for s in row["sentences"] or []]
        if not all(isinstance(raw, str) for raw in raws):
            raise DatasetFormatError(f"{where}: sentences should be strings or {{'raw': ...}} dicts")
        images.append({"filepath": filepath, "filename": filename, "split": split, "cocoid": cocoid, "raws": raws,
                       "imgid": row.get("imgid"), "sentids": row.get("sentids")})
    by_split = {s: [img["cocoid"] for img in images if img["split"] == s] for s in KARPATHY_SPLITS}
    try:
        check_disjoint(by_split)
    except DatasetFormatError as err:
        raise DatasetFormatError(f"the hub rows are not a Karpathy split: {err}") from None

    imgids = [img["imgid"] for img in images]
    if _unique_ints(imgids):
        images.sort(key=lambda img: img["imgid"])  # Karpathy's order
    else:
        for k, img in enumerate(images):
            img["imgid"] = k
    sentids = [img["sentids"] for img in images]
    if not (all(isinstance(ids, list) and len(ids) == len(img["raws"]) for ids, img in zip(sentids, images, strict=True))
            and _unique_ints([sid for ids in sentids for sid in ids])):
        first = 0
        for img in images:
            img["sentids"] = list(range(first, first + len(img["raws"])))
            first += len(img["raws"])
    entries = []
    for img in images:
        sentences = [{"tokens": normalize_caption(raw).split(), "raw": raw, "imgid": int(img["imgid"]),
                      "sentid": int(sid)}
                     for raw, sid in zip(img["raws"], img["sentids"], strict=True)]
        entries.append({"filepath": img["filepath"], "sentids": [int(sid) for sid in img["sentids"]],
                        "filename": img["filename"], "imgid": int(img["imgid"]), "split": img["split"], "sentences": sentences,
                        "cocoid": img["cocoid"]})
    return {"images": entries, "dataset": "coco"}


def _hub_image_rows(hub) -> list[dict]:
    """The rows of a Dataset, of every split of a DatasetDict, or of an iterable of dicts, with
    the columns that ``karpathy_json_from_hub`` needs checked to be there."""
    parts = list(hub.values()) if isinstance(hub, dict) else [hub]  # a DatasetDict is a dict
    rows = []
    for part in parts:
        if hasattr(part, "column_names") and hasattr(part, "select_columns"):  # a datasets.Dataset
            _check_hub_columns(part.column_names)
            kept = [c for c in (*_HUB_REQUIRED, "imgid", "sentids") if c in part.column_names]
            columns = part.select_columns(kept).to_dict()
            rows += [dict(zip(kept, values, strict=True)) for values in zip(*(columns[c] for c in kept), strict=True)]
        else:
            for row in part:
                _check_hub_columns(list(row))
                rows.append(row)
    return rows


def _check_hub_columns(names: list[str]) -> None:
    missing = [c for c in _HUB_REQUIRED if c not in names]
    if "split" in missing:
        raise DatasetFormatError(f"the hub rows have no 'split' column (they have {names}); each image's "
                                 "split is needed to write a Karpathy split file")
    if missing:
        raise DatasetFormatError(f"the hub rows have no column(s) {missing}; they have {names}")


def _hub_int(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise DatasetFormatError(f"{where}: {name} should be an integer, got {value!r}")
    return int(value)


def _unique_ints(values: list) -> bool:
    return (all(hasattr(v, "__index__") and not isinstance(v, bool) for v in values)
            and len(set(values)) == len(values))


def karpathy_counts(data: dict) -> dict[str, int]:
    """Images per split of a Karpathy file's dict, as ``read_karpathy_split`` counts them (train
    with restval): ``{"train": ..., "val": ..., "test": ...}``."""
    counts = {"train": 0, "val": 0, "test": 0}
    for img in data["images"]:
        counts["train" if img["split"] == "restval" else img["split"]] += 1
    return counts


def write_karpathy_split_from_hub(dest, hub_name: str = HUB_NAME, cache_dir=None, offline: bool | None = None,
                                  hub_timeout: float = 2.0, expected_counts: dict[str, int] | None = None,
                                  verbose: bool = True) -> Path:
    """Write ``dest/dataset_coco.json`` from the hub dataset ``hub_name`` (all four of its
    splits, converted by ``karpathy_json_from_hub``) and return its path.

    The hub is asked as ``karpathy_captions`` asks it (``offline``, ``hub_timeout``; the download
    is kept in ``cache_dir/hub``, default ``default_cache_dir()``, where ``karpathy_captions``
    finds it too). The file is written under a temporary name in ``dest``, read back with
    ``read_karpathy_split``, its images per split compared with the rows' (and with
    ``expected_counts`` when given, e.g. ``KARPATHY_COCO_COUNTS``), and only then renamed to
    ``dataset_coco.json`` (``os.replace``): a failure leaves no file behind, half-written or not.
    Prints where the split came from (``verbose``).

    Raises ``DatasetNotFoundError`` when the hub cannot be used (offline, unreachable, a failed
    load: the message says which) and ``DatasetFormatError`` when its rows are not a Karpathy
    split or do not have the expected counts.
    """
    dest = Path(dest)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    hub, why_not = _open_hub(hub_name, HUB_ALL_SPLITS, cache_dir / "hub", offline, hub_timeout)
    if hub is None:
        raise DatasetNotFoundError(f"the Hugging Face dataset {hub_name} could not be loaded: {why_not}")
    data = karpathy_json_from_hub(hub)
    counts = karpathy_counts(data)
    if expected_counts is not None and counts != dict(expected_counts):
        raise DatasetFormatError(f"the Hugging Face dataset {hub_name} has {counts} images per split (train with "
                                 f"restval), not Karpathy's {dict(expected_counts)}")
    dest.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=dest, prefix=f".{SPLIT_FILE}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        read_back = {split: len(read_karpathy_split(part, split)) for split in counts}
        if read_back != counts:
            raise DatasetFormatError(f"{SPLIT_FILE} from {hub_name} reads back as {read_back} images per split, "
                                     f"not the rows' {counts}")
        os.replace(part, dest / SPLIT_FILE)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    if verbose:
        print(f"{SPLIT_FILE} written from the Hugging Face dataset {hub_name} ({len(data['images']):,} images: "
              f"{counts['train']:,} train with restval, {counts['val']:,} val, {counts['test']:,} test) "
              f"into {dest}")
    return dest / SPLIT_FILE


def _split_member(zip_path: Path) -> str:
    """The name of ``dataset_coco.json`` inside Karpathy's zip (at its top, or in a folder)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if PurePosixPath(n).name == SPLIT_FILE]
    if not names:
        raise DatasetFormatError(f"{zip_path.name}: holds no {SPLIT_FILE}")
    return min(names, key=len)


def source_fingerprint(path: Path, member: str | None = None) -> str:
    """16 hex digits that change when the local source does: a hash of its full path, the zip
    member read, its size and its modification time (and of ``ROWS_VERSION``)."""
    stat = Path(path).stat()
    return _short_hash(f"v{ROWS_VERSION} {Path(path).resolve()} {member} {stat.st_size} {stat.st_mtime_ns}")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _from_local(path: Path, member: str | None, split: str, cache_dir: Path):
    """The rows of a local Karpathy file (``member`` of the zip ``path`` when given), read once:
    they are saved (``save_to_disk``) in ``cache_dir/rows/<split>-<source_fingerprint>`` and
    opened from there (``load_from_disk``, memory-mapped) at every later call."""
    from datasets import Dataset, DatasetInfo, load_from_disk
    from datasets.table import InMemoryTable

    key = source_fingerprint(path, member)
    saved = cache_dir / "rows" / f"{split}-{key}"
    if not (saved / "state.json").is_file():
        with _opened_split_file(path, member) as split_file:
            columns = _local_columns(split_file, split)
        features = _row_features()
        table = InMemoryTable.from_pydict(columns, schema=features.arrow_schema)
        # the fingerprint is the source's (datasets would otherwise hash the whole table)
        rows = Dataset(table, info=DatasetInfo(features=features), fingerprint=f"{split}-{key}")
        partial = saved.with_name(f"{saved.name}.partial-{os.getpid()}")
        rows.save_to_disk(str(partial), num_shards=1)  # one shard: an empty split is saved too
        try:
            os.replace(partial, saved)  # complete or absent, never half-written
        except OSError:  # another process saved the same rows first
            shutil.rmtree(partial, ignore_errors=True)
    return load_from_disk(str(saved))


def _local_columns(split_file: Path, split: str) -> dict[str, list]:
    """Our columns, one entry per caption, from a Karpathy file read with ``read_karpathy_split``."""
    records = read_karpathy_split(split_file, split)
    # read_karpathy_split merges restval into train; a second read tells which images it added
    restval = set()
    if split == "train":
        restval = {cocoid for cocoid, _, _ in read_karpathy_split(split_file, "restval")}
    columns = {c: [] for c in COLUMNS}
    for cocoid, image_path, captions in records:
        folder = str(PurePosixPath(image_path).parent)
        image = {"cocoid": cocoid, "filepath": "" if folder == "." else folder,
                 "filename": PurePosixPath(image_path).name, "split": "restval" if cocoid in restval else split}
        for caption in captions:
            for column, value in {**image, "caption": caption}.items():
                columns[column].append(value)
    return columns


@contextlib.contextmanager
def _opened_split_file(path: Path, member: str | None):
    """``path`` itself, or the one ``member`` of the zip ``path`` unpacked into a temporary folder."""
    if member is None:
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
        target = Path(tmp) / SPLIT_FILE
        with zf.open(member) as src, open(target, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        yield target


def as_records(ds) -> list[tuple[int, str, list[str]]]:
    """The rows regrouped per image, as ``read_karpathy_split`` gives them:
    ``[(cocoid, "filepath/filename", [captions]), ...]``, images in order of first appearance."""
    columns = ds.select_columns(["cocoid", "filepath", "filename", "caption"]).to_dict()
    images: dict[int, tuple[str, list[str]]] = {}
    for cocoid, filepath, filename, caption in zip(*columns.values(), strict=True):
        images.setdefault(cocoid, (str(Path(filepath) / filename), []))[1].append(caption)
    return [(cocoid, path, captions) for cocoid, (path, captions) in images.items()]


# ----------------------------------------------------------------------------------------------
# Tokenised once, cached on disk

def tokenizer_fingerprint(tokenizer) -> str:
    """A 16-hex-digit hash of what decides a tokenizer's ids: its vocabulary in order (for
    GPT-2's BPE the whole tokenizer, merges included) and its <bos>, <eos> and <pad> ids.

    Takes a ``CaptionVocab`` (``to_list``) or a ``GPT2CaptionTokenizer`` (``.tokenizer``, a
    ``transformers`` tokenizer); for anything else, pass ``tokenizer_id`` to
    ``tokenized_captions``.
    """
    h = hashlib.sha256(f"v{TOKENIZED_VERSION} {_special_ids(tokenizer)}\n".encode())  # same layout, same ids
    if hasattr(tokenizer, "to_list"):
        h.update("\n".join(tokenizer.to_list()).encode())
    elif hasattr(getattr(tokenizer, "tokenizer", None), "get_vocab"):
        inner = tokenizer.tokenizer
        backend = getattr(inner, "backend_tokenizer", None)  # a fast tokenizer: vocabulary, merges, rules
        h.update(backend.to_str().encode() if backend is not None else
                 repr(sorted(inner.get_vocab().items(), key=lambda kv: kv[1])).encode())
    else:
        raise TypeError(f"cannot tell which vocabulary a {type(tokenizer).__name__} has; pass tokenizer_id, a "
                        "string that changes whenever its ids would")
    return h.hexdigest()[:16]


def _special_ids(tokenizer) -> tuple[int, int, int]:
    """(<bos>, <eos>, <pad>): a GPT2CaptionTokenizer names its own; a CaptionVocab uses 1, 2, 0."""
    return tuple(getattr(tokenizer, name, default) for name, default in (("bos_id", BOS), ("eos_id", EOS),
                                                                            ("pad_id", PAD)))


def tokenized_cache_file(ds, tokenizer, split: str, max_len: int, cache_dir=None,
                         tokenizer_id: str | None = None) -> Path:
    """Where ``tokenized_captions`` keeps the ids:
    ``<cache_dir>/tokenized/<split>-<rows>-<tokenizer>-max<L>.arrow``.

    ``<rows>`` is the dataset's fingerprint: for rows from a local file, derived from
    ``source_fingerprint`` (the file's path, size and modification time); for the hub's, from
    ``datasets``' cache files; for a table built in memory, from its contents. ``<tokenizer>`` is
    ``tokenizer_fingerprint``, or a hash of ``tokenizer_id`` when given.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if tokenizer_id is not None:
        tok = _short_hash(f"v{TOKENIZED_VERSION} {tokenizer_id}")
    else:
        tok = tokenizer_fingerprint(tokenizer)
    return cache_dir / "tokenized" / f"{split}-{ds._fingerprint}-{tok}-max{max_len}.arrow"


def tokenized_captions(dataset_or_root, tokenizer, split: str = "train", max_len: int = 16, cache_dir=None,
                       tokenizer_id: str | None = None, offline: bool | None = None, verbose: bool = True):
    """The captions with ``input_ids`` and ``length`` columns added, computed once and cached.

    ``dataset_or_root``: a Dataset from ``karpathy_captions``, or a COCO folder to load one
    from (then ``offline`` and ``verbose`` go to ``karpathy_captions``). ``tokenizer``: a
    ``CaptionVocab`` or a ``GPT2CaptionTokenizer`` (anything with ``encode(str) -> ids``, given
    a ``tokenizer_id``).

    ``input_ids`` has ``max_len + 2`` ids, laid out as ``CaptionVocab.encode_batch`` does:
    <bos>, the caption's ids, <eos>, then <pad>. A caption longer than ``max_len`` tokens keeps
    its first ``max_len`` and gets no <eos> (padding carries no loss, so the model is not taught
    to stop mid-sentence); a warning counts them. ``length`` is the caption's token count
    before any cut, <bos>/<eos> not counted: ``ds.filter(lambda r: r["length"] <= max_len)``
    drops cut captions. ``ds.with_format("torch")[:]["input_ids"]`` is the (N, max_len + 2) batch.

    The cache file (``tokenized_cache_file``) is opened by ``Dataset.map`` when it exists, and
    the tokenizer is not called.
    """
    from datasets import Dataset

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if isinstance(dataset_or_root, Dataset):
        ds = dataset_or_root
    else:
        ds = karpathy_captions(dataset_or_root, split, cache_dir=cache_dir, offline=offline, verbose=verbose)
    cache_file = tokenized_cache_file(ds, tokenizer, split, max_len, cache_dir, tokenizer_id)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cached = cache_file.is_file()
    bos, eos, pad = _special_ids(tokenizer)
    out = ds.map(_tokenize_batch, batched=True, input_columns="caption", cache_file_name=str(cache_file),
                 load_from_cache_file=True, new_fingerprint=_short_hash(cache_file.stem),
                 fn_kwargs={"tokenizer": tokenizer, "max_len": max_len, "bos": bos, "eos": eos, "pad": pad},
                 desc=f"tokenizing {split} captions")
    if verbose:
        print(f"{'read' if cached else 'wrote'} {len(out):,} tokenized captions: {cache_file}")
    n_cut = sum(n > max_len for n in out.data.column("length").to_pylist())
    if n_cut:
        warnings.warn(f"{n_cut:,} of {len(out):,} {split} captions are longer than max_len={max_len} tokens: "
                      "cut, without <eos> (see the 'length' column)", stacklevel=2)
    return out


def _tokenize_batch(captions: list[str], tokenizer, max_len: int, bos: int, eos: int, pad: int) -> dict:
    input_ids, lengths = [], []
    for caption in captions:
        ids = tokenizer.encode(caption)
        row = [bos, *ids[:max_len]] + ([eos] if len(ids) <= max_len else [])
        input_ids.append(row + [pad] * (max_len + 2 - len(row)))
        lengths.append(len(ids))
    return {"input_ids": input_ids, "length": lengths}
