"""The results that README.md and benchmarks/RESULTS.md show are the measured files' (tools/write_results.py),
and benchmarks/_record.py keeps rows measured on another device."""

import csv
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import write_results  # noqa: E402  (tools/write_results.py)
from _record import save  # noqa: E402  (benchmarks/_record.py)


def test_readme_and_results_md_are_what_the_measured_files_say():
    assert (ROOT / "README.md").read_text() == write_results.readme_with_section((ROOT / "README.md").read_text()), \
        "README.md's results section is out of date: run python tools/write_results.py"
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == write_results.results_md(), \
        "benchmarks/RESULTS.md is out of date: run python tools/write_results.py"
    assert write_results.main(["--check"]) == 0


def test_a_changed_measurement_makes_the_readme_stale(monkeypatch, tmp_path):
    for f in (ROOT / "benchmarks" / "results").glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    job = json.loads((tmp_path / "main_job.json").read_text())
    job["tables"]["rows"]["rows"][0]["CIDEr"] = "9.999"
    (tmp_path / "main_job.json").write_text(json.dumps(job))
    monkeypatch.setattr(write_results, "RESULTS", tmp_path)
    section = write_results.readme_section()
    assert "| 9.999 |" in section
    assert section not in (ROOT / "README.md").read_text()


def test_the_scoreboard_rows_are_each_models_last_row():
    with (ROOT / "benchmarks" / "lm_curves.csv").open() as f:
        rows = list(csv.DictReader(f))
    last = {}
    for r in rows:
        if (r["model"], r["device"]) not in last or int(r["step"]) > int(last[r["model"], r["device"]]["step"]):
            last[r["model"], r["device"]] = r
    shown = write_results.lm_rows()
    assert len(shown) == len(last)
    assert {(s["model"], s["bits per character"]) for s in shown} == \
        {(m, f"{float(r['val_bpc']):.4f}") for (m, _), r in last.items()}
    assert [float(s["bits per character"]) for s in shown] == sorted(float(s["bits per character"]) for s in shown)


def test_save_replaces_this_devices_rows_and_keeps_the_others(tmp_path):
    cols = ["what", "speed-up"]
    save("b", "t", cols, [{"what": "x", "speed-up": "1.0×"}], "cpu", results_dir=tmp_path)
    data = json.loads((tmp_path / "b.json").read_text())
    gpu_row = {**data["tables"]["t"]["rows"][0], "device_kind": "NVIDIA H200", "speed-up": "3.0×"}
    data["tables"]["t"]["rows"].append(gpu_row)
    (tmp_path / "b.json").write_text(json.dumps(data))
    save("b", "t", cols, [{"what": "x", "speed-up": "1.2×"}, {"what": "y", "speed-up": "0.9×"}], "cpu",
         results_dir=tmp_path)
    rows = json.loads((tmp_path / "b.json").read_text())["tables"]["t"]["rows"]
    assert [(r["device_kind"], r["speed-up"]) for r in rows] == [("NVIDIA H200", "3.0×"), ("cpu", "1.2×"), ("cpu", "0.9×")]
    assert all({"date", "machine", "command"} <= set(r) for r in rows)
    with pytest.raises(ValueError, match="lacks the columns"):
        save("b", "t", cols, [{"what": "z"}], "cpu", results_dir=tmp_path)
