"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run every test on one torch thread: on a busy two-core machine, two threads spin-wait
    for each other and a training test gets many times slower. The previous setting comes
    back afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread(_one_torch_thread):
    """The old explicit opt-in, kept for tests that still ask for it: every test already runs
    on one torch thread (see ``_one_torch_thread``)."""
    assert torch.get_num_threads() == 1
    yield


# The tiny shapes VQA setting of the pretrain -> fine-tune tests: 40 training images of 48 px, a
# random (untrained) CNN as the frozen encoder; small enough to pretrain and fine-tune in seconds.
TINY_VQA_SHAPES = dict(image_size=48, n_train=40, n_val=8, n_test=8, seed=4, n_compositional=8)


@pytest.fixture(scope="module")
def tiny_vqa_data(tmp_path_factory):
    """``(root, ShapesVQA)`` for the tiny setting, built once per test module."""
    from velm_course.data.shapes import ShapesConfig, ensure_shapes
    from velm_course.multimodal.vqa_recipe import load_shapes_vqa
    from velm_course.vision.encoders import CNNEncoder, CNNEncoderConfig

    root = ensure_shapes(ShapesConfig(**TINY_VQA_SHAPES), data_root=tmp_path_factory.mktemp("data"), progress=False)
    torch.manual_seed(0)
    encoder = CNNEncoder(CNNEncoderConfig(d_model=16, image_size=48, widths=(4, 8, 8, 16)))
    return root, load_shapes_vqa(root, encoder)


@pytest.fixture
def hf_caches_in_tmp(tmp_path, monkeypatch):
    """Hugging Face's own caches in the test's folder (datasets read HF_HOME at import, hence
    the config attribute as well as the variable)."""
    import datasets

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_home" / "datasets")


def coco_with_restval(folder, **shapes):
    """A shapes set packed in COCO's layout under ``folder``, with every third training image
    moved to Karpathy's restval split; returns the COCO root and the split file's contents."""
    import json
    from pathlib import Path

    from velm_course.data.coco import pack_shapes_as_coco
    from velm_course.data.shapes import ShapesConfig, generate_shapes

    folder = Path(folder)
    generated = generate_shapes(folder / "shapes", ShapesConfig(image_size=48, **shapes), progress=False)
    root = pack_shapes_as_coco(generated, folder / "coco")
    data = json.loads((root / "dataset_coco.json").read_text())
    for img in [img for img in data["images"] if img["split"] == "train"][1::3]:
        img["split"] = "restval"
    (root / "dataset_coco.json").write_text(json.dumps(data))
    return root, data
