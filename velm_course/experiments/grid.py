"""One runner for every comparison: a grid of cells, each trained with the same seeds and budget.

A **cell** is a name and the settings it changes (``{"encoder": "course_vit", "fusion": "prefix"}``);
a **task** trains and scores one model for one cell and one seed: ``task(overrides, seed, run_dir)``
returns a dict of metrics. ``run_grid`` runs every cell with every seed and writes each result to
JSON as soon as it exists:

    out_dir/<cell>/seed<k>/result.json    {"cell", "seed", "overrides", "signature", "metrics", "seconds"}
    out_dir/<cell>/seed<k>/...            whatever the task writes there (checkpoints, metrics.jsonl)

so a second call skips every finished run (reading its result back) and an interrupted grid goes on
where it stopped: a run cut short has no result.json, and its task resumes from its own checkpoints
(tasks train through the engine with ``resume=True``). A result is reused only for the same
overrides and the same ``signature`` (the task's fixed settings: budget, data, model size); anything
else is an error, never a silently stale number. A cell whose settings are invalid (the task raises
``ValueError`` or ``TypeError``) is recorded with its error and reported by ``failed``, not skipped.

>>> import tempfile
>>> task = lambda overrides, seed, run_dir: {"score": overrides["x"] + seed}
>>> with tempfile.TemporaryDirectory() as d:
...     rows = run_grid({"small": {"x": 1}, "large": {"x": 10}}, seeds=(0, 1), task=task, out_dir=d,
...                     progress=False)
>>> summarize(rows, ["score"])["large"]["score"]
{'mean': 10.5, 'std': 0.5, 'half_range': 0.5, 'n': 2}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from statistics import mean, pstdev

Task = Callable[[dict, int, Path], dict]


class GridError(RuntimeError):
    """A stored result that does not belong to the grid being run (other settings)."""


def _plain(value):
    # the form a value takes after a JSON round trip (tuples become lists), for comparisons
    return json.loads(json.dumps(value))


def _write_atomically(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def run_grid(
    cells: Mapping[str, Mapping], seeds: Sequence[int], task: Task, out_dir: str | Path,
    signature: Mapping | None = None, progress: bool = True,
) -> list[dict]:
    """Run ``task`` for every cell and seed (cells in order, seeds inside), skipping finished runs.

    Returns one result per (cell, seed): ``{"cell", "seed", "overrides", "signature", "metrics",
    "seconds"}``, or ``"error"`` instead of ``"metrics"`` for an invalid cell.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    for name in cells:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a cell name must be a plain folder name, got {name!r}")
    signature = _plain(dict(signature or {}))
    results = []
    jobs = [(name, seed) for name in cells for seed in seeds]
    for name, seed in tqdm(jobs, desc="grid", disable=not progress):
        overrides = _plain(dict(cells[name]))
        run_dir = out_dir / name / f"seed{seed}"
        result_file = run_dir / "result.json"
        if result_file.exists():
            saved = json.loads(result_file.read_text())
            if saved["overrides"] != overrides or saved["signature"] != signature:
                raise GridError(f"{result_file} holds a run with other settings "
                                f"({saved['overrides']}, {saved['signature']}); use another out_dir or delete it")
            results.append(saved)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        result = {"cell": name, "seed": seed, "overrides": overrides, "signature": signature}
        start = time.perf_counter()
        try:
            result["metrics"] = _plain(task(dict(cells[name]), seed, run_dir))
        except (ValueError, TypeError) as err:  # invalid settings: reported, not skipped
            result["error"] = f"{type(err).__name__}: {err}"
        result["seconds"] = time.perf_counter() - start
        _write_atomically(result_file, result)
        results.append(result)
    return results


def failed(results: Iterable[dict]) -> dict[str, str]:
    """``{cell: error}`` for every cell that could not run."""
    return {r["cell"]: r["error"] for r in results if "error" in r}


def metric(result: dict, path: str):
    """A metric by dotted path: ``metric(r, "val.CIDEr")`` is ``r["metrics"]["val"]["CIDEr"]``."""
    value = result["metrics"]
    for key in path.split("."):
        value = value[key]
    return value


def summarize(results: Iterable[dict], metrics: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``{cell: {metric: {"mean", "std", "half_range", "n"}}}`` over the seeds of each cell.

    ``std`` is the population standard deviation, ``half_range`` half the distance between the
    best and the worst seed: with two or three seeds the range says more than a standard deviation.
    Cells that failed are left out (see ``failed``).
    """
    by_cell: dict[str, list[dict]] = {}
    for r in results:
        if "metrics" in r:
            by_cell.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, rows in by_cell.items():
        out[cell] = {}
        for m in metrics:
            values = [float(metric(r, m)) for r in rows]
            out[cell][m] = {"mean": round(mean(values), 6), "std": round(pstdev(values), 6),
                            "half_range": round((max(values) - min(values)) / 2, 6), "n": len(values)}
    return out
