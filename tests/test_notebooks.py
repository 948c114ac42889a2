"""Notebook hygiene: what strict nbval does not check but a well-kept course needs."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|/Users/|[A-Z]:\\\\)")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append("".join(value))
    return "\n".join(parts)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_name_badge_and_goals(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)
    first = "".join(load(path)["cells"][0]["source"])
    assert "colab.research.google.com/github/" in first and f"notebooks/{path.name}" in first
    assert "Learning goals" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_top_to_bottom_without_errors(path):
    cells = code_cells(load(path))
    assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1))
    assert any(c.get("outputs") for c in cells), "no stored outputs"
    # an error is stored only where the cell says it expects one (nbval checks that it still raises)
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"
              and "raises-exception" not in c.get("metadata", {}).get("tags", [])]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_the_package(path):
    sources = "\n".join("".join(c["source"]) for c in code_cells(load(path)))
    assert re.search(r"^\s*(from velm_course|import velm_course)", sources, re.MULTILINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_machine_paths_and_small(path):
    for cell in code_cells(load(path)):
        match = ABSOLUTE_PATH.search(output_text(cell))
        assert not match, f"absolute path {match.group(0)!r} in the outputs of: {''.join(cell['source'])[:80]}"
    assert path.stat().st_size < 2 * 2**20


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ignored_outputs_say_why(path):
    """nbval only honours the marker alone on its line, so the reason goes on the next line."""
    for cell in code_cells(load(path)):
        lines = [ln.strip() for ln in "".join(cell["source"]).splitlines()]
        for i, line in enumerate(lines):
            if "NBVAL_IGNORE_OUTPUT" in line:
                assert line == "# NBVAL_IGNORE_OUTPUT", f"nbval would not see this marker: {line!r}"
                assert i + 1 < len(lines) and re.match(r"#\s*\(?why:\s*\w+", lines[i + 1]), (
                    f"say why the output is ignored on the line after the marker: {lines[:3]}")
