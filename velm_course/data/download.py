"""Download big archives so that a file under its final name is always complete and correct.

COCO is ~20 GB in three zips, fetched over hours from one server. Everything that can go
wrong on the way does, sooner or later; each safeguard here answers one of those failures:

1. **Disk space first.** A 13 GB download that dies at 95% with "No space left on device"
   has wasted an hour. ``shutil.disk_usage`` is asked before the first byte, for the bytes
   still to come plus a ``reserve`` (room to unpack the archive next to itself).
2. **A ``.part`` file.** Bytes go to ``<name>.part`` and only a checked file is renamed to
   ``<name>``, so "the file exists" means "the file is good", for the next run and for people.
3. **Resume with an HTTP Range request.** A dropped connection at 12 of 13 GB should cost
   the last GB, not all 13: a leftover ``.part`` of N bytes asks for ``Range: bytes=N-``.
   Only a server that answers 206 (Partial Content) sends the rest; one that answers 200
   sends the whole file again, and the part starts over (``file://`` URLs always do that).
4. **Retry with backoff.** Networks drop. After a network error or a short read, wait 1, 2,
   4, ... seconds (a blip passes; a struggling server is not hammered) and resume from what
   is on disk. Only failures in a row count against ``retries``: an attempt that brought
   bytes resets the count, so a long download over a flaky line still finishes.
5. **Size and md5.** A truncated file, an HTML error page saved as ``.zip``, a resume that
   glued the wrong bytes together: all unzip to garbage or fail much later. The md5 is
   computed while streaming (continuing over the bytes already on disk when resuming, so the
   13 GB are not read twice) and compared with the published one. A mismatch deletes the
   part and raises ``ChecksumError``: those bytes are wrong somewhere, and resuming from them
   would only keep them wrong. Where no checksum is published, the computed md5 is printed
   so it can be compared by hand, and the caller checks what it can (``fetch_coco``: that
   the file is a zip whose members' CRCs all hold while unpacking).
6. **An atomic rename.** ``os.replace`` in one folder is atomic: a crash leaves either the
   part or the whole file, never half a file under the final name.
7. **Safe unpacking.** A zip member named ``../../.bashrc`` or ``/etc/cron.d/x``, or a
   symbolic link, would write outside the target folder ("zip slip"). ``safe_extract``
   checks every member's name before it writes anything, and writes each member itself to
   the path it checked (it does not lean on ``zipfile``'s own quiet renaming).

>>> r = Remote("val2017.zip", "http://images.cocodataset.org/zips/val2017.zip", 815585330,
...            "442b8da7639aecaf257c1dceb8ba8c80")
>>> r.name, human_bytes(r.size)
('val2017.zip', '815.6 MB')
>>> download(r, "data/coco")  # doctest: +SKIP
PosixPath('data/coco/val2017.zip')
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath


@dataclass(frozen=True)
class Remote:
    """One file to download and what it must turn out to be."""

    name: str  # the file name on disk, inside the destination folder
    url: str  # where to get it (http, https or file)
    size: int | None = None  # bytes; None: unknown, so no early size check and no disk-space need
    md5: str | None = None  # hex digest; None: unknown, so the computed md5 is only printed


# ----------------------------------------------------------------------------------------------
# The official COCO files
#
# Checksums: the md5 of each official COCO zip as published by several independent download
# scripts (Salesforce LAVIS's dataset builders, detection toolkits' download scripts, md5sum -c
# recipes, ...); for annotations_trainval2014.zip the object store's ETag is the same md5.
# Sizes: the byte counts that independent download logs (wget's "Length:" line, Keras'
# get_file progress) and scripts that pin sizes agree on. The URLs are COCO's own, over http
# as cocodataset.org links them (its https name has failed TLS checks for some users); the
# md5 is what guards the bytes.
#
# Karpathy's split (caption_datasets.zip: dataset_coco.json plus the Flickr8k/30k split files)
# lives on a personal university page; no published size or checksum was found in two
# independent sources, so both are None: it is checked only for being a complete zip (every
# member's CRC is verified while unpacking) and its computed md5 is printed to compare. If the
# page is gone, any copy of dataset_coco.json placed in the COCO folder works the same.
KARPATHY_SPLIT = Remote(
    "caption_datasets.zip",
    "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    None, None)

COCO_2014 = (
    Remote("annotations_trainval2014.zip",
           "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
           252872794, "0a379cfc70b0e71301e0f377548639bd"),
    KARPATHY_SPLIT,
    Remote("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip",
           6645013297, "a3d79f5ed8d289b7a7554ce06a5782b3"),  # 6.6 GB, 40,504 images
    Remote("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip",
           13510573713, "0da8c0bd3d6becc4dcb32757491aca88"),  # 13.5 GB, 82,783 images
)

# COCO 2017 holds the same 123,287 images re-split (train2017 118,287, val2017 5,000) and renamed;
# captioning still needs Karpathy's split, whose image ids find the same pictures.
COCO_2017 = (
    Remote("annotations_trainval2017.zip",
           "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
           252907541, "f4bbac642086de4f52a3fdda2de5fa2c"),
    KARPATHY_SPLIT,
    Remote("val2017.zip", "http://images.cocodataset.org/zips/val2017.zip",
           815585330, "442b8da7639aecaf257c1dceb8ba8c80"),  # 0.8 GB
    Remote("train2017.zip", "http://images.cocodataset.org/zips/train2017.zip",
           19336861798, "cced6f7f71b7629ddf16f17bbcfab6b2"),  # 19.3 GB
)


# ----------------------------------------------------------------------------------------------
# Errors

class ChecksumError(ValueError):
    """A downloaded file is not the published one (wrong md5 or size); its bytes were deleted."""

    def __init__(self, name: str, expected: str | int, got: str | int, what: str = "md5"):
        self.name, self.expected, self.got = name, expected, got
        super().__init__(
            f"{name}: {what} is {got}, expected {expected}. The download was deleted; run the "
            "fetch again. If it happens again, the file on the server has changed: compare "
            "with the official download page.")


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination folder; nothing was written."""


class NotEnoughSpaceError(OSError):
    """The destination folder's disk cannot hold what is about to be written."""


class DownloadError(OSError):
    """The network kept failing; what was fetched is kept in the ``.part`` file to resume."""


def human_bytes(n: int) -> str:
    """A byte count in decimal units, as disks and servers count them.

    >>> human_bytes(13510573713), human_bytes(2048), human_bytes(5)
    ('13.5 GB', '2.0 kB', '5 B')
    """
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def check_disk_space(folder: Path, need: int, reserve: int = 0) -> None:
    """Raise ``NotEnoughSpaceError`` unless ``folder``'s disk has ``need + reserve`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < need + reserve:
        extra = f" plus {human_bytes(reserve)} to unpack" if reserve else ""
        raise NotEnoughSpaceError(
            f"not enough disk space in {folder}: the download needs {human_bytes(need)}{extra}, "
            f"only {human_bytes(free)} is free. Free some space or fetch into another folder.")


# ----------------------------------------------------------------------------------------------
# Downloading

class _PartFile:
    """The ``.part`` file and the md5 of its bytes, kept in step.

    The md5 object lives across retries, so resuming costs no re-reading; only a part left by
    an earlier run is read once, to continue its md5.
    """

    def __init__(self, path: Path, keep: int):
        self.path, self.size, self.md5 = path, 0, hashlib.md5()
        if path.exists():
            self._rehash(keep)

    def _rehash(self, keep: int) -> None:
        """Keep the first ``keep`` bytes on disk (fewer if there are fewer) and hash them."""
        self.md5, self.size = hashlib.md5(), 0
        with open(self.path, "r+b") as f:
            f.truncate(keep)
            while block := f.read(1 << 20):
                self.md5.update(block)
                self.size += len(block)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.md5, self.size = hashlib.md5(), 0

    def append(self, f, block: bytes) -> None:
        f.write(block)
        self.md5.update(block)
        self.size += len(block)

    def resync(self) -> None:
        """After a failed attempt, make the file and the hashed count agree again (a write may
        have failed half way); the file on disk is the truth."""
        if self.path.exists() and self.path.stat().st_size != self.size:
            self._rehash(self.path.stat().st_size)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


class _ShortRead(ConnectionError):
    """The connection ended before the announced number of bytes."""


def _transient(err: BaseException) -> bool:
    """Worth retrying: the network or the server failed, not the request or the disk."""
    if isinstance(err, urllib.error.HTTPError):  # an answer: only "try later" ones are retried
        return err.code in (408, 429) or err.code >= 500
    if isinstance(err, urllib.error.URLError):  # no answer (DNS, refused, reset), or a local file
        return not isinstance(err.reason, FileNotFoundError)
    return isinstance(err, (ConnectionError, TimeoutError, http.client.HTTPException))


def _content_range(headers, which: str) -> int | None:
    """The start (``which="start"``) or total size from ``Content-Range: bytes 10-99/100``.

    >>> _content_range({"Content-Range": "bytes 10-99/100"}, "start"), _content_range({}, "total")
    (10, None)
    >>> _content_range({"Content-Range": "bytes */100"}, "total")
    100
    """
    value = (headers.get("Content-Range") or "").removeprefix("bytes ").strip()
    span, _, total = value.partition("/")
    try:
        return int(span.partition("-")[0]) if which == "start" else int(total)
    except ValueError:
        return None


def _attempt(remote: Remote, part: _PartFile, bar, timeout: float, chunk: int, reserve: int) -> None:
    """One request: append what the server sends to ``part`` (or start it over)."""
    headers = {"User-Agent": "velm-course"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"  # resume: only the missing bytes
    try:
        response = urllib.request.urlopen(urllib.request.Request(remote.url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        # 416: the range starts at or past the end. The part may already be whole (a run that
        # stopped between the last byte and the rename); if not, it is not this file's start.
        if err.code == 416 and part.size:
            if _content_range(err.headers, "total") == part.size:
                return
            part.restart()
            raise _ShortRead("the server refused the resume range; starting over") from None
        raise
    with response:
        status = getattr(response, "status", None)  # None for file:// URLs
        if status == 206 and _content_range(response.headers, "start") not in (None, part.size):
            part.restart()  # bytes from elsewhere in the file would be glued on at the wrong place
            raise _ShortRead("the server sent another range than the one asked for; starting over")
        if part.size and status != 206:
            part.restart()  # the server sent the whole file (file:// URLs always do): start over
        length = response.headers.get("Content-Length")
        total = part.size + int(length) if length is not None else remote.size
        if remote.size is not None and total is not None and total != remote.size:
            # the URL now serves something else (an error page, a new version): stop before
            # fetching gigabytes of it; a part of the old file cannot be resumed from either
            part.delete()
            raise ChecksumError(remote.name, remote.size, total, what="the size the server announces")
        if remote.size is None and total is not None:
            check_disk_space(part.path.parent, total - part.size, reserve)  # now that it is known
        bar.reset(total=total)
        bar.update(part.size)
        with open(part.path, "ab") as f:
            while block := response.read(chunk):
                part.append(f, block)
                bar.update(len(block))
    if total is not None and part.size < total:
        raise _ShortRead(f"the connection closed after {part.size} of {total} bytes")


def _file_md5(path: Path, progress: bool) -> str:
    from tqdm.auto import tqdm

    md5 = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"checking {path.name}", disable=not progress) as bar:
        while block := f.read(1 << 20):
            md5.update(block)
            bar.update(len(block))
    return md5.hexdigest()


def _already_there(target: Path, remote: Remote, progress: bool) -> bool:
    """Is ``target`` the complete, published file? (With no size or md5 known: it exists.)"""
    if remote.size is not None and target.stat().st_size != remote.size:
        return False
    return remote.md5 is None or _file_md5(target, progress) == remote.md5.lower()


def download(remote: Remote, dest_dir: str | os.PathLike, *, retries: int = 5, timeout: float = 60,
             progress: bool = True, chunk: int = 1 << 20, reserve: int = 0,
             backoff: float = 1.0) -> Path:
    """Download ``remote`` into ``dest_dir`` and return its path; every safeguard of the module
    docstring, in order.

    A complete file already there (right size and md5) is not fetched again; a wrong one is
    replaced. ``retries``: how many times in a row a failed attempt is retried before giving up
    with ``DownloadError`` (an attempt that brought bytes resets the count; the bytes so far stay
    in the ``.part`` file for the next run). ``timeout``: seconds a connect or a read may hang. ``reserve``: bytes that must stay free besides the download (to unpack
    it). ``backoff``: the first wait between attempts in seconds, doubled each time (0 in tests).
    """
    from tqdm.auto import tqdm

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / remote.name
    if target.exists():
        if _already_there(target, remote, progress):
            return target
        warnings.warn(f"{target} is not the published file (wrong size or md5); downloading it again",
                      stacklevel=2)
        target.unlink()

    part_path = dest_dir / (remote.name + ".part")
    have = part_path.stat().st_size if part_path.exists() else 0
    too_long = remote.size is not None and have > remote.size  # then it cannot be this file's start
    part = _PartFile(part_path, keep=0 if too_long else have)  # a leftover part: resume it
    if remote.size is not None:
        check_disk_space(dest_dir, remote.size - part.size, reserve)  # before the first byte

    with tqdm(total=remote.size, unit="B", unit_scale=True, desc=remote.name, disable=not progress) as bar:
        failures = 0
        while remote.size is None or part.size < remote.size:
            before = part.size
            try:
                _attempt(remote, part, bar, timeout, chunk, reserve)
                break
            except Exception as err:
                if not _transient(err):
                    raise
                part.resync()
                failures = 0 if part.size > before else failures + 1  # progress resets the count
                if failures > retries:
                    raise DownloadError(
                        f"{remote.name}: giving up after {failures} failed attempts in a row ({err}). "
                        f"The {human_bytes(part.size)} fetched so far are kept in {part.path}: run the "
                        "same command again to resume.") from err
                time.sleep(min(backoff * 2 ** max(failures - 1, 0), 60))

    if remote.size is not None and part.size != remote.size:
        part.delete()
        raise ChecksumError(remote.name, remote.size, part.size, what="size")
    digest = part.md5.hexdigest()
    if remote.md5 is not None and digest != remote.md5.lower():
        part.delete()
        raise ChecksumError(remote.name, remote.md5.lower(), digest)
    if remote.md5 is None:
        print(f"{remote.name}: md5 {digest} (no published checksum to compare with; "
              "compare it with another copy if you can)")
    os.replace(part.path, target)  # atomic: the final name only ever holds a checked file
    return target


# ----------------------------------------------------------------------------------------------
# Unpacking

def member_problem(name: str, mode: int = 0) -> str | None:
    """Why a zip member called ``name`` (with Unix ``mode`` bits) is unsafe to unpack, or None.

    Checked on the name as written in the archive, with both slash kinds as separators (a
    backslash is a folder separator on Windows).

    >>> member_problem("train2014/COCO_train2014_000000000009.jpg") is None
    True
    >>> member_problem("../evil.txt"), member_problem("a/..\\\\..\\\\evil.txt")
    ("goes up a folder ('..')", "goes up a folder ('..')")
    >>> member_problem("/etc/passwd"), member_problem("C:/evil.txt")
    ('is an absolute path', 'is an absolute path')
    >>> member_problem("link", mode=stat.S_IFLNK | 0o777)
    'is a symbolic link'
    """
    if stat.S_ISLNK(mode):  # a link could point anywhere, and a later member write through it
        return "is a symbolic link"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive or name.startswith("\\"):
        return "is an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "goes up a folder ('..')"
    return None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = False) -> Path:
    """Unpack the zip ``archive`` into ``dest``; return ``dest``.

    Every member is checked before anything is written: a symbolic link, an absolute path,
    a ``..`` part, or any name whose normalised path falls outside ``dest`` raises
    ``UnsafeArchiveError`` naming the member. Links already inside ``dest`` (say
    ``train2014`` pointing at a bigger disk) are the user's own and are followed. Members'
    CRC-32s are checked as they are read (``zipfile.BadZipFile`` on a damaged member).
    """
    from tqdm.auto import tqdm

    archive, dest = Path(archive), Path(dest)
    root = Path(os.path.abspath(dest))
    with zipfile.ZipFile(archive) as zf:
        checked = []  # (member, the path it will be written to), all checked before any write
        for info in zf.infolist():
            problem = member_problem(info.filename, info.external_attr >> 16)
            target = Path(os.path.normpath(root / info.filename.replace("\\", "/")))
            if problem is None and not target.is_relative_to(root):
                problem = "would land outside the destination folder"  # whatever the checks above missed
            if problem:
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} {problem}; "
                                         f"refusing to unpack it (nothing was written to {dest})")
            checked.append((info, target))
        root.mkdir(parents=True, exist_ok=True)
        for info, target in tqdm(checked, desc=f"unpacking {archive.name}", unit=" files",
                                 disable=not progress):
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest
