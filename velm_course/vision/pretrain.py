"""A pretrained image encoder for the shapes data: what ImageNet weights are to photographs.

Flamingo, ClipCap and BLIP-2 do not train their image encoders: they take one pretrained on
another task and freeze it, so that training the fusion is cheap and comparisons between
fusion designs are fair (every design reads the same features). The course does the same on
the shapes data. The small CNN (``encoders.CNNEncoder``) is pretrained to say, for each of the
nine cells of the 3×3 layout, which colour, shape and size sits there, or that the cell is
empty:

    L = (1/9) sum_cells [ CE(colour) + CE(shape) + CE(size) ]

Its grid tokens are average-pooled onto the 3×3 cells and one linear layer reads each cell
(``CellAttributeHead``). The task asks *what* and *where* and nothing about wording, so it
favours no way of generating captions over another.

For the ``ci`` profile the trained weights ship with the course (``data/pretrained/``, made
by ``python -m velm_course.vision.pretrain``: one file for the notebooks' data, one for the
main job's data with its held-out colour-shape pairs); for other settings the first call trains them
(a minute or two on a GPU) and caches them under ``<data_dir>/pretrained/``.

Shape letters: B batch, N grid tokens (g×g), D width, K = 9 cells.

>>> cell_labels([{"cell": [0, 2], "color": "red", "shape": "star", "size": "small"}])[2].tolist()
[1, 4, 1]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.shapes import COLORS, SHAPES, SIZES
from .encoders import CNNEncoder, CNNEncoderConfig

# per cell: (name, number of classes including "empty" at index 0)
CELL_FIELDS = (("color", 1 + len(COLORS)), ("shape", 1 + len(SHAPES)), ("size", 1 + len(SIZES)))
PRETRAIN_VERSION = 1  # bump when the objective or the encoder changes
REPO_PRETRAINED = Path(__file__).resolve().parent.parent.parent / "data" / "pretrained"


def cell_labels(objects: list[dict]) -> torch.Tensor:
    """(9, 3) class ids per cell (row-major): colour, shape, size; 0 where the cell is empty."""
    names = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}
    y = torch.zeros(9, len(CELL_FIELDS), dtype=torch.long)
    for obj in objects:
        row, col = obj["cell"]
        y[3 * row + col] = torch.tensor([1 + names[f].index(obj[f]) for f, _ in CELL_FIELDS])
    return y


class CellAttributeHead(nn.Module):
    """Grid tokens (B, N, D) -> per-cell logits (B, 9, sum of classes)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, sum(n for _, n in CELL_FIELDS))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        B, N, D = grid.shape
        g = int(round(N**0.5))
        fmap = grid.transpose(1, 2).reshape(B, D, g, g)  # (B, D, g, g)
        cells = F.adaptive_avg_pool2d(fmap, 3).flatten(2).transpose(1, 2)  # (B, 9, D)
        return self.proj(cells)  # (B, 9, C)


def cell_attribute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of every field of every cell; divide by B·9 for the mean."""
    total, start = logits.new_zeros(()), 0
    for k, (_, n) in enumerate(CELL_FIELDS):
        part = logits[..., start:start + n]  # (B, 9, n)
        total = total + F.cross_entropy(part.reshape(-1, n), labels[..., k].reshape(-1), reduction="sum")
        start += n
    return total


@torch.no_grad()
def cell_accuracy(encoder: nn.Module, head: CellAttributeHead, images: torch.Tensor,
                  labels: torch.Tensor) -> dict[str, float]:
    """Per-field accuracy over all cells, and the share of images with every cell right."""
    logits = head(encoder(images.float() / 255)[0])  # (B, 9, C)
    out, right, start = {}, torch.ones(labels.shape[:2], dtype=torch.bool), 0
    for k, (name, n) in enumerate(CELL_FIELDS):
        hit = logits[..., start:start + n].argmax(-1) == labels[..., k]  # (B, 9)
        out[name] = hit.float().mean().item()
        right &= hit
        start += n
    out["all_cells"] = right.all(dim=1).float().mean().item()
    return out


@dataclass(frozen=True)
class PretrainConfig:
    d_model: int = 64  # width of the encoder's tokens
    steps: int = 800  # optimizer steps (99% of ci validation images fully right after 800)
    batch_size: int = 32  # images per step
    lr: float = 3e-3  # peak learning rate
    warmup: int = 50  # warm-up steps
    seed: int = 0  # initial weights and batch order


def _digest(shapes_digest: str, cfg: PretrainConfig) -> str:
    blob = json.dumps({"data": shapes_digest, "config": asdict(cfg), "version": PRETRAIN_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def split_tensors(shapes_root, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 3, H, W) and cell labels (n, 9, 3) of a shapes split."""
    from ..data.shapes import read_scenes, shapes_split

    ds = shapes_split(shapes_root, split, image_size=image_size)
    scenes = read_scenes(shapes_root, split)
    images = torch.stack([ds.get_uint8(i)[0] for i in range(len(ds))])
    labels = torch.stack([cell_labels(scenes[i]) for i in ds.image_ids])
    return images, labels


def pretrain_shapes_encoder(shapes_root, image_size: int, cfg: PretrainConfig = PretrainConfig(),
                            progress: bool = True) -> tuple[CNNEncoder, CellAttributeHead, list[dict]]:
    """Train a ``CNNEncoder`` and its cell head on a shapes training split with the engine."""
    from ..data.loader import tensor_batches
    from ..engine import TrainConfig, fit

    images, labels = split_tensors(shapes_root, "train", image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = CNNEncoder(CNNEncoderConfig(d_model=cfg.d_model, image_size=image_size))
        head = CellAttributeHead(cfg.d_model)
    model = nn.ModuleDict({"encoder": encoder, "head": head})

    def loss_fn(m, batch):
        logits = m["head"](m["encoder"](batch["images"].float() / 255)[0])
        return cell_attribute_loss(logits, batch["labels"]), torch.tensor(batch["labels"].shape[0] * 9)

    train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                        seed=cfg.seed, log_every=max(1, cfg.steps // 8))
    batches = tensor_batches({"images": images, "labels": labels}, cfg.batch_size, cfg.seed, cfg.steps)
    history = fit(model, loss_fn, batches, train, progress=progress, desc="pretraining the encoder",
                  unit="images")
    return encoder.eval(), head.eval(), history


def pretrained_shapes_encoder(shapes_cfg, cfg: PretrainConfig = PretrainConfig(), progress: bool = True,
                              cache_dir=None) -> tuple[CNNEncoder, CellAttributeHead, str]:
    """The pretrained encoder and head for the shapes data of ``shapes_cfg`` (a ``ShapesConfig``),
    and the file they came from: the course's shipped weights, the cache, or trained now."""
    from ..data.shapes import ensure_shapes
    from ..profiles import data_dir

    name = f"shapes_cnn-{_digest(shapes_cfg.digest(), cfg)}.pt"
    cache = Path(cache_dir) if cache_dir is not None else data_dir() / "pretrained"
    for path in (REPO_PRETRAINED / name, cache / name):
        if path.is_file():
            return (*load_pretrained(path), str(path))
    root = ensure_shapes(shapes_cfg, progress=progress)
    encoder, head, history = pretrain_shapes_encoder(root, shapes_cfg.image_size, cfg, progress)
    cache.mkdir(parents=True, exist_ok=True)
    from ..engine.checkpoint import save_checkpoint

    save_checkpoint(cache / name, {
        "encoder": encoder.state_dict(), "head": head.state_dict(), "image_size": shapes_cfg.image_size,
        "config": asdict(cfg), "shapes": asdict(shapes_cfg), "history": history})
    return encoder, head, str(cache / name)


def load_pretrained(path) -> tuple[CNNEncoder, CellAttributeHead]:
    from ..engine.checkpoint import load_checkpoint

    state = load_checkpoint(path, required=("encoder", "head", "image_size", "config"))
    cfg = PretrainConfig(**state["config"])
    encoder = CNNEncoder(CNNEncoderConfig(d_model=cfg.d_model, image_size=state["image_size"]))
    head = CellAttributeHead(cfg.d_model)
    encoder.load_state_dict(state["encoder"])
    head.load_state_dict(state["head"])
    return encoder.eval(), head.eval()


def main(argv=None) -> None:
    """Make the shipped weights: ``python -m velm_course.vision.pretrain [--profile ci]``."""
    import argparse
    import shutil

    from ..data.shapes import ShapesConfig
    from ..profiles import get_profile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    # the notebooks' in-distribution data, and the main job's, which holds colour-shape pairs out
    # of training for its compositional split (so its encoder must never see them either)
    configs = {ShapesConfig.from_profile(profile),
               ShapesConfig.from_profile(profile, n_compositional=profile.run.data.n_compositional)}
    REPO_PRETRAINED.mkdir(parents=True, exist_ok=True)
    for shapes_cfg in sorted(configs, key=lambda c: c.n_compositional):
        _, _, path = pretrained_shapes_encoder(shapes_cfg)
        if Path(path).parent != REPO_PRETRAINED:
            shutil.copy(path, REPO_PRETRAINED / Path(path).name)
        print("wrote", REPO_PRETRAINED / Path(path).name)


if __name__ == "__main__":
    main()
