"""The download manager, the real code against a local HTTP server and file:// URLs: checksums,
resuming with Range, retries after dropped connections, servers that ignore Range, the disk-space
check, zip-slip archives, and the official tables."""

import hashlib
import http.server
import random
import re
import shutil
import stat
import threading
import types
import urllib.parse
import zipfile

import pytest

from velm_course import cli
from velm_course.data.coco import fetch_coco
from velm_course.data.download import (
    COCO_2014,
    COCO_2017,
    ChecksumError,
    DownloadError,
    NotEnoughSpaceError,
    Remote,
    UnsafeArchiveError,
    download,
    human_bytes,
    safe_extract,
)

FAST = dict(progress=False, backoff=0)  # no bars, no waiting between retries


@pytest.fixture
def payload(tmp_path_factory):
    """A zip of ~96 kB of incompressible bytes (so a cut anywhere loses real data), built in a
    folder of its own so that each test's tmp_path holds only what the download wrote."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("server") / "payload.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3):
            zf.writestr(f"images/{i}.bin", rng.randbytes(32_000))
    return path.read_bytes()


class Server:
    """A local HTTP server for one payload that records each request's Range start (None when
    no Range was asked) and how many body bytes it sent.

    ``honour_range=False`` answers every request with the whole file (200), as some servers do;
    ``cut_after=n`` sends at most n body bytes per response while announcing the full length,
    then closes the connection: a network drop mid-file.
    """

    def __init__(self, payload: bytes, honour_range: bool = True, cut_after: int | None = None):
        self.payload, self.honour_range, self.cut_after = payload, honour_range, cut_after
        self.requests: list[tuple[int | None, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                header = self.headers.get("Range")
                start = int(header.removeprefix("bytes=").rstrip("-")) if header else None
                n = len(server.payload)
                ranged = start is not None and server.honour_range
                if ranged and start >= n:
                    server.requests.append((start, 0))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{n}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.payload[start:] if ranged else server.payload
                sent = body if server.cut_after is None else body[:server.cut_after]
                server.requests.append((start, len(sent)))  # before sending: the client may finish first
                self.send_response(206 if ranged else 200)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{n - 1}/{n}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(sent)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)  # a short poll: shutdown() waits for one
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.zip"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload, **kwargs):
        servers.append(Server(payload, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# The official tables

@pytest.mark.parametrize("table", [COCO_2014, COCO_2017], ids=["2014", "2017"])
def test_official_tables_are_well_formed(table):
    names = [r.name for r in table]
    assert len(set(names)) == len(names)
    assert "caption_datasets.zip" in names  # captioning needs Karpathy's split either year
    for r in table:
        url = urllib.parse.urlsplit(r.url)
        assert url.scheme in ("http", "https"), r
        assert url.hostname in ("images.cocodataset.org", "cs.stanford.edu"), r
        assert url.path.endswith("/" + r.name), r
        assert r.md5 is None or re.fullmatch(r"[0-9a-f]{32}", r.md5), r
        assert r.size is None or (isinstance(r.size, int) and r.size > 0), r
    year = "2014" if table is COCO_2014 else "2017"
    assert {f"annotations_trainval{year}.zip", f"train{year}.zip", f"val{year}.zip"} <= set(names)
    # the big image archives all have a published size and checksum
    assert all(r.size and r.md5 for r in table if r.name.startswith(("train", "val")))


# ----------------------------------------------------------------------------------------------
# Checking what arrived

def test_download_checks_then_renames_and_does_not_fetch_a_good_file_again(tmp_path, serve, payload):
    server = serve(payload)
    remote = Remote("file.zip", server.url, len(payload), md5(payload))
    path = download(remote, tmp_path / "dest", **FAST)
    assert path == tmp_path / "dest" / "file.zip" and path.read_bytes() == payload
    assert not (tmp_path / "dest" / "file.zip.part").exists()
    assert server.requests == [(None, len(payload))]
    assert download(remote, tmp_path / "dest", **FAST) == path  # complete and right: no request
    assert server.requests == [(None, len(payload))]


def test_a_wrong_file_under_the_final_name_is_replaced(tmp_path, serve, payload):
    server = serve(payload)
    (tmp_path / "file.zip").write_bytes(b"not the file")
    with pytest.warns(UserWarning, match="not the published file"):
        download(Remote("file.zip", server.url, None, md5(payload)), tmp_path, **FAST)
    assert (tmp_path / "file.zip").read_bytes() == payload


@pytest.mark.parametrize("wrong", ["md5", "size"])
def test_a_wrong_checksum_is_rejected_and_nothing_is_kept(tmp_path, serve, payload, wrong):
    server = serve(payload)
    if wrong == "md5":
        remote, expected, got = Remote("file.zip", server.url, len(payload), "0" * 32), "0" * 32, md5(payload)
    else:  # the server announces another size than the table's: stop before fetching it
        remote, expected, got = Remote("file.zip", server.url, len(payload) + 1, None), len(payload) + 1, len(payload)
    what = "md5" if wrong == "md5" else "the size the server announces"
    with pytest.raises(ChecksumError, match=f"file.zip: {what} is {got}, expected {expected}") as err:
        download(remote, tmp_path, **FAST)
    assert isinstance(err.value, ValueError)
    assert not (tmp_path / "file.zip").exists() and not (tmp_path / "file.zip.part").exists()


def test_a_complete_part_with_a_wrong_md5_is_deleted(tmp_path, serve, payload):
    server = serve(payload)
    (tmp_path / "file.zip.part").write_bytes(b"x" * len(payload))  # whole length, wrong bytes
    with pytest.raises(ChecksumError, match=f"expected {md5(payload)}"):
        download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, **FAST)
    assert server.requests == []  # the part had every byte: nothing to fetch, only to check
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Resuming, retrying, restarting

def test_an_interrupted_download_resumes_with_range(tmp_path, serve, payload):
    server = serve(payload)
    half = len(payload) // 2 + 7
    (tmp_path / "file.zip.part").write_bytes(payload[:half])  # an earlier run stopped here
    path = download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, **FAST)
    assert server.requests == [(half, len(payload) - half)]  # only the missing bytes were sent
    assert path.read_bytes() == payload  # and the md5 over old + new bytes matched


@pytest.mark.parametrize("size_known", [True, False])
def test_a_part_that_is_already_whole_is_only_checked_and_renamed(tmp_path, serve, payload, size_known):
    server = serve(payload)
    (tmp_path / "file.zip.part").write_bytes(payload)  # stopped between the last byte and the rename
    download(Remote("file.zip", server.url, len(payload) if size_known else None, md5(payload)), tmp_path, **FAST)
    assert (tmp_path / "file.zip").read_bytes() == payload
    # with the size known nothing is asked; without it, the server answers 416 to the range
    assert server.requests == ([] if size_known else [(len(payload), 0)])


def test_a_dropped_connection_is_retried_and_resumed(tmp_path, serve, payload):
    cut = 20_000
    server = serve(payload, cut_after=cut)  # every response breaks off after 20 kB
    path = download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, retries=1,
                    chunk=4096, **FAST)
    assert path.read_bytes() == payload
    starts = [start for start, _ in server.requests]
    # one failure in a row at most, because each attempt brought bytes; each resumed where the
    # last one broke off, and no byte was sent twice
    assert starts == [None] + list(range(cut, len(payload), cut))
    assert sum(sent for _, sent in server.requests) == len(payload)


def test_a_server_that_keeps_failing_is_given_up_on_and_the_part_kept(tmp_path, serve, payload):
    server = serve(payload, cut_after=0)  # headers, then nothing
    (tmp_path / "file.zip.part").write_bytes(payload[:100])
    with pytest.raises(DownloadError, match="giving up after 3 failed attempts.*run the same command again"):
        download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, retries=2, **FAST)
    assert len(server.requests) == 3
    assert (tmp_path / "file.zip.part").read_bytes() == payload[:100]


def test_a_server_ignoring_range_gets_a_clean_restart(tmp_path, serve, payload):
    server = serve(payload, honour_range=False)
    (tmp_path / "file.zip.part").write_bytes(b"stale bytes from another file")
    path = download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, **FAST)
    assert server.requests == [(len(b"stale bytes from another file"), len(payload))]  # asked, got all
    assert path.read_bytes() == payload


def test_file_urls_send_the_whole_file(tmp_path, payload):
    source = tmp_path / "source.zip"
    source.write_bytes(payload)
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "file.zip.part").write_bytes(payload[:1000])  # file:// cannot resume
    path = download(Remote("file.zip", source.as_uri(), len(payload), md5(payload)), tmp_path / "dest", **FAST)
    assert path.read_bytes() == payload


# ----------------------------------------------------------------------------------------------
# Disk space

def fake_free(free):
    return lambda path: types.SimpleNamespace(total=10**12, used=10**12 - free, free=free)


def test_not_enough_disk_space_is_said_before_any_byte(tmp_path, serve, payload, monkeypatch):
    server = serve(payload)
    monkeypatch.setattr(shutil, "disk_usage", fake_free(1000))
    need = human_bytes(len(payload))
    with pytest.raises(NotEnoughSpaceError, match=re.escape(f"not enough disk space in {tmp_path}: the download "
                                                            f"needs {need}, only 1.0 kB is free")):
        download(Remote("file.zip", server.url, len(payload), md5(payload)), tmp_path, **FAST)
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_disk_space_counts_the_reserve_and_a_size_learned_from_the_server(tmp_path, serve, payload, monkeypatch):
    server = serve(payload)
    need = re.escape(human_bytes(len(payload)))
    monkeypatch.setattr(shutil, "disk_usage", fake_free(len(payload) + 10))
    with pytest.raises(NotEnoughSpaceError, match=rf"needs {need} plus 1\.0 MB to unpack"):
        download(Remote("file.zip", server.url, len(payload)), tmp_path, reserve=10**6, **FAST)
    # no size in the table: checked against the server's Content-Length, before the body is read
    monkeypatch.setattr(shutil, "disk_usage", fake_free(10))
    with pytest.raises(NotEnoughSpaceError, match=rf"needs {need}, only 10 B is free"):
        download(Remote("file.zip", server.url), tmp_path, **FAST)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Unpacking

def write_zip(path, members):
    """members: [(name, text, unix mode or None)]; names are written exactly as given."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, text, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, text)
    return path


def unsafe_members(outside):
    return {
        "parent": "../evil.txt",
        "nested parent": "a/../../evil.txt",
        "windows parent": "..\\evil.txt",
        "absolute": f"{outside}/evil.txt",
        "drive": "C:/evil.txt",
    }


@pytest.mark.parametrize("kind", [*unsafe_members("/x"), "symlink"])
def test_a_zip_slip_archive_is_refused_before_anything_is_written(tmp_path, kind):
    outside, dest = tmp_path / "outside", tmp_path / "outside" / "dest"
    outside.mkdir()
    if kind == "symlink":  # a link member, then a file written through it
        name, members = "images", [("images", "..", stat.S_IFLNK | 0o777), ("images/evil.txt", "pwned", None)]
    else:
        name = unsafe_members(outside)[kind]
        members = [(name, "pwned", None)]
    archive = write_zip(tmp_path / "evil.zip", [("ok.txt", "fine", None), *members])
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"member {name!r}")):
        safe_extract(archive, dest)
    assert list(outside.rglob("*")) == []  # neither dest nor anything in or next to it was made


def test_safe_extract_unpacks_nested_folders_and_checks_crcs(tmp_path):
    archive = write_zip(tmp_path / "good.zip", [("train2014/", "", None), ("train2014/a.jpg", "A", None),
                                                ("annotations/captions.json", "{}", None)])
    dest = safe_extract(archive, tmp_path / "dest")
    assert (dest / "train2014" / "a.jpg").read_text() == "A"
    assert (dest / "annotations" / "captions.json").read_text() == "{}"
    # a damaged member (one flipped byte of stored data) fails its CRC while unpacking
    data = bytearray((tmp_path / "good.zip").read_bytes())
    data[data.index(b"{}")] ^= 1
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        safe_extract(tmp_path / "bad.zip", tmp_path / "dest2")


def test_fetch_coco_refuses_an_unsafe_archive_and_marks_nothing_done(tmp_path):
    archive = write_zip(tmp_path / "evil.zip", [("../evil.txt", "pwned", None)])
    dest = tmp_path / "coco"
    with pytest.raises(UnsafeArchiveError):
        fetch_coco(dest, remotes=[Remote("evil.zip", archive.as_uri())], progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / ".evil.zip.done").exists()


def test_fetch_coco_knows_two_years():
    with pytest.raises(ValueError, match="2014 or 2017"):
        fetch_coco("/nonexistent", year=2015)


def test_fetch_command_passes_year_and_keep_archives(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("velm_course.data.coco.fetch_coco", lambda dest, **kw: calls.append((dest, kw)))
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))
    assert cli.main(["fetch", "coco", "--year", "2017", "--keep-archives"]) == 0
    assert calls == [(str(tmp_path / "coco"), {"year": 2017, "keep_archives": True})]


def test_fetch_command_reports_a_full_disk_without_a_traceback(monkeypatch, tmp_path, capsys):
    def full(dest, **kw):
        raise NotEnoughSpaceError("not enough disk space in X")

    monkeypatch.setattr("velm_course.data.coco.fetch_coco", full)
    assert cli.main(["fetch", "coco", "--dest", str(tmp_path)]) == 1
    assert "velm-course: error: not enough disk space in X" in capsys.readouterr().err
