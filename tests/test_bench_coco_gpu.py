"""benchmarks/bench_coco_gpu.py, the prepared GPU benchmark, runs end to end in --smoke mode on a
CPU, and the rows it records hold what they say: every column, ratios computed from the measured
times, waiting shares in [0, 1]. Its speed is not tested (ratios are measured, never asserted)."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_coco_gpu as bench  # noqa: E402  (benchmarks/bench_coco_gpu.py)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def check_measurement(m: dict, sizes, steps: int) -> None:
    """A training measurement: whole windows after the warm-up, images = steps × batch."""
    assert m["steps"] == sizes.measured_steps(steps)
    assert m["images"] == m["steps"] * sizes.batch_size
    assert m["seconds"] > 0 and m["warmup_seconds"] > 0
    assert 0 <= m["wait_seconds"] <= m["seconds"]
    assert m["peak_mib"] is None  # a CPU has no CUDA memory counter


def check_rates(row: dict) -> None:
    m = row["measurement"]
    assert close(row["images_per_s"], m["images"] / m["seconds"])
    assert close(row["steps_per_s"], m["steps"] / m["seconds"])
    assert close(row["wait"], m["wait_seconds"] / m["seconds"]) and 0 <= row["wait"] <= 1


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    out = bench.main(["--device", "cpu", "--smoke", "--record", "--results-dir", str(results)])
    assert torch.get_num_threads() == threads  # the smoke run's one thread is given back
    return out, results


def test_smoke_records_every_table_with_every_column_into_the_folder_given(smoke):
    out, results = smoke
    assert out["recorded"] == results / "coco_gpu.json"
    recorded = json.loads((results / "coco_gpu.json").read_text())
    assert recorded["name"] == "coco_gpu" and set(recorded["tables"]) == set(bench.COLUMNS)
    for table, columns in bench.COLUMNS.items():
        entry = recorded["tables"][table]
        assert entry["columns"] == columns and entry["rows"], table
        assert len(entry["rows"]) == len(out["tables"][table]["rows"])
        for row in entry["rows"]:
            assert set(columns) | {"date", "machine", "device_kind", "command"} <= set(row), (table, row)
            assert row["device_kind"] == "cpu"
            assert row["command"].startswith("python benchmarks/bench_coco_gpu.py --device cpu --smoke")
            assert not str(row.get("note", "")).startswith("failed"), row


def test_precision_rows_ratios_from_the_measured_times_and_stated_skips(smoke):
    out, _ = smoke
    sizes = out["sizes"]
    raw = {r["key"]: r for r in out["raw"]["precision"]}
    assert list(raw) == ["fp32", "bf16", "bf16+compile", "gpt2 fp32", "gpt2 bf16"]
    for key in ("fp32", "gpt2 fp32"):
        check_measurement(raw[key]["measurement"], sizes, sizes.steps)
        check_rates(raw[key])
        assert raw[key]["vs_fp32"] == 1.0
    for key in ("bf16", "bf16+compile", "gpt2 bf16"):  # bf16 is CUDA-only in the engine; compile GPU-only here
        assert raw[key]["measurement"] is None and raw[key]["vs_fp32"] is None
        assert raw[key]["note"].startswith("skipped: ") and len(raw[key]["note"]) > 30
    shown = {r["comparison"]: r for r in out["tables"]["precision"]["rows"]}
    for r in raw.values():
        row = shown[r["label"]]
        if r["measurement"] is None:
            assert row["images/s"] == row["vs fp32"] == row["data wait"] == "–"
        else:
            assert row["images/s"] == bench._rate(r["images_per_s"]) and row["vs fp32"] == "1.00×"
            assert row["data wait"] == f"{r['wait']:.1%}"


def test_data_path_row_waiting_share_and_ratio_to_the_device_resident_run(smoke):
    out, _ = smoke
    sizes = out["sizes"]
    (row,) = out["raw"]["data_path"]
    check_measurement(row["measurement"], sizes, sizes.steps)
    check_rates(row)
    fp32 = next(r for r in out["raw"]["precision"] if r["key"] == "fp32")  # the CPU's reference: no bf16 here
    assert close(row["vs_device_resident"], row["images_per_s"] / fp32["images_per_s"])
    alone = row["measurement"]["loader_alone"]
    assert alone["images"] > 0 and close(row["loader_alone_images_per_s"], alone["images"] / alone["seconds"])
    (shown,) = out["tables"]["data_path"]["rows"]
    assert shown["data wait"] == f"{row['wait']:.1%}" and shown["vs device-resident batches"].endswith("×")
    assert "CocoCaptions → CaptionPairs → batch_loader, 1 worker" in shown["data path"]


def test_feature_cache_rows_builds_and_training_against_pixels(smoke):
    out, _ = smoke
    sizes = out["sizes"]
    rows = out["raw"]["feature_cache"]
    assert [r["key"] for r in rows] == ["jpegs", "in_memory", "pixels", "mapped", "loaded"]
    builds, trainings = rows[:2], rows[2:]
    assert [b["measurement"]["images"] for b in builds] == [sizes.jpegs, sizes.cache_images]
    for b in builds:
        assert b["images_per_s"] > 0 and close(b["images_per_s"], b["measurement"]["images"] / b["measurement"]["seconds"])
        assert b["measurement"]["grid_shape"][-1] == sizes.d_model  # the cache gives the decoder's width
    pixels = trainings[0]
    for t in trainings:
        check_measurement(t["measurement"], sizes, sizes.steps)
        check_rates(t)
        assert close(t["vs_pixels"], t["steps_per_s"] / pixels["steps_per_s"])
    assert pixels["vs_pixels"] == 1.0


def test_targets_are_observations_that_follow_the_measurements(smoke):
    out, _ = smoke
    targets = out["raw"]["targets"]
    assert len(targets) == 3
    assert all(t["observation"].startswith("not measured (skipped: ") for t in targets[:2])
    wait = out["raw"]["data_path"][0]["wait"]
    assert targets[2]["observation"] == ("met" if wait < bench.TARGET_WAIT else "not met")
    assert targets[2]["measured"] == f"{wait:.1%}"


def test_smoke_does_not_record_unless_asked_and_sizes_are_coco_sized():
    assert bench.parse_args(["--smoke"]).record is False
    assert bench.parse_args(["--smoke", "--record"]).record is True
    assert bench.parse_args([]).record is True
    assert bench.parse_args([]).results_dir == bench.RESULTS_DIR
    full = bench.FULL
    assert (full.image_size, full.vocab_size, full.batch_size) == (224, 10_004, 128)
    words = bench.word_list(full.vocab_words)
    assert len(set(words)) == len(words) == 10_000
    captions = bench.synthetic_captions(200, full, words)
    assert {len(c.split()) for c in captions} <= set(range(full.min_words, full.max_words + 1))
    idx, targets = bench.synthetic_tokens(8, full, seed=0)
    assert idx.shape == targets.shape == (8, full.max_words + 1)
    assert int(idx.max()) < full.vocab_size


def test_a_failing_row_is_noted_on_a_gpu_run_and_raises_in_a_smoke_run():
    import torch

    def boom():
        raise RuntimeError("CUDA out of memory\nmore")

    def skipped():
        raise bench.Skipped("skipped: not here")

    cpu = torch.device("cpu")
    assert bench.run_row("row", boom, cpu, strict=False) == (None, "failed: RuntimeError: CUDA out of memory")
    assert bench.run_row("row", skipped, cpu, strict=False) == (None, "skipped: not here")
    assert bench.run_row("row", skipped, cpu, strict=True) == (None, "skipped: not here")
    assert bench.run_row("row", lambda: {"images": 1}, cpu, strict=True) == ({"images": 1}, "")
    with pytest.raises(RuntimeError, match="out of memory"):
        bench.run_row("row", boom, cpu, strict=True)


def test_recipe_rows_give_the_presets_hours_from_the_measured_rate(smoke):
    from velm_course.profiles import get_profile

    out, _ = smoke
    sizes = out["sizes"]
    preset = get_profile("full", dataset="coco").run.train
    raw = {r["key"]: r for r in out["raw"]["recipe"]}
    assert list(raw) == ["fp32", "bf16"]
    fp32 = raw["fp32"]
    check_measurement(fp32["measurement"], sizes, sizes.steps)
    check_rates(fp32)
    assert fp32["vs_fp32"] == 1.0 and close(fp32["hours"], preset.steps / fp32["steps_per_s"] / 3600)
    assert raw["bf16"]["measurement"] is None and raw["bf16"]["note"].startswith("skipped: ")
    shown = out["tables"]["recipe"]["rows"]
    assert shown[0]["hours for the preset's steps"].startswith(f"{fp32['hours']:.2f} h for {preset.steps:,} steps")
    assert "GPT-2" in shown[0]["what"] and f"V={sizes.gpt2_vocab:,}" in shown[0]["what"]
