from pathlib import Path

import pytest

from velm_course.env import environment_report
from velm_course.profiles import data_dir, get_profile


def test_default_is_ci_and_env_var_selects(monkeypatch):
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    assert get_profile().name == "ci"
    monkeypatch.setenv("VELM_PROFILE", "full")
    full = get_profile()
    assert full.name == "full" and full.image_size > get_profile("ci").image_size


def test_full_falls_back_to_cpu_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile("full").device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile("full").device == "cuda"


def test_overrides_and_unknown_profile():
    assert get_profile("ci", steps=7).steps == 7
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")
    with pytest.raises(TypeError):
        get_profile("ci", no_such_field=1)


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
