"""The environment report notebook 00 prints first."""

import importlib.metadata as md
import platform

import torch

from velm_course.env import environment_report


def test_report_names_versions_device_and_profile(monkeypatch):
    monkeypatch.delenv("VELM_PROFILE", raising=False)
    report = environment_report()
    assert set(report) == {"python", "torch", "torchvision", "transformers", "numpy", "cuda", "gpu",
                           "cpu threads", "profile", "device"}
    assert all(isinstance(v, str) for v in report.values())
    assert report["python"] == platform.python_version()
    for package in ("torch", "torchvision", "numpy"):
        assert report[package] == md.version(package)
    assert report["cuda"] == str(torch.cuda.is_available())
    assert (report["gpu"] == "none") == (not torch.cuda.is_available())
    assert report["cpu threads"] == str(torch.get_num_threads()) == "1"  # see conftest.py
    assert report["profile"] == "ci" and report["device"] == "cpu"  # ci runs on the CPU


def test_report_follows_the_profile_variable(monkeypatch):
    monkeypatch.setenv("VELM_PROFILE", "full")
    report = environment_report()
    assert report["profile"] == "full"
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_missing_package_is_reported_not_raised(monkeypatch):
    real = md.version

    def version(name):
        if name == "transformers":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "version", version)
    assert environment_report()["transformers"] == "not installed"
