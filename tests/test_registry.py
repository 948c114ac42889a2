"""The dataset registry: the shapes data with its scenes, scene scores, oracle rows and the
compositional split."""

import pytest

from velm_course.data.coco import DatasetNotFoundError
from velm_course.data.registry import CaptionData, open_caption_data
from velm_course.data.shapes import ShapesConfig, ensure_shapes, heldout_pairs
from velm_course.engine.config import DataConfig

SCORE_KEYS = {"content_accuracy", "scene_f1", "exact_scene", "count_accuracy",
              "relation_accuracy", "relation_n", "hallucination_rate"}
CFG = ShapesConfig(image_size=48, n_train=30, n_val=6, n_test=6, n_compositional=5, seed=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_shapes(CFG, data_root=tmp_path_factory.mktemp("data"), progress=False)


def data_config(root, n_compositional):
    return DataConfig(dataset="shapes", root=str(root), image_size=48, n_train=30, n_val=6,
                      n_test=6, n_compositional=n_compositional)


def test_shapes_with_a_compositional_split(root):
    data = open_caption_data(data_config(root, 5))
    assert data.split("compositional") is data.compositional and len(data.compositional) == 5
    assert set(data.scenes) == {"train", "val", "test", "compositional"}
    assert set(data.content_scores) == set(data.reference_rows) == {"val", "test", "compositional"}
    heldout = set(heldout_pairs(CFG))
    for objects in data.scenes["compositional"].values():
        assert {(o["color"], o["shape"]) for o in objects} <= heldout
    for split in ("val", "test", "compositional"):
        oracle = data.reference_rows[split]["oracle"]
        assert set(oracle) == set(data.split(split).image_ids)
        scores = data.content_scores[split](oracle)
        assert set(scores) == SCORE_KEYS
        assert scores["exact_scene"] == scores["scene_f1"] == scores["content_accuracy"] == 1.0
        # the references themselves read back as their scenes
        first_refs = {i: refs[0] for i, refs in data.split(split).captions_by_id().items()}
        assert data.content_scores[split](first_refs)["exact_scene"] == 1.0


def test_shapes_without_a_compositional_split(root):
    data = open_caption_data(data_config(root, 0))
    assert data.compositional is None and set(data.content_scores) == {"val", "test"}
    with pytest.raises(ValueError, match="no compositional split"):
        data.split("compositional")
    with pytest.raises(ValueError, match="unknown split 'restval'"):
        data.split("restval")
    assert data.split("test") is data.test


def test_asking_for_a_split_the_folder_lacks(tmp_path):
    plain = ensure_shapes(ShapesConfig(image_size=48, n_train=4, n_val=2, n_test=2),
                          data_root=tmp_path, progress=False)
    with pytest.raises(DatasetNotFoundError, match="n_compositional=0"):
        open_caption_data(DataConfig(root=str(plain), image_size=48, n_compositional=3))


def test_caption_data_defaults():
    data = CaptionData("coco", train=None, val=None, test=None)
    assert data.scenes == {} and data.content_scores == {} and data.reference_rows == {}
    with pytest.raises(ValueError, match="'coco' data has no compositional split"):
        data.split("compositional")
