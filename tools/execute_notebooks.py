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
    nbformat.write(nb, path)
    print(f"executed {path}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        execute(Path(arg))
