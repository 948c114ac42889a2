"""The experiment grid runner: every cell trained, results cached and reused only for the same
settings, an interrupted grid resumed, invalid cells reported; the spread by hand; and the
captioning task end to end on a tiny setting, interrupted and resumed."""

import json

import pytest
import torch

from velm_course.experiments.captioning import ENCODER_GRID, caption_task, record
from velm_course.experiments.grid import GridError, failed, metric, run_grid, summarize
from velm_course.profiles import get_profile, with_overrides


class CountingTask:
    """A task that records every call, fails on request, and writes a file where it trains."""

    def __init__(self, interrupt_at=None):
        self.calls, self.interrupt_at = [], interrupt_at

    def __call__(self, overrides, seed, run_dir):
        self.calls.append((dict(overrides), seed))
        if overrides.get("width", 1) <= 0:
            raise ValueError("width must be positive")
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt  # Ctrl-C in the middle of the grid
        (run_dir / "model.txt").write_text(f"{overrides} {seed}")
        return {"val": {"score": overrides["width"] * 10 + seed}, "loss": 1.0 / (seed + 1)}


CELLS = {"narrow": {"width": 1}, "wide": {"width": 2}}


def test_every_cell_and_seed_is_trained_once_and_cached(tmp_path):
    task = CountingTask()
    rows = run_grid(CELLS, (0, 1, 2), task, tmp_path, signature={"steps": 5}, progress=False)
    assert task.calls == [({"width": w}, s) for w in (1, 2) for s in (0, 1, 2)]
    assert len({(r["cell"], r["seed"]) for r in rows}) == 6
    assert len({metric(r, "val.score") for r in rows}) == 6  # distinct metrics for distinct runs
    assert len({(tmp_path / r["cell"] / f"seed{r['seed']}" / "model.txt").read_text() for r in rows}) == 6
    again = run_grid(CELLS, (0, 1, 2), task, tmp_path, signature={"steps": 5}, progress=False)
    assert len(task.calls) == 6 and again == rows  # read back, not trained again
    # one more seed trains only the new runs
    run_grid(CELLS, (0, 1, 2, 3), task, tmp_path, signature={"steps": 5}, progress=False)
    assert task.calls[6:] == [({"width": 1}, 3), ({"width": 2}, 3)]


def test_an_interrupted_grid_goes_on_where_it_stopped(tmp_path):
    task = CountingTask(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_grid(CELLS, (0, 1), task, tmp_path, progress=False)
    done = sorted(p.parent.name + "/" + p.parent.parent.name for p in tmp_path.glob("*/*/result.json"))
    assert done == ["seed0/narrow", "seed1/narrow"]  # the third run left no result
    task.interrupt_at = None
    rows = run_grid(CELLS, (0, 1), task, tmp_path, progress=False)
    assert [c for c in task.calls[3:]] == [({"width": 2}, 0), ({"width": 2}, 1)]
    assert [r["cell"] for r in rows] == ["narrow", "narrow", "wide", "wide"]


def test_a_stored_result_with_other_settings_is_an_error(tmp_path):
    run_grid(CELLS, (0,), CountingTask(), tmp_path, signature={"steps": 5}, progress=False)
    with pytest.raises(GridError, match="other settings"):
        run_grid(CELLS, (0,), CountingTask(), tmp_path, signature={"steps": 50}, progress=False)
    with pytest.raises(GridError, match="other settings"):
        run_grid({"narrow": {"width": 3}}, (0,), CountingTask(), tmp_path, signature={"steps": 5}, progress=False)
    with pytest.raises(ValueError, match="folder name"):
        run_grid({"a/b": {}}, (0,), CountingTask(), tmp_path, progress=False)


def test_an_invalid_cell_is_reported_not_skipped(tmp_path):
    rows = run_grid({**CELLS, "broken": {"width": 0}}, (0, 1), CountingTask(), tmp_path, progress=False)
    assert failed(rows) == {"broken": "ValueError: width must be positive"}
    assert sum("error" in r for r in rows) == 2 and len(rows) == 6
    assert set(summarize(rows, ["val.score"])) == {"narrow", "wide"}


def test_summarize_by_hand():
    rows = [{"cell": "a", "seed": s, "metrics": {"x": v}} for s, v in enumerate((1.0, 2.0, 6.0))]
    # mean 3, population variance ((4 + 1 + 9) / 3), half range (6 - 1) / 2
    assert summarize(rows, ["x"]) == {"a": {"x": {"mean": 3.0, "std": round((14 / 3) ** 0.5, 6),
                                                  "half_range": 2.5, "n": 3}}}


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def tiny_base():
    base = get_profile("ci").run
    return with_overrides(base, n_train=24, n_val=6, n_test=6, n_compositional=0, steps=6, batch_size=8,
                          d_model=32, n_layer=1, n_head=2, warmup=2, val_every=3, checkpoint_every=2, log_every=1,
                          device="cpu")


def test_caption_task_trains_scores_and_resumes(data_env, monkeypatch):
    cells = {"small_cnn, grid": ENCODER_GRID["small_cnn, grid"], "course_vit, pooled": ENCODER_GRID["course_vit, pooled"],
             "no such encoder": {"encoder": "lenet"}}
    out = data_env / "grid"
    rows = run_grid(cells, (0,), caption_task(tiny_base()), out, progress=False)
    assert set(failed(rows)) == {"no such encoder"}
    ok = [r for r in rows if "metrics" in r]
    for r in ok:
        m = r["metrics"]
        assert {"CIDEr", "content_accuracy"} <= set(m["val"]) and {"CIDEr", "content_accuracy"} <= set(m["test"])
        assert [h["step"] for h in m["curve"] if "val_loss" in h] == [3, 6]
        assert m["selected_step"] in (3, 6) and m["trainable_params"] > 0
        saved = json.loads((out / r["cell"] / "seed0" / "config.json").read_text())
        assert saved["train"]["seed"] == 0
    # the two cells built different models: different parameter counts and different curves
    assert ok[0]["metrics"]["trainable_params"] != ok[1]["metrics"]["trainable_params"]
    assert ok[0]["metrics"]["curve"] != ok[1]["metrics"]["curve"]

    # Ctrl-C in the middle of a run: a second call resumes it from its last checkpoint (step 4) and
    # ends with the weights of the uninterrupted run above; the finished cell is not trained again
    import velm_course.engine.trainer as trainer

    real_step, calls = trainer._train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    other = data_env / "interrupted"
    cell = {"small_cnn, grid": cells["small_cnn, grid"]}
    monkeypatch.setattr(trainer, "_train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        run_grid(cell, (0,), caption_task(tiny_base()), other, progress=False)
    assert not (other / "small_cnn, grid" / "seed0" / "result.json").exists()
    monkeypatch.setattr(trainer, "_train_step", real_step)
    resumed = run_grid(cell, (0,), caption_task(tiny_base()), other, progress=False)
    final = torch.load(other / "small_cnn, grid" / "seed0" / "checkpoint.pt", weights_only=False)
    reference = torch.load(out / "small_cnn, grid" / "seed0" / "checkpoint.pt", weights_only=False)
    assert final["step"] == 6
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=0, atol=1e-6)
    assert resumed[0]["metrics"]["curve"] == ok[0]["metrics"]["curve"]


def test_record_keeps_the_command_and_the_summary(tmp_path):
    rows = run_grid(CELLS, (0, 1), CountingTask(), tmp_path, progress=False)
    for r in rows:
        r["metrics"] = {"val": {"CIDEr": r["seed"], "content_accuracy": 0.5}, "val_loss": 1.0,
                        "trainable_params": 10, "train_seconds": 2.0, "curve": [{"step": 3, "val_loss": 1.0}]}
    out = record(rows, tmp_path / "rec.json", "python -m x")
    saved = json.loads((tmp_path / "rec.json").read_text())
    assert saved == json.loads(json.dumps(out)) and saved["command"] == "python -m x"
    assert saved["summary"]["narrow"]["val.CIDEr"]["mean"] == 0.5
    assert saved["runs"][0]["metrics"]["val_curve"] == [{"step": 3, "val_loss": 1.0}]


def test_each_run_records_the_threads_that_decide_its_numbers(tmp_path, monkeypatch):
    from velm_course.experiments.grid import command_line

    rows = run_grid({"a": {"x": 1}}, (0,), lambda o, s, d: {"score": 1.0}, tmp_path, progress=False)
    assert rows[0]["environment"]["threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "a" / "seed0" / "result.json").read_text())["environment"] == rows[0]["environment"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert command_line("m", ["--grid", "fusion"]) == "OMP_NUM_THREADS=1 python -m m --grid fusion"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert command_line("m", ["--x", "a b"]) == "python -m m --x 'a b'"


def test_the_same_grid_runs_on_coco_shaped_data(data_env):
    """The full profile's grid on COCO, here on a tiny shapes set packed in COCO 2014's layout."""
    from velm_course.data.coco import coco_split, pack_shapes_as_coco
    from velm_course.data.shapes import ShapesConfig, ensure_shapes, shapes_split
    from velm_course.experiments.captioning import (
        FUSION_GRID,
        encoder_grid_config,
        run_encoder_grid,
    )

    shapes = ensure_shapes(ShapesConfig(image_size=48, n_train=24, n_val=6, n_test=6, seed=3),
                           data_root=data_env / "data", progress=False)
    root = pack_shapes_as_coco(shapes, data_env / "coco")
    for split in ("train", "val", "test"):
        packed, original = coco_split(root, split), shapes_split(shapes, split)
        assert packed.captions_by_id() == original.captions_by_id()
        assert torch.equal(packed.get_uint8(0)[0], original.get_uint8(0)[0])
    full = encoder_grid_config(6, "cpu", profile="full", dataset="coco", root=str(root))
    assert full.model.d_model == get_profile("full").run.model.d_model and full.data.n_compositional == 0
    rows = run_encoder_grid(data_env / "grid", seeds=(0,), steps=4, cells={"prefix": FUSION_GRID["prefix"]},
                            progress=False, dataset="coco", root=str(root))
    m = rows[0]["metrics"]
    assert rows[0]["signature"]["config"]["data"]["dataset"] == "coco"
    assert "CIDEr" in m["test"] and "compositional" not in m and "content_accuracy" not in m["val"]


def test_a_stored_error_is_tried_again_and_another_environment_warns(tmp_path, monkeypatch):
    import velm_course.experiments.grid as grid

    flaky = {"fail": True}

    def task(overrides, seed, run_dir):
        if flaky["fail"]:
            raise ValueError("a disk hiccup, not the cell's fault")
        return {"score": 1.0}

    assert failed(run_grid({"a": {}}, (0,), task, tmp_path, progress=False)) == {"a": "ValueError: a disk hiccup, not the cell's fault"}
    flaky["fail"] = False
    assert run_grid({"a": {}}, (0,), task, tmp_path, progress=False)[0]["metrics"] == {"score": 1.0}
    # a stored run trained with another thread count is reused, with a warning
    monkeypatch.setattr(grid, "environment", lambda: {"torch": "x", "threads": 99, "cpu_count": 1})
    with pytest.warns(UserWarning, match="threads"):
        assert run_grid({"a": {}}, (0,), task, tmp_path, progress=False)[0]["metrics"] == {"score": 1.0}
