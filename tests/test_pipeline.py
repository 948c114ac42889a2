"""The main job end to end on a tiny setting: `velm-course train`, its run folder, resuming."""

import json

import pytest
import torch

import velm_course.cli as cli
from velm_course.pipeline import configs_from_profile
from velm_course.profiles import get_profile

TINY = ["--steps", "6", "--blind-steps", "3", "--n-train", "24", "--n-val", "4", "--n-test", "8", "--batch-size", "8"]
METRIC_KEYS = {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "content_accuracy"}


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    return tmp_path


def the_run(runs):
    (run,) = list(runs.iterdir())
    return run


def test_train_writes_a_complete_run_folder(data_env, capsys):
    runs = data_env / "runs"
    assert cli.main(["train", "--runs-dir", str(runs), "--no-progress", *TINY]) == 0
    run = the_run(runs)
    assert f"run folder: {run}" in capsys.readouterr().out
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "checkpoint.pt", "baseline_checkpoint.pt", "metrics.json", "captions_test.json",
            "loss_curve.png", "samples.png"} <= names
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and metrics["split"] == "test"
    for row in (metrics, metrics["baseline"], metrics["oracle"]):
        assert METRIC_KEYS <= set(row)
        assert all(0 <= row[k] <= 1 for k in METRIC_KEYS - {"CIDEr"}) and row["CIDEr"] >= 0
    assert metrics["oracle"]["content_accuracy"] == 1.0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 6 and config["vocab"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 6
    captions = json.loads((run / "captions_test.json").read_text())
    assert len(captions) == 8 and all(isinstance(c["caption"], str) for c in captions)
    assert (run / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_train_resumes_from_its_checkpoint(data_env, interrupt_training):
    runs = data_env / "runs"
    interrupt_training(4)
    assert cli.main(["train", "--runs-dir", str(runs), "--no-progress", *TINY]) == 130
    run = the_run(runs)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 4
    assert not (run / "metrics.json").exists()

    interrupt_training(None)
    assert cli.main(["train", "--resume", str(run), "--no-progress"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert (run / "metrics.json").exists()


def test_bad_input_is_a_clear_error(data_env, monkeypatch, capsys):
    assert cli.main(["train", "--resume", str(data_env / "nowhere"), "--no-progress"]) == 2
    assert "no config.json" in capsys.readouterr().err
    monkeypatch.setenv("VELM_PROFILE", "huge")
    assert cli.main(["train", "--no-progress"]) == 2
    assert "unknown profile 'huge'" in capsys.readouterr().err


def test_fetch_command_calls_the_downloader(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("velm_course.data.coco.fetch_coco", lambda dest: calls.append(dest))
    assert cli.main(["fetch", "coco", "--dest", str(tmp_path)]) == 0
    assert calls == [str(tmp_path)]


def test_configs_follow_the_profile():
    profile = get_profile("ci", steps=50, blind_steps=10)
    config = configs_from_profile(profile)
    assert config["train"]["steps"] == 50 and config["baseline_train"]["steps"] == 10
    assert config["data"]["n_train"] == profile.n_train and config["model"]["d_model"] == profile.d_model
