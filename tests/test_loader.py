"""From a dataset to batches: the resumable sampler, caption pairs, DataLoader workers, registry."""

import pytest
import torch

from velm_course.data.captions import BOS, EOS, CaptionVocab
from velm_course.data.loader import (
    CaptionPairs,
    ResumableBatchSampler,
    batch_loader,
    collate_captions,
    tensor_batches,
)
from velm_course.data.registry import DATASETS, open_caption_data
from velm_course.data.shapes import ShapesConfig, ensure_shapes, shapes_split
from velm_course.engine.config import DataConfig
from velm_course.nn.loss import IGNORE_INDEX


def test_each_epoch_is_a_permutation_and_batches_cross_epochs():
    sampler = ResumableBatchSampler(n=10, batch_size=4, seed=3, steps=5)
    flat = [i for batch in sampler for i in batch]
    assert len(flat) == 20
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # a new order every epoch


def test_resuming_at_a_step_gives_the_same_batches():
    full = list(ResumableBatchSampler(n=37, batch_size=5, seed=1, steps=20))
    assert list(ResumableBatchSampler(n=37, batch_size=5, seed=1, steps=20, start_step=13)) == full[13:]
    assert list(ResumableBatchSampler(n=37, batch_size=5, seed=2, steps=20)) != full


def test_ranks_split_the_global_batch_and_accumulation_splits_the_step():
    one = list(ResumableBatchSampler(n=50, batch_size=8, seed=0, steps=6))
    ranks = [list(ResumableBatchSampler(n=50, batch_size=4, seed=0, steps=6, rank=r, world_size=2)) for r in (0, 1)]
    for step in range(6):
        assert ranks[0][step] + ranks[1][step] == one[step]
    accum = list(ResumableBatchSampler(n=50, batch_size=4, seed=0, steps=6, grad_accum=2))
    assert [accum[2 * s] + accum[2 * s + 1] for s in range(6)] == one


def test_bad_sampler_settings():
    with pytest.raises(ValueError, match="empty dataset"):
        ResumableBatchSampler(n=0, batch_size=1, seed=0, steps=1)
    with pytest.raises(ValueError, match="rank"):
        ResumableBatchSampler(n=5, batch_size=1, seed=0, steps=1, rank=2, world_size=2)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return ensure_shapes(ShapesConfig(image_size=64, n_train=12, n_val=4, n_test=4, seed=5),
                         data_root=tmp_path_factory.mktemp("data"), progress=False)


def test_caption_pairs_cover_every_reference_once(shapes_root):
    train = shapes_split(shapes_root, "train", image_size=64)
    refs = train.captions_by_id()
    vocab = CaptionVocab.build([c for caps in refs.values() for c in caps])
    pairs = CaptionPairs(train, vocab, max_words=20)
    assert len(pairs) == sum(len(c) for c in refs.values())
    decoded = sorted(vocab.decode(pairs[j]["tokens"][1:]) for j in range(len(pairs)))
    assert decoded == sorted(c for caps in refs.values() for c in caps)
    item = pairs[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    in_memory = CaptionPairs(train, vocab, max_words=20, in_memory=True)
    assert all(torch.equal(in_memory[j]["image"], pairs[j]["image"]) for j in range(0, len(pairs), 7))


def test_a_torchvision_transform_runs_on_every_example(shapes_root):
    from torchvision.transforms import v2

    train = shapes_split(shapes_root, "train", image_size=64)
    vocab = CaptionVocab.build([c for caps in train.captions_by_id().values() for c in caps])
    plain = CaptionPairs(train, vocab, 20, in_memory=True)
    flipped = CaptionPairs(train, vocab, 20, in_memory=True, transform=v2.RandomVerticalFlip(p=1.0))
    assert torch.equal(flipped[3]["image"], plain[3]["image"].flip(1))  # (3, H, W): H is dim 1
    assert torch.equal(flipped[3]["tokens"], plain[3]["tokens"])
    assert flipped[3]["image"].dtype == torch.uint8


def test_collate_shifts_and_masks(shapes_root):
    train = shapes_split(shapes_root, "train", image_size=64)
    vocab = CaptionVocab.build([c for caps in train.captions_by_id().values() for c in caps])
    batch = collate_captions([CaptionPairs(train, vocab, 20)[j] for j in range(3)])
    assert batch["images"].shape == (3, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert (batch["idx"][:, 0] == BOS).all()
    for row_idx, row_tgt in zip(batch["idx"], batch["targets"], strict=True):
        n = int((row_tgt != IGNORE_INDEX).sum())
        assert row_tgt[n - 1] == EOS and (row_tgt[n:] == IGNORE_INDEX).all()
        assert torch.equal(row_idx[1:n], row_tgt[: n - 1])  # targets are the inputs shifted by one


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_is_resumable_with_and_without_workers(shapes_root, workers):
    train = shapes_split(shapes_root, "train", image_size=64)
    vocab = CaptionVocab.build([c for caps in train.captions_by_id().values() for c in caps])
    pairs = CaptionPairs(train, vocab, 20)
    batches = batch_loader(pairs, collate_captions, batch_size=4, seed=0, steps=6, num_workers=workers)
    full = list(batches(0))
    again = list(batches(4))
    assert len(full) == 6 and len(again) == 2
    for a, b in zip(full[4:], again, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_tensor_batches_resume():
    data = {"x": torch.arange(20), "y": torch.arange(20) * 2}
    batches = tensor_batches(data, batch_size=3, seed=1, steps=8)
    full = list(batches(0))
    assert [b["x"].tolist() for b in list(batches(5))] == [b["x"].tolist() for b in full[5:]]
    assert all(torch.equal(b["y"], 2 * b["x"]) for b in full)
    with pytest.raises(ValueError, match="same length"):
        tensor_batches({"x": torch.arange(3), "y": torch.arange(4)}, 2, 0, 1)


def test_registry_opens_shapes_with_content_scores(shapes_root):
    data = open_caption_data(DataConfig(dataset="shapes", root=str(shapes_root), image_size=64))
    assert len(data.train) == 12 and len(data.test) == 4
    oracle = data.reference_rows["test"]["oracle"]
    scores = data.content_scores["test"](oracle)
    assert scores["content_accuracy"] == 1.0 and scores["exact_scene"] == 1.0 and scores["scene_f1"] == 1.0
    assert sorted(DATASETS) == ["coco", "coco2017", "shapes"]


def test_registry_names_the_fetch_command_for_missing_coco(tmp_path):
    from velm_course.data.coco import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="velm-course fetch coco --dest"):
        open_caption_data(DataConfig(dataset="coco", root=str(tmp_path / "coco")))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        open_caption_data(type("Cfg", (), {"dataset": "mnist"})())
