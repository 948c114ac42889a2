"""The bundled Shakespeare corpus and the one train/val/test split every LM chapter uses.

``data/shakespeare/shakespeare.txt`` holds 37 plays and 5 poems from Project Gutenberg
(about 5 MB of plain ASCII), built by ``python data/build_shakespeare_corpus.py``. Each work
starts with a title line ``=== <title> ===``, a blank line, then the text; works are
separated by two blank lines.

The split is by whole works, fixed by title:

    val   Macbeth, Much Ado About Nothing     (a tragedy and a comedy, ~4.5% of the text)
    test  Julius Caesar, The Tempest          (a tragedy and a romance, ~4.3%)
    train everything else, poems included      (~91%)

Why whole plays rather than the last 10% of the characters: a play has its own cast, and
the speaker names ("MACBETH.", "LADY MACBETH.") recur hundreds of times. Cutting inside a
play would leak those names into the held-out text and flatter the model; held-out plays
measure what we care about, writing Shakespeare the model has not seen. Because the split
is a list of titles applied to a file checked into git, the held-out text is byte-for-byte
the same on every machine (tests check it against the sha256 sums in MANIFEST.json).

>>> text = "=== A ===\\n\\nTo be.\\n\\n\\n=== B ===\\n\\nOr not.\\n"
>>> list(split_works(text))
['A', 'B']
>>> corpus_stats("to be\\nor not")["words"]
4
"""

from __future__ import annotations

import re
from pathlib import Path

CORPUS_FILE = "shakespeare.txt"
REBUILD_COMMAND = "python data/build_shakespeare_corpus.py"
VAL_WORKS = ("Macbeth", "Much Ado About Nothing")
TEST_WORKS = ("Julius Caesar", "The Tempest")
# A title line, exactly as the build script writes it. No line of the texts starts with "=".
TITLE_LINE = re.compile(r"^=== (.+) ===$", re.MULTILINE)


def default_corpus_path() -> Path:
    """``<data_dir>/shakespeare/shakespeare.txt`` (see ``velm_course.profiles.data_dir``)."""
    from velm_course.profiles import data_dir

    return data_dir() / "shakespeare" / CORPUS_FILE


def load_shakespeare(path: str | Path | None = None) -> str:
    """The whole corpus as one string (a file path, a folder holding it, or the default).

    >>> text = load_shakespeare()  # doctest: +SKIP
    >>> text[:35]  # doctest: +SKIP
    "=== All's Well That Ends Well ===\\n\\n"
    """
    path = default_corpus_path() if path is None else Path(path)
    if path.is_dir():
        path = path / CORPUS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"Shakespeare corpus not found at {path}. Rebuild it from a checkout of the "
            f"repository with `{REBUILD_COMMAND}` (add `--out <folder>` to write elsewhere), "
            "or set VELM_DATA_DIR to a folder that holds shakespeare/shakespeare.txt."
        )
    # Text mode turns any CRLF (say, from a Windows git checkout) back into "\n", so the
    # string, and its sha256, is the same on every machine.
    return path.read_text(encoding="utf-8")


def split_works(text: str) -> dict[str, str]:
    """``{title: chunk}`` in corpus order, where ``"".join(chunks) == text``.

    A chunk runs from its title line up to the next title line, so it keeps its title line
    and the blank lines after it.
    """
    starts = [(m.start(), m.group(1)) for m in TITLE_LINE.finditer(text)]
    if not starts:
        raise ValueError("no '=== <title> ===' lines found: is this the Shakespeare corpus?")
    if starts[0][0] != 0:
        raise ValueError("the corpus must begin with a '=== <title> ===' line")
    works = {}
    ends = [s for s, _ in starts[1:]] + [len(text)]
    for (start, title), end in zip(starts, ends, strict=True):
        if title in works:
            raise ValueError(f"title {title!r} appears twice")
        works[title] = text[start:end]
    return works


def shakespeare_splits(text: str | None = None) -> dict[str, str]:
    """``{"train", "val", "test"}`` texts: whole works, each split in corpus order.

    ``text`` defaults to :func:`load_shakespeare`. The three parts are disjoint and,
    put together, hold every character of the corpus exactly once.

    >>> splits = shakespeare_splits()  # doctest: +SKIP
    >>> splits["val"].splitlines()[0]  # doctest: +SKIP
    '=== Macbeth ==='
    """
    works = split_works(load_shakespeare() if text is None else text)
    missing = [t for t in VAL_WORKS + TEST_WORKS if t not in works]
    if missing:
        raise ValueError(f"held-out works {missing} are not in the corpus")
    splits = {"train": [], "val": [], "test": []}
    for title, chunk in works.items():
        part = "val" if title in VAL_WORKS else "test" if title in TEST_WORKS else "train"
        splits[part].append(chunk)
    return {part: "".join(chunks) for part, chunks in splits.items()}


def corpus_stats(text: str) -> dict[str, int]:
    """Characters, whitespace-separated words, lines and distinct characters of ``text``.

    >>> corpus_stats("To be, or not to be.\\n")
    {'chars': 21, 'words': 6, 'lines': 1, 'unique_chars': 11}
    """
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return {"chars": len(text), "words": len(text.split()), "lines": lines,
            "unique_chars": len(set(text))}
