"""The on-disk feature cache: equal to a forward pass up to float16, resumable, never mixed."""

import copy
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from velm_course.vision.encoders import CachedFeatures, CNNEncoder, CNNEncoderConfig
from velm_course.vision.feature_cache import (
    FeatureCache,
    FeatureCacheError,
    ImageList,
    MappedFeatures,
    build_feature_cache,
    encoder_for_cache,
)

N_IMAGES, SHARD, BATCH = 11, 4, 2  # shards of 4, 4 and 3 images; batch boundaries fall on shard boundaries


def random_encoder(seed: int = 0, image_size: int = 32) -> CNNEncoder:
    """A small CNN with random weights and random BatchNorm statistics, so a wrong row shows."""
    torch.manual_seed(seed)
    enc = CNNEncoder(CNNEncoderConfig(d_model=8, image_size=image_size, widths=(4, 8, 8, 8)))
    for module in enc.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return enc


def random_images(n: int = N_IMAGES, seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def forward_pass(encoder, images, batch_size=BATCH):
    """The encoder run directly, in eval mode, in the batches the cache builder uses."""
    encoder.eval()
    with torch.no_grad():
        outs = [encoder(images[i:i + batch_size].float() / 255) for i in range(0, len(images), batch_size)]
    return torch.cat([g for g, _ in outs]), torch.cat([p for _, p in outs])


def build(encoder, dataset, folder, **kwargs):
    kwargs = {"batch_size": BATCH, "shard_size": SHARD, "encoder_name": "small_cnn", "progress": False,
              **kwargs}
    return build_feature_cache(encoder, dataset, folder, **kwargs)


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class CountingEncoder(nn.Module):
    """Wraps an encoder, counts the images it sees, and raises KeyboardInterrupt on call ``stop_at``."""

    def __init__(self, inner, stop_at=None):
        super().__init__()
        self.inner, self.stop_at = inner, stop_at
        self.calls, self.images = 0, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.images += len(x)
        return self.inner(x)


def test_cache_equals_a_forward_pass_up_to_float16(tmp_path, capsys):
    enc, images = random_encoder(), random_images()
    cache = build(enc, ImageList(images), tmp_path, progress=True)
    assert f"{N_IMAGES}/{N_IMAGES}" in capsys.readouterr().err  # the progress bar counts images

    want_grid, want_pooled = forward_pass(enc, images)
    grid, pooled = cache.lookup(torch.arange(N_IMAGES))
    assert grid.dtype == pooled.dtype == torch.float32
    assert torch.equal(grid, want_grid.half().float()) and torch.equal(pooled, want_pooled.half().float())
    torch.testing.assert_close(grid, want_grid, rtol=1e-3, atol=1e-3)  # float16 keeps ~3 digits
    assert (grid - want_grid).abs().max() > 0  # ...and not more: it really is float16 on disk

    rows = torch.tensor([10, 0, 5, 5, -1, 3])  # any order, repeats, across shards
    g, p = cache.lookup(rows)
    assert torch.equal(g, want_grid[rows].half().float()) and torch.equal(p, want_pooled[rows].half().float())
    assert torch.equal(cache[7][1], want_pooled[7].half().float())
    with pytest.raises(IndexError):
        cache.lookup([N_IMAGES])

    # uneven shards on disk: 4, 4, 3 images, float16, and the manifest says what is in them
    assert [np.load(tmp_path / f"grid_{s:05d}.npy").shape for s in range(3)] == [(4, 16, 8), (4, 16, 8), (3, 16, 8)]
    assert np.load(tmp_path / "pooled_00002.npy").dtype == np.float16
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["image_ids"] == list(range(N_IMAGES)) and manifest["encoder"] == "small_cnn"
    assert (manifest["grid_shape"], manifest["pooled_shape"], manifest["shard_size"]) == ([16, 8], [8], SHARD)
    assert len(cache) == N_IMAGES and cache.grid_shape == (16, 8) and cache.image_ids == list(range(N_IMAGES))


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path):
    enc, images = random_encoder(), random_images()
    whole = build(enc, ImageList(images), tmp_path / "whole")

    # batches of 2 in shards of 4: calls 1-2 fill shard 0, call 4 is in shard 1 and is interrupted
    interrupted = CountingEncoder(enc, stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        build(interrupted, ImageList(images), tmp_path / "resumed")
    names = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert names == ["grid_00000.npy", "manifest.json", "pooled_00000.npy"]

    resumed = CountingEncoder(enc)
    cache = build(resumed, ImageList(images), tmp_path / "resumed")
    assert (resumed.images, resumed.calls) == (N_IMAGES - SHARD, 4)  # only shards 1 and 2
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(whole.folder)  # byte for byte

    again = CountingEncoder(enc)
    build(again, ImageList(images), tmp_path / "resumed")
    assert again.calls == 0  # a complete cache runs nothing
    assert torch.equal(cache.lookup(range(N_IMAGES))[0], whole.lookup(range(N_IMAGES))[0])


def test_half_written_or_damaged_shards_are_recomputed(tmp_path):
    enc, images = random_encoder(), random_images()
    build(enc, ImageList(images), tmp_path)
    good = folder_bytes(tmp_path)
    pooled1 = tmp_path / "pooled_00001.npy"
    pooled1.write_bytes(good[pooled1.name][: len(good[pooled1.name]) // 2])  # truncated
    np.save(tmp_path / "grid_00000.npy", np.zeros((3, 16, 8), np.float16))  # a wrong shape
    (tmp_path / "grid_00002.npy.tmp").write_bytes(b"half a shard")  # leftover of a killed build

    counter = CountingEncoder(enc)
    build(counter, ImageList(images), tmp_path)
    assert counter.images == 2 * SHARD  # shards 0 and 1, not 2
    assert folder_bytes(tmp_path) == good  # the .tmp is gone too


def test_a_cache_for_other_images_encoder_weights_or_shards_is_an_error(tmp_path):
    enc, images = random_encoder(), random_images()
    build(enc, ImageList(images), tmp_path)
    good = folder_bytes(tmp_path)
    cases = [
        (dict(dataset=ImageList(images[:10])), "other images: the cache has 11 images"),
        (dict(dataset=ImageList(images, image_ids=range(1, N_IMAGES + 1))), "other images: row 0"),
        (dict(dataset=ImageList(random_images(seed=1))), "same ids"),
        (dict(encoder_name="resnet50"), "encoder 'small_cnn', not 'resnet50'"),
        (dict(encoder=random_encoder(seed=1)), "other weights"),
        (dict(shard_size=5), "pass shard_size=4"),
        (dict(autocast=True), "pass autocast=False"),
    ]
    for change, message in cases:
        args = {"encoder": CountingEncoder(enc), "dataset": ImageList(images), **change}
        with pytest.raises(FeatureCacheError, match=message) as err:
            build(args.pop("encoder"), args.pop("dataset"), tmp_path, **args)
        assert "Delete" in str(err.value) and str(tmp_path) in str(err.value)
    assert folder_bytes(tmp_path) == good  # nothing was written


def test_open_refuses_an_incomplete_cache_and_other_image_ids(tmp_path):
    enc, images = random_encoder(), random_images()
    build(enc, ImageList(images), tmp_path)
    assert len(FeatureCache.open(tmp_path, image_ids=list(range(N_IMAGES)))) == N_IMAGES
    with pytest.raises(FeatureCacheError, match="row 1 is image 1 in the cache, 2 here"):
        FeatureCache.open(tmp_path, image_ids=[0, 2, 1, *range(3, N_IMAGES)])
    (tmp_path / "grid_00002.npy").unlink()
    pooled1 = tmp_path / "pooled_00001.npy"
    pooled1.write_bytes(pooled1.read_bytes()[:100])
    with pytest.raises(FeatureCacheError, match=r"2 of 3 shards .*\(00001, 00002\).*build_feature_cache"):
        FeatureCache.open(tmp_path)
    with pytest.raises(FeatureCacheError, match="manifest.json is missing"):
        FeatureCache.open(tmp_path / "nowhere")


def test_mapped_features_serve_like_cached_features(tmp_path):
    enc, images = random_encoder(), random_images()
    build(enc, ImageList(images), tmp_path)
    mapped, in_memory = MappedFeatures(tmp_path), CachedFeatures.from_cache(tmp_path)
    exact = CachedFeatures.compute(enc, images)
    rows = torch.tensor([9, 1, 1, 4])
    for got, want in zip(mapped(rows), in_memory(rows), strict=True):
        assert torch.equal(got, want) and got.dtype == torch.float32
    for got, want in zip(mapped(rows), exact(rows), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert mapped.out_dim == exact.out_dim == 8
    copied = copy.deepcopy(mapped)  # a copy maps the files again, it does not read them into memory
    assert all(isinstance(a, np.memmap) and a.filename is not None for a in copied.cache._grids)
    for got, want in zip(copied(rows), mapped(rows), strict=True):
        assert torch.equal(got, want)
    assert mapped.to("meta")(rows)[0].device.type == "meta"  # outputs follow the module's device
    with pytest.raises(TypeError, match="MappedFeatures takes row numbers"):
        mapped(images[:2].float())


def test_a_captioner_trains_on_the_mapped_cache(tmp_path):
    from velm_course.multimodal.captioner import Captioner, CaptionerConfig

    enc, images = random_encoder(), random_images()
    build(enc, ImageList(images), tmp_path)
    cfg = CaptionerConfig(vocab_size=11, d_model=8, n_layer=1, n_head=2, max_len=6, dropout=0.0,
                          freeze_encoder=True)
    models = {}
    for name, encoder in [("direct", enc), ("memory", CachedFeatures.from_cache(tmp_path)),
                          ("mapped", MappedFeatures(tmp_path))]:
        torch.manual_seed(1)
        models[name] = Captioner(cfg, encoder=encoder).eval()
    idx = torch.randint(0, 11, (3, 5))
    rows = torch.tensor([5, 2, 10])
    with torch.no_grad():
        direct, _ = models["direct"](images[rows].float() / 255, idx)
        memory, _ = models["memory"](rows, idx)
    logits, loss = models["mapped"].train()(rows, idx, targets=idx)
    loss.backward()  # gradients reach the decoder; the cache has no parameters to train
    assert models["mapped"].tok_emb.weight.grad is not None
    torch.testing.assert_close(logits, memory, rtol=0, atol=0)
    torch.testing.assert_close(logits, direct, rtol=1e-3, atol=1e-3)


def test_a_real_coco_captions_split(tmp_path):
    from velm_course.data.shapes import ShapesConfig, generate_shapes, shapes_split

    root = generate_shapes(tmp_path / "shapes", ShapesConfig(image_size=48, n_train=12, n_val=6, n_test=6,
                                                             seed=7), progress=False)
    train, val = shapes_split(root, "train"), shapes_split(root, "val")
    enc = random_encoder(image_size=48)
    cache = build(enc, train, tmp_path / "cache", shard_size=5, batch_size=5)
    images = torch.stack([train.get_uint8(i)[0] for i in range(len(train))])
    want_grid, want_pooled = forward_pass(enc, images, batch_size=5)
    grid, pooled = FeatureCache.open(tmp_path / "cache", image_ids=train.image_ids).lookup(range(len(train)))
    assert torch.equal(grid, want_grid.half().float()) and torch.equal(pooled, want_pooled.half().float())
    assert cache.image_ids == train.image_ids

    # another split is another image list; the same split at another size has the same ids, other pixels
    with pytest.raises(FeatureCacheError, match="other images: row 0"):
        build(enc, val, tmp_path / "cache", shard_size=5, batch_size=5)
    with pytest.raises(FeatureCacheError, match="same ids"):
        build(enc, shapes_split(root, "train", image_size=64), tmp_path / "cache", shard_size=5, batch_size=5)

    # an unreadable image must not be cached under its id with the next image's features
    damaged = shutil.copytree(root, tmp_path / "damaged")
    (damaged / "images" / "train" / "000000000003.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = shapes_split(damaged, "train", verify=False)
        with pytest.raises(FeatureCacheError, match="verify=True"):
            build(enc, lazy, tmp_path / "damaged_cache", shard_size=5, batch_size=5)


def test_encoder_for_cache_names_random_weights(monkeypatch):
    import torchvision
    import transformers

    enc = encoder_for_cache("resnet18", pretrained=False, image_size=64)
    assert enc.cache_name == "resnet18-random" and not enc.training
    assert not any(p.requires_grad for p in enc.parameters())

    source = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, progress=True: source)
    enc = encoder_for_cache("resnet18", image_size=64)
    assert enc.cache_name == "resnet18"
    torch.testing.assert_close(enc.net.conv1.weight, source["conv1.weight"])

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert encoder_for_cache("resnet18", image_size=64).cache_name == "resnet18-random"

    # CLIP: patch tokens as the grid, pooler_output as the pooled vector (a tiny stand-in model)
    tiny = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=32))
    monkeypatch.setattr(transformers.CLIPVisionModel, "from_pretrained", lambda name: tiny)
    clip = encoder_for_cache("clip")
    assert clip.cache_name == "clip" and not clip.training
    x = torch.rand(2, 3, 224, 224)
    grid, pooled = clip(x)
    out = tiny(pixel_values=(x - clip.mean) / clip.std)
    assert grid.shape == (2, 49, 16)
    torch.testing.assert_close(pooled, out.pooler_output)
    torch.testing.assert_close(grid, out.last_hidden_state[:, 1:])

    monkeypatch.setattr(transformers.CLIPVisionModel, "from_pretrained", offline)
    with pytest.warns(UserWarning, match="openai/clip-vit-base-patch32.*RANDOM"):
        assert encoder_for_cache("clip", image_size=224).cache_name == "clip-random"
    with pytest.raises(ValueError, match="unknown encoder"):
        encoder_for_cache("small_cnn")
