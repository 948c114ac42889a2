"""Where the benchmark scripts keep what they measured: one JSON file per benchmark.

    benchmarks/results/<name>.json   {"name", "tables": {table id: {"columns": [...], "rows": [...]}}}

Every row carries the date, the machine and the device kind ("cpu" or the GPU's name) it was
measured on. ``save`` replaces the rows of a table measured on the same device kind and keeps the
others, so ``make bench`` on a CPU machine refreshes the CPU rows and keeps rows recorded on a GPU
(which only a GPU session can refresh). ``tools/write_results.py`` turns the files into
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_kind(device: str | torch.device) -> str:
    """"cpu", or the GPU's name ("NVIDIA H200"): what decides which recorded rows a run replaces."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def machine(device: str | torch.device) -> str:
    """A short description of where a row was measured."""
    kind = device_kind(device)
    threads = f", {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}" if kind == "cpu" else ""
    where = f"{os.cpu_count()}-core {platform.machine()}" if kind == "cpu" else kind
    return f"{where}{threads}, torch {torch.__version__.split('+')[0]}"


def save(name: str, table: str, columns: list[str], rows: list[dict], device: str | torch.device,
         results_dir: Path = RESULTS_DIR) -> Path:
    """Record ``rows`` (dicts over ``columns``) as the table's rows for this device kind."""
    kind = device_kind(device)
    stamp = {"date": datetime.date.today().isoformat(), "machine": machine(device), "device_kind": kind,
             "command": " ".join(["python", *sys.argv]) if sys.argv and sys.argv[0] else "python"}
    for row in rows:
        missing = set(columns) - set(row)
        if missing:
            raise ValueError(f"row {row} lacks the columns {sorted(missing)}")
    path = Path(results_dir) / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {"name": name, "tables": {}}
    old = data["tables"].get(table, {"rows": []})
    kept = [r for r in old["rows"] if r["device_kind"] != kind]
    data["tables"][table] = {"columns": columns, "rows": kept + [{**stamp, **row} for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def markdown(columns: list[str], rows: list[dict]) -> str:
    """A Markdown table of ``rows`` over ``columns``.

    >>> print(markdown(["a", "b"], [{"a": 1, "b": "x"}]))
    | a | b |
    |---|---|
    | 1 | x |
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, table: str, columns: list[str], rows: list[dict], device: str | torch.device) -> None:
    """Print the rows as Markdown and record them (``save``)."""
    print(markdown(columns, rows))
    path = save(name, table, columns, rows, device)
    print(f"(recorded in {path.relative_to(path.parent.parent.parent)})")


def write_csv(out: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    """Write a recorded run's rows to ``out`` atomically: a reader sees the old file or the new one."""
    import csv

    tmp = Path(out).with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out)
