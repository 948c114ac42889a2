"""One runner for every comparison: a grid of cells, each trained with the same seeds and budget.

A **cell** is a name and the settings it changes (``{"encoder": "course_vit", "fusion": "prefix"}``);
a **task** trains and scores one model for one cell and one seed: ``task(overrides, seed, run_dir)``
returns a dict of metrics. ``run_grid`` runs every cell with every seed and writes each result to
JSON as soon as it exists:

    out_dir/<cell>/seed<k>/result.json    {"cell", "seed", "overrides", "signature", "metrics", "seconds"}
    out_dir/<cell>/seed<k>/...            whatever the task writes there (checkpoints, metrics.jsonl)

so a second call skips every finished run (reading its result back) and an interrupted grid goes on
where it stopped: a run cut short has no result.json, and its task resumes from its own checkpoints
where it has them (the captioning task trains through the engine with ``resume=True``; the VQA task
starts a cut run again). A result is reused only for the same overrides and the same ``signature``
(the task's fixed settings: budget, data, model size); anything else is an error, never a silently
stale number. Each result also stores the ``environment`` it was trained in (torch, threads), and
reusing one trained in another environment warns. A cell whose settings are invalid (the task
raises ``ValueError`` or ``TypeError``) is recorded with its error and reported by ``failed``, not
skipped; a stored error is tried again on the next call, so a failure that was not the cell's
fault does not stick.

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
import warnings
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
    here = environment()
    results = []
    jobs = [(name, seed) for name in cells for seed in seeds]
    for name, seed in tqdm(jobs, desc="grid", disable=not progress):
        overrides = _plain(dict(cells[name]))
        run_dir = out_dir / name / f"seed{seed}"
        result_file = run_dir / "result.json"
        saved = json.loads(result_file.read_text()) if result_file.exists() else None
        if saved is not None and "error" not in saved:  # an error is tried again: it costs nothing if the cell is invalid
            if saved["overrides"] != overrides or saved["signature"] != signature:
                raise GridError(f"{result_file} holds a run with other settings "
                                f"({saved['overrides']}, {saved['signature']}); use another out_dir or delete it")
            if saved.get("environment") not in (None, here):
                warnings.warn(f"{result_file} was trained with {saved['environment']}, this process has {here}: "
                              "its numbers may differ from a run made now (notebook 13)", stacklevel=2)
            results.append(saved)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        result = {"cell": name, "seed": seed, "overrides": overrides, "signature": signature,
                  "environment": here}  # a seed fixes a run only with these (notebook 13)
        start = time.perf_counter()
        try:
            result["metrics"] = _plain(task(dict(cells[name]), seed, run_dir))
        except (ValueError, TypeError) as err:  # invalid settings: reported, not skipped
            result["error"] = f"{type(err).__name__}: {err}"
        result["seconds"] = time.perf_counter() - start
        _write_atomically(result_file, result)
        results.append(result)
    return results


def environment() -> dict:
    """What besides the seed decides a run's numbers on a CPU: torch's version and its thread count
    (a matrix product split over more threads sums in another order)."""
    import torch

    return {"torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces a recording, with OMP_NUM_THREADS when it was set."""
    import shlex
    import sys

    threads = os.environ.get("OMP_NUM_THREADS")
    args = argv if argv is not None else sys.argv[1:]
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + f"python -m {module} " + shlex.join(args)


def write_record(path: str | Path, command: str, results: list[dict], metrics: Sequence[str],
                 keep_metrics: Callable[[dict], dict] = lambda m: m) -> dict:
    """Write the small JSON a notebook reads instead of rerunning a grid: the command, the
    ``recording_environment`` (of the process that wrote the file, which may have read stored
    results back; each run keeps its own ``environment``), the grid's fixed settings, every run
    (its metrics through ``keep_metrics``, to leave out bulky rows) and the summary of
    ``metrics`` over seeds."""
    runs = []
    for r in results:
        row = {k: r[k] for k in ("cell", "seed", "overrides", "seconds", "environment", "error") if k in r}
        if "metrics" in r:
            row["metrics"] = keep_metrics(r["metrics"])
        runs.append(row)
    out = {"command": command, "recording_environment": environment(),
           "signature": results[0]["signature"] if results else {},
           "runs": runs, "summary": summarize(results, metrics)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    return out


def failed(results: Iterable[dict]) -> dict[str, str]:
    """``{cell: error}`` for every cell that could not run."""
    return {r["cell"]: r["error"] for r in results if "error" in r}


def metric(result: dict, path: str):
    """A metric by dotted path: ``metric(r, "val.CIDEr")`` is ``r["metrics"]["val"]["CIDEr"]``."""
    value = result["metrics"]
    for key in path.split("."):
        value = value[key]
    return value


def _has(result: dict, path: str) -> bool:
    try:
        metric(result, path)
    except KeyError:
        return False
    return True


def summarize(results: Iterable[dict], metrics: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``{cell: {metric: {"mean", "std", "half_range", "n"}}}`` over the seeds of each cell.

    ``std`` is the population standard deviation, ``half_range`` half the distance between the
    best and the worst seed: with two or three seeds the range says more than a standard deviation.
    Cells that failed are left out (see ``failed``), and so is a metric a cell has in none of its
    seeds (a metric that only some seeds have is an error).
    """
    by_cell: dict[str, list[dict]] = {}
    for r in results:
        if "metrics" in r:
            by_cell.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, rows in by_cell.items():
        out[cell] = {}
        for m in metrics:
            have = [r for r in rows if _has(r, m)]
            if not have:  # a metric this kind of cell does not measure (retrieval without pretraining)
                continue
            if len(have) < len(rows):
                raise KeyError(f"{m!r} is missing from some seeds of cell {cell!r}")
            values = [float(metric(r, m)) for r in rows]
            out[cell][m] = {"mean": round(mean(values), 6), "std": round(pstdev(values), 6),
                            "half_range": round((max(values) - min(values)) / 2, 6), "n": len(values)}
    return out


def paired_gap(results: Iterable[dict], metric_path: str, a: str, b: str, higher_is_better: bool = True) -> dict:
    """How cell ``a`` compares with cell ``b`` on one metric, seed by seed.

    Within a grid a seed fixes the initial weights' draw and the batches, so the difference
    between two cells at the same seed is the cleaner comparison. Returns the per-seed
    differences a - b, their mean and ``verdict``: the name of the cell that is better on every
    seed (higher, or lower for a loss with ``higher_is_better=False``), ``"within noise"`` when
    the seeds disagree (or a tie). With 3 seeds, one cell
    ahead on all of them by chance alone has probability 1/4 when nothing separates the two
    (each ordering of a seed's pair equally likely): a hint, not a test.

    >>> rows = [{"cell": c, "seed": s, "metrics": {"acc": v}}
    ...         for c, vals in {"x": (0.5, 0.6, 0.7), "y": (0.4, 0.5, 0.65)}.items() for s, v in enumerate(vals)]
    >>> paired_gap(rows, "acc", "x", "y")["verdict"]
    'x'
    >>> paired_gap(rows, "acc", "y", "x")["differences"]
    [-0.1, -0.1, -0.05]
    >>> paired_gap(rows, "acc", "x", "y", higher_is_better=False)["verdict"]  # as if "acc" were a loss
    'y'
    """
    by_seed: dict[str, dict[int, float]] = {a: {}, b: {}}
    for r in results:
        if r["cell"] in by_seed and "metrics" in r:
            by_seed[r["cell"]][r["seed"]] = float(metric(r, metric_path))
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if not seeds:
        raise ValueError(f"cells {a!r} and {b!r} share no seed with {metric_path!r}")
    diffs = [round(by_seed[a][s] - by_seed[b][s], 6) for s in seeds]
    sign = 1 if higher_is_better else -1
    verdict = a if all(sign * d > 0 for d in diffs) else b if all(sign * d < 0 for d in diffs) else "within noise"
    return {"seeds": seeds, "differences": diffs, "mean": round(mean(diffs), 6), "verdict": verdict}
