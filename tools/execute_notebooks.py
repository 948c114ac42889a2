"""Execute notebooks top to bottom in the ci profile and store their outputs in place.

    python tools/execute_notebooks.py notebooks/*.ipynb

This is how the committed outputs that strict nbval compares against are made: a fresh
kernel, the notebook's own folder as working directory, VELM_PROFILE=ci, no cell timings
in the metadata (they would change on every run and clutter diffs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def coalesce_streams(outputs: list) -> list:
    r"""Consecutive prints to the same stream as one output: how many pieces a cell's printing
    arrives in depends on the machine's load, and the stored notebook should not.

    >>> outs = [nbformat.v4.new_output("stream", name="stdout", text="a\n"),
    ...         nbformat.v4.new_output("stream", name="stdout", text="b\n"),
    ...         nbformat.v4.new_output("stream", name="stderr", text="c\n")]
    >>> [(o.name, o.text) for o in coalesce_streams(outs)]
    [('stdout', 'a\nb\n'), ('stderr', 'c\n')]
    """
    merged = []
    for out in outputs:
        last = merged[-1] if merged else None
        if (out.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                and last.get("name") == out.get("name")):
            last["text"] = last["text"] + out["text"]
        else:
            merged.append(out)
    return merged


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    os.environ["VELM_PROFILE"] = "ci"
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nb.metadata.pop("widgets", None)  # widget state is large and random; outputs keep a text form
    for cell in nb.cells:  # an expected error keeps its name and message; its traceback holds paths
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out['ename']}: {out['evalue']}"]
        if "outputs" in cell:
            cell.outputs = coalesce_streams(cell.outputs)
    nbformat.write(nb, path)
    print(f"executed {path}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        execute(Path(arg))
