from pathlib import Path

import pytest

from velm_course.engine.config import RunConfig
from velm_course.env import environment_report
from velm_course.profiles import PROFILE_NAMES, data_dir, get_profile, with_overrides


def test_default_is_ci_and_env_var_selects(monkeypatch):
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    assert get_profile().name == "ci"
    monkeypatch.setenv("VELM_PROFILE", "full")
    full = get_profile()
    assert full.name == "full" and full.image_size > get_profile("ci").image_size
    assert PROFILE_NAMES == ("ci", "full")


def test_full_falls_back_to_cpu_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile("full").device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile("full").device == "cuda"
    assert get_profile("ci").device == "cpu"  # the ci preset stays on the CPU


def test_overrides_reach_the_right_section_and_unknown_profile():
    profile = get_profile("ci", steps=7, n_train=50, encoder="course_vit")
    assert (profile.run.train.steps, profile.run.data.n_train, profile.run.model.encoder) == (7, 50, "course_vit")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")
    with pytest.raises(TypeError, match="no run setting is called 'no_such_field'"):
        get_profile("ci", no_such_field=1)
    with pytest.raises(ValueError, match="train.steps must be >= 1"):
        with_overrides(RunConfig(), steps=0)


def test_presets_are_valid_run_configs_and_hold_notebook_sizes():
    for name in PROFILE_NAMES:
        p = get_profile(name)
        assert RunConfig.from_dict(p.run.to_dict()) == p.run and p.run.profile == name
    ci, full = get_profile("ci").notebooks, get_profile("full").notebooks
    assert ci.gpt_steps < full.gpt_steps and ci.bpe_train_chars < full.bpe_train_chars
    # the full profile scales the language models, not only their steps
    assert ci.gpt_layers < full.gpt_layers and ci.gpt_width < full.gpt_width and ci.gpt_block < full.gpt_block
    assert ci.lstm_hidden < full.lstm_hidden and ci.rnn_hidden < full.rnn_hidden


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("VELM_DATA_DIR")
    assert data_dir() == Path(__file__).resolve().parent.parent / "data"


def test_environment_report(monkeypatch):
    monkeypatch.setenv("VELM_PROFILE", "ci")
    report = environment_report()
    assert report["profile"] == "ci" and report["device"] == "cpu"
    assert report["torch"].split(".")[0].isdigit()
