"""An on-disk cache of a frozen image encoder's features, computed once and memory-mapped.

A frozen encoder gives the same features for an image in every epoch, so running it again
each epoch is pure waste: a ResNet-50 forward pass costs far more than the caption decoder
trained on top of it. ``build_feature_cache`` runs the encoder once over a dataset's images
and writes the features to disk; training then reads them back (``MappedFeatures``, or
``CachedFeatures.from_cache`` when they fit in memory), and a step costs the decoder's alone.

Shape letters: n images in the cache, B a batch of rows, N grid tokens per image, D feature width.

On disk the folder holds

    manifest.json                   written before any shard: the image ids in order, a fingerprint
                                    of the image list, the encoder's name, a hash of its weights,
                                    autocast on or off, the shapes, the shard size, a format version
    grid_00000.npy   (s, N, D)      float16, one shard of s <= shard_size images
    pooled_00000.npy (s, D)         float16
    ...

float16 halves the disk and the reading against float32 (COCO's 123k images through ResNet-50's
7×7×2048 grid: 25 GB instead of 50) and keeps about three significant digits (a relative
rounding error of at most 2^-11, 0.05%). Each shard file is written under a temporary name and
renamed when complete, so an interrupted build leaves only whole shards behind; building again
into the same folder keeps them and computes the rest. A manifest that disagrees (other images, another
encoder, other weights, another shard size) is an error, never a silent mix of two caches.

Reading maps the shards (``np.load(mmap_mode="r")``): the operating system pages in the rows a
batch asks for, so a 20 GB cache needs no 20 GB of RAM.

>>> import tempfile
>>> from velm_course.vision.encoders import CNNEncoder, CNNEncoderConfig
>>> images = ImageList(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8))
>>> enc = CNNEncoder(CNNEncoderConfig(d_model=8, image_size=32))
>>> tmp = tempfile.TemporaryDirectory()
>>> folder = tmp.name
>>> cache = build_feature_cache(enc, images, folder, shard_size=2, encoder_name="small_cnn", progress=False)
>>> len(cache), cache.grid_shape, sorted(p.name for p in Path(folder).glob("grid_*"))
(5, (16, 8), ['grid_00000.npy', 'grid_00001.npy', 'grid_00002.npy'])
>>> grid, pooled = MappedFeatures(folder)(torch.tensor([4, 0]))  # an encoder that takes row numbers
>>> tuple(grid.shape), pooled.dtype
((2, 16, 8), torch.float32)
>>> tmp.cleanup()
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .encoders import (  # noqa: F401  (CLIP's names: imported from here before they moved)
    CLIP_CHECKPOINT,
    CLIPVisionEncoder,
    ImageEncoder,
    build_image_encoder,
    check_row_numbers,
    encode_images,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CACHE_ENCODER_NAMES = ("resnet18", "resnet50", "vit_b_16", "clip")


class FeatureCacheError(RuntimeError):
    """A feature cache folder that cannot be used as asked; the message says how to fix it."""


def shard_path(folder: Path, kind: str, shard: int) -> Path:
    """``folder/grid_00003.npy`` or ``folder/pooled_00003.npy``."""
    return folder / f"{kind}_{shard:05d}.npy"


# ----------------------------------------------------------------------------------------------
# Writing

class ImageList:
    """The smallest dataset the cache builder takes: uint8 images (n, 3, H, W) and their ids
    (0..n-1 unless given). Any dataset with ``image_ids``, ``__len__`` and ``get_uint8(i)``
    returning ``(image, ...)`` works the same, ``CocoCaptions`` among them."""

    def __init__(self, images: torch.Tensor, image_ids=None):
        self.images = images
        self.image_ids = list(range(len(images))) if image_ids is None else list(image_ids)

    def __len__(self) -> int:
        return len(self.images)

    def get_uint8(self, i: int) -> tuple[torch.Tensor, None]:
        return self.images[i], None


class _Images(torch.utils.data.Dataset):
    """The dataset's images alone, for a DataLoader; stops at an image the dataset replaced.

    ``CocoCaptions(verify=False)`` answers an unreadable image with the next readable one, a
    fine trade in training and a wrong row in a cache: the row would hold another image's
    features under this image's id.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, i: int) -> torch.Tensor:
        skipped = len(getattr(self.dataset, "skipped", ()))
        image = self.dataset.get_uint8(i)[0]  # (3, H, W) uint8
        if len(getattr(self.dataset, "skipped", ())) != skipped:
            raise FeatureCacheError(
                f"image {i} ({self.dataset.skipped[-1]}) cannot be read and the dataset gave another image in its place; "
                "build the cache from a dataset made with verify=True, which leaves unreadable images "
                "out of the image list")
        return image


def _json_id(image_id):
    return image_id if isinstance(image_id, str) else int(image_id)


def image_list_fingerprint(dataset, image_ids: list) -> str:
    """sha256 of what makes an image list: the ids, the file names where the dataset lists them
    (``dataset.file_names``), and the pixels of its first, middle and last images. Ids alone do
    not do: the same split read at another ``image_size``, or another copy of the images, has
    the same ids and other pixels."""
    h = hashlib.sha256(json.dumps(image_ids).encode())
    names = getattr(dataset, "file_names", None)
    if names is not None:
        h.update(json.dumps([str(name) for name in names]).encode())
    images = _Images(dataset)
    for i in sorted({0, len(image_ids) // 2, len(image_ids) - 1}):
        h.update(images[i].contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_fingerprint(encoder: nn.Module) -> str:
    """sha256 of the encoder's weights and buffers (its state dict's values, in order): the same
    name with pretrained or random weights is another encoder."""
    h = hashlib.sha256()
    for value in encoder.state_dict().values():
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path.tmp``, then a rename: a reader or a later build sees the whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object, so np.save adds no second ".npy"
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise FeatureCacheError(f"{folder / MANIFEST} is not valid JSON ({err}); delete the folder "
                                "and build the cache again") from None


def _first_difference(have: list, want: list) -> str:
    for row, (a, b) in enumerate(zip(have, want, strict=False)):
        if a != b:
            return f"row {row} is image {a!r} in the cache, {b!r} here"
    return f"the cache has {len(have)} images, the list here {len(want)}"


def _check_agrees(manifest: dict, want: dict, folder: Path) -> None:
    """Raise if a cache folder's manifest was written for other images, encoder or layout."""
    fix = (f"Delete {folder} to build it again, or pass another folder for this cache.")
    if manifest.get("format_version") != want["format_version"]:
        raise FeatureCacheError(f"the feature cache in {folder} has format version "
                                f"{manifest.get('format_version')}, this code writes {want['format_version']}. {fix}")
    if manifest["image_ids"] != want["image_ids"]:
        raise FeatureCacheError(f"the feature cache in {folder} was built for other images: "
                                f"{_first_difference(manifest['image_ids'], want['image_ids'])}. {fix}")
    if manifest["images_sha256"] != want["images_sha256"]:
        raise FeatureCacheError(f"the feature cache in {folder} was built for other images with the same "
                                "ids (other files, another folder or another image size). " + fix)
    if manifest["encoder"] != want["encoder"]:
        raise FeatureCacheError(f"the feature cache in {folder} holds features of encoder "
                                f"{manifest['encoder']!r}, not {want['encoder']!r}. {fix}")
    if manifest["weights_sha256"] != want["weights_sha256"]:
        raise FeatureCacheError(f"the feature cache in {folder} was built with other weights for encoder "
                                f"{want['encoder']!r} (pretrained against random, or another checkpoint). {fix}")
    if manifest["autocast"] != want["autocast"]:
        raise FeatureCacheError(f"the feature cache in {folder} was built with autocast={manifest['autocast']}: "
                                f"pass autocast={manifest['autocast']} to finish it. {fix}")
    if manifest["shard_size"] != want["shard_size"]:
        raise FeatureCacheError(f"the feature cache in {folder} has shards of {manifest['shard_size']} images, "
                                f"not {want['shard_size']}: pass shard_size={manifest['shard_size']} to "
                                f"finish it. {fix}")


def _shard_is_complete(folder: Path, manifest: dict | None, shard: int) -> bool:
    """Both files of ``shard`` exist, read as float16 and have the manifest's shapes."""
    if manifest is None:
        return False
    rows = _shard_rows(manifest, shard)
    for kind in ("grid", "pooled"):
        want = (len(rows), *manifest[f"{kind}_shape"])
        try:
            array = np.load(shard_path(folder, kind, shard), mmap_mode="r")
        except (OSError, ValueError, EOFError):  # missing, truncated or not an .npy file
            return False
        if array.shape != want or array.dtype != np.float16:
            return False
    return True


def _shard_rows(manifest: dict, shard: int) -> range:
    size, n = manifest["shard_size"], manifest["num_images"]
    return range(shard * size, min((shard + 1) * size, n))


def build_feature_cache(
    encoder: nn.Module,
    dataset,
    folder,
    *,
    batch_size: int = 64,
    shard_size: int = 1024,
    encoder_name: str,
    progress: bool = True,
    num_workers: int = 0,
    autocast: bool = False,
) -> FeatureCache:
    """Run ``encoder`` once over ``dataset``'s images, in order, into float16 shards under ``folder``.

    ``dataset`` has ``image_ids``, ``__len__`` and ``get_uint8(i) -> (image (3, H, W) uint8, ...)``
    (``CocoCaptions``, ``ImageList``). The encoder runs in eval mode without gradients on its own
    device (``encode_images``), ``batch_size`` images at a time, loaded by ``num_workers``
    DataLoader workers; ``autocast=True`` runs it under ``torch.autocast`` (float16 on a GPU,
    bfloat16 on a CPU): faster on a GPU, and the features differ from float32's in the low digits.

    Building into a folder that already holds part of this cache keeps every complete shard
    and computes only the missing or damaged ones; ``encoder_name`` is recorded with a hash of
    the weights and the image list, and a folder built for anything else raises
    ``FeatureCacheError``. Returns the cache, opened (``FeatureCache.open``).
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset has no images to cache")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in ("grid_*.npy.tmp", "pooled_*.npy.tmp", MANIFEST + ".tmp"):
        for leftover in folder.glob(pattern):  # half-written files of an interrupted build
            leftover.unlink()
    image_ids = [_json_id(i) for i in dataset.image_ids]
    if len(image_ids) != n:
        raise ValueError(f"the dataset has {n} images but {len(image_ids)} image ids")
    want = {"format_version": FORMAT_VERSION, "encoder": encoder_name,
            "weights_sha256": weights_fingerprint(encoder), "autocast": autocast, "num_images": n,
            "images_sha256": image_list_fingerprint(dataset, image_ids), "shard_size": shard_size,
            "num_shards": math.ceil(n / shard_size), "dtype": "float16", "image_ids": image_ids}
    manifest = _read_manifest(folder)
    if manifest is not None:
        _check_agrees(manifest, want, folder)
    todo = [s for s in range(want["num_shards"]) if not _shard_is_complete(folder, manifest, s)]
    batches = []  # row numbers, batch by batch; a batch never straddles two shards
    for s in todo:
        rows = _shard_rows(want, s)
        batches += [list(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    loader = torch.utils.data.DataLoader(_Images(dataset), batch_sampler=batches, num_workers=num_workers)
    param = next(iter(encoder.parameters()), None)
    device_type = param.device.type if param is not None else "cpu"

    from tqdm.auto import tqdm

    done = n - sum(len(_shard_rows(want, s)) for s in todo)
    grids, pooleds = [], []  # the batches of the shard being filled, todo[0]
    with tqdm(total=n, initial=done, unit="img", desc=f"{encoder_name} features", disable=not progress) as bar:
        for batch in loader:  # (b, 3, H, W) uint8
            with torch.autocast(device_type, enabled=autocast):
                grid, pooled = encode_images(encoder, batch, batch_size=len(batch))  # (b, N, D), (b, D)
            grids.append(grid.to(torch.float16).numpy())
            pooleds.append(pooled.to(torch.float16).numpy())
            bar.update(len(batch))
            if sum(len(g) for g in grids) < len(_shard_rows(want, todo[0])):
                continue
            if manifest is None:  # the first shard done fixes the shapes; the manifest goes first
                manifest = {**want, "grid_shape": list(grids[0].shape[1:]),
                            "pooled_shape": list(pooleds[0].shape[1:])}
                _write_manifest(folder, manifest)
            _write_shard(folder, manifest, todo.pop(0), np.concatenate(grids), np.concatenate(pooleds))
            grids, pooleds = [], []
    return FeatureCache.open(folder, image_ids)


def _write_shard(folder: Path, manifest: dict, shard: int, grid: np.ndarray, pooled: np.ndarray) -> None:
    if (list(grid.shape[1:]), list(pooled.shape[1:])) != (manifest["grid_shape"], manifest["pooled_shape"]):
        raise FeatureCacheError(
            f"encoder {manifest['encoder']!r} gave grid {grid.shape[1:]} and pooled {pooled.shape[1:]} per "
            f"image, but the cache in {folder} holds {tuple(manifest['grid_shape'])} and "
            f"{tuple(manifest['pooled_shape'])} (another image size?). Delete the folder to build it again.")
    if not (np.isfinite(grid).all() and np.isfinite(pooled).all()):
        raise FeatureCacheError(f"shard {shard}: features beyond float16's range (±65504) or NaN; "
                                "scale the encoder's outputs or check its weights")
    _save_atomic(shard_path(folder, "grid", shard), grid)  # (s, N, D)
    _save_atomic(shard_path(folder, "pooled", shard), pooled)  # (s, D)


# ----------------------------------------------------------------------------------------------
# Reading

class FeatureCache:
    """A complete feature cache, its shards memory-mapped: ``lookup(rows)`` reads only those rows.

    Rows are positions in ``image_ids`` (the dataset's order when the cache was built).
    """

    def __init__(self, folder: Path, manifest: dict, grids: list[np.ndarray], pooleds: list[np.ndarray]):
        self.folder = folder
        self.manifest = manifest
        self._grids, self._pooleds = grids, pooleds  # per shard: (s, N, D), (s, D) float16 memmaps

    @classmethod
    def open(cls, folder, image_ids=None) -> FeatureCache:
        """Map the cache in ``folder``; with ``image_ids``, check they are the cache's, in order."""
        folder = Path(folder)
        manifest = _read_manifest(folder)
        if manifest is None:
            raise FeatureCacheError(f"no feature cache in {folder} ({MANIFEST} is missing); build one "
                                    "with velm_course.vision.feature_cache.build_feature_cache")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise FeatureCacheError(f"the feature cache in {folder} has format version "
                                    f"{manifest.get('format_version')}, this code reads {FORMAT_VERSION}; "
                                    "delete the folder and build it again")
        missing = [s for s in range(manifest["num_shards"]) if not _shard_is_complete(folder, manifest, s)]
        if missing:
            shown = ", ".join(f"{s:05d}" for s in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise FeatureCacheError(
                f"the feature cache in {folder} is incomplete: {len(missing)} of {manifest['num_shards']} "
                f"shards are missing or damaged ({shown}). Finish it with build_feature_cache(encoder, "
                f"dataset, {str(folder)!r}, encoder_name={manifest['encoder']!r}, "
                f"shard_size={manifest['shard_size']}), which computes only those shards")
        if image_ids is not None and [_json_id(i) for i in image_ids] != manifest["image_ids"]:
            raise FeatureCacheError(
                f"the feature cache in {folder} is for other images: "
                f"{_first_difference(manifest['image_ids'], [_json_id(i) for i in image_ids])}")
        shards = range(manifest["num_shards"])
        return cls(folder, manifest,
                   [np.load(shard_path(folder, "grid", s), mmap_mode="r") for s in shards],
                   [np.load(shard_path(folder, "pooled", s), mmap_mode="r") for s in shards])

    def __reduce__(self):  # pickled or deep-copied (DataLoader workers, a model copy): map it again
        return (FeatureCache.open, (str(self.folder),))

    def __len__(self) -> int:
        return self.manifest["num_images"]

    @property
    def image_ids(self) -> list:
        return list(self.manifest["image_ids"])

    @property
    def encoder_name(self) -> str:
        return self.manifest["encoder"]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(N, D) per image."""
        return tuple(self.manifest["grid_shape"])

    def lookup(self, rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (B,) (ints, a tensor, an array) -> grid (B, N, D) and pooled (B, D) as float32."""
        rows = np.asarray(torch.as_tensor(rows, dtype=torch.int64).cpu()).reshape(-1)  # (B,)
        n = len(self)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"rows {rows.min()}..{rows.max()} out of range for a cache of {n} images")
        shard, offset = np.divmod(rows % n, self.manifest["shard_size"])  # (B,), (B,)
        grid = np.empty((len(rows), *self.grid_shape), np.float16)  # (B, N, D)
        pooled = np.empty((len(rows), self.grid_shape[-1]), np.float16)  # (B, D)
        for s in np.unique(shard):  # one fancy-indexed read per shard touched
            here = shard == s
            grid[here] = self._grids[s][offset[here]]
            pooled[here] = self._pooleds[s][offset[here]]
        return torch.from_numpy(grid).float(), torch.from_numpy(pooled).float()

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's grid (N, D) and pooled vector (D,), as float32."""
        grid, pooled = self.lookup([row])
        return grid[0], pooled[0]

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole cache in memory as float32: grid (n, N, D), pooled (n, D)."""
        return (torch.from_numpy(np.concatenate(self._grids)).float(),
                torch.from_numpy(np.concatenate(self._pooleds)).float())


class MappedFeatures(nn.Module):
    """A feature cache on disk served as an encoder that takes row numbers, like ``CachedFeatures``.

    ``encoder(rows)`` with rows (B,) int64 gives (grid (B, N, D), pooled (B, D)) as float32 on
    the module's device (``.to(device)`` moves where they go; the cache stays on disk), so a
    captioner trains on a cache larger than memory through the same ``encoder(images)`` call.
    ``CachedFeatures.from_cache(folder)`` is the in-memory twin for caches that fit.
    """

    def __init__(self, cache: FeatureCache | str | os.PathLike, image_ids=None):
        super().__init__()
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache.open(cache, image_ids)
        self.out_dim = self.cache.grid_shape[-1]
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)  # follows .to(device)

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_row_numbers(index, type(self).__name__)
        grid, pooled = self.cache.lookup(index)  # (B, N, D), (B, D) float32 on the CPU
        device = self._device_anchor.device
        return grid.to(device), pooled.to(device)


# ----------------------------------------------------------------------------------------------
# The frozen encoders worth caching

def encoder_for_cache(name: str, pretrained: bool = True, image_size: int = 224) -> nn.Module:
    """A frozen encoder (eval mode, no gradients) to build a feature cache with.

    ``resnet18``, ``resnet50`` and ``vit_b_16`` are torchvision's (``build_image_encoder``) and
    ``clip`` is CLIP ViT-B/32's vision tower. ``pretrained`` weights are downloaded where there is
    internet; where there is none, a warning says so and the weights are RANDOM. The encoder's
    ``cache_name`` says which ("resnet50" or "resnet50-random"): pass it as ``encoder_name`` so a
    cache of random features is never taken for a pretrained one.

    >>> enc = encoder_for_cache("resnet18", pretrained=False, image_size=64)
    >>> enc.cache_name, enc.training, enc(torch.rand(1, 3, 64, 64))[0].shape
    ('resnet18-random', False, torch.Size([1, 4, 512]))
    """
    if name not in CACHE_ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r} for a feature cache; choose from {CACHE_ENCODER_NAMES}")

    def build(pretrained: bool) -> nn.Module:
        return build_image_encoder(name, image_size=image_size, pretrained=pretrained)

    try:
        encoder, loaded = build(pretrained), pretrained
    except RuntimeError as err:  # the weights could not be downloaded (no internet)
        warnings.warn(f"{err} encoder_for_cache continues from RANDOM weights and names the encoder "
                      f"{name}-random; build the cache where the weights can be downloaded for useful "
                      "features.", stacklevel=2)
        encoder, loaded = build(False), False
    encoder.cache_name = name if loaded else f"{name}-random"
    return encoder.eval().requires_grad_(False)
