"""Time every notebook under strict nbval in the ci profile, one pytest process each, and record it.

    python tools/notebook_times.py [notebooks/NN_*.ipynb ...]   # default: every notebook

Each notebook runs as `make test` runs it (``pytest --nbval --nbval-current-env`` with the
committed sanitize file, ``VELM_PROFILE=ci``), so a time here is what a learner's CI waits for.
The rows go to benchmarks/results/notebook_times.json (``benchmarks/_record.py``); the README's
results section shows them. A notebook that fails is recorded as failed and the exit status is 1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(notebook: Path) -> tuple[float, str, bool]:
    """(seconds, pytest's summary line, passed) for one notebook."""
    cmd = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", str(notebook.relative_to(ROOT)),
           "--nbval-sanitize-with", "notebooks/nbval_sanitize.cfg", "-q", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "VELM_PROFILE": "ci"})
    seconds = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    summary = lines[-1].strip("= ").split(" in ")[0] if lines else proc.stdout[-300:]  # "13 passed, 1 skipped"
    return seconds, summary, proc.returncode == 0


def main(argv: list[str]) -> int:
    from _record import save  # benchmarks/_record.py

    notebooks = [Path(a).resolve() for a in argv] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows, ok = [], True
    for nb in notebooks:
        seconds, summary, passed = run(nb)
        ok &= passed
        rows.append({"notebook": nb.name, "seconds": f"{seconds:.0f}",
                     "cells": summary if passed else f"FAILED: {summary}"})
        print(f"{nb.name:48} {seconds:6.0f} s  {summary}", flush=True)
    if not argv:  # a partial run would replace the whole table with a few rows
        save("notebook_times", "nbval", ["notebook", "seconds", "cells"], rows, "cpu")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
