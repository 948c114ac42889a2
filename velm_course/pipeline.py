"""The main job: generate the shapes data, train a captioner and its blind twin, score both.

``velm-course train`` and ``make run`` call :func:`train_and_evaluate`; notebook 00 calls it
too, on a very small setting. Everything a run produces lands in one folder:

    runs/<timestamp>/
        config.json            every setting, resolved (profile, data, model, training, vocabulary)
        checkpoint.pt          the captioner (written during training too, for resuming)
        baseline_checkpoint.pt the blind baseline
        metrics.json           test-split scores: model, blind baseline, oracle
        captions_test.json     the generated test captions
        loss_curve.png, samples.png

Run it again with ``resume=<run folder>`` after an interruption and it continues from the
last checkpoint with the same settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import torch

from .captioner import Captioner, CaptionerConfig
from .data.coco import shapes_split
from .data.shapes import ShapesConfig, ensure_shapes
from .evaluate import caption_images, oracle_captions, score_split
from .plots import plot_caption_grid, plot_loss_curves
from .profiles import Profile, get_profile
from .train import CaptionTensors, TrainConfig, train_captioner
from .vocab import CaptionVocab


def configs_from_profile(profile: Profile) -> dict:
    """The resolved settings of a run, as plain JSON-able dicts (vocabulary filled in later)."""
    train = TrainConfig(
        steps=profile.steps, batch_size=profile.batch_size, lr=profile.lr,
        warmup=max(1, min(100, profile.steps // 10)), seed=profile.seed, device=profile.device,
    )
    return {
        "profile": profile.to_dict(),
        "data": asdict(ShapesConfig.from_profile(profile)),
        "model": {"d_model": profile.d_model, "n_layer": profile.n_layer, "n_head": profile.n_head,
                  "image_size": profile.image_size},
        "train": train.to_dict(),
        "baseline_train": replace(train, steps=profile.blind_steps, warmup=max(1, profile.blind_steps // 10)).to_dict(),
    }


def _new_run_dir(runs_dir: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 100))]:
        path = Path(runs_dir) / (stamp + suffix)
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise RuntimeError(f"could not make a new run folder in {runs_dir}")


def _scenes(dataset_root: Path, split: str) -> dict[int, list[dict]]:
    """The drawn objects of every image in a split, by image id."""
    ann = json.loads((Path(dataset_root) / "annotations" / f"captions_{split}.json").read_text())
    return {img["id"]: img["objects"] for img in ann["images"]}


def train_and_evaluate(
    profile: Profile | None = None,
    runs_dir: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool = True,
    n_samples: int = 8,
) -> Path:
    """Run the whole job and return the run folder (see the module docstring)."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").exists():
            raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json to resume from")
        config = json.loads((run_dir / "config.json").read_text())
    else:
        config = configs_from_profile(profile or get_profile())
        run_dir = _new_run_dir(Path(runs_dir))
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    seed = config["train"]["seed"]

    root = ensure_shapes(ShapesConfig(**config["data"]))
    image_size = config["data"]["image_size"]
    train_set = shapes_split(root, "train", image_size=image_size)
    test_set = shapes_split(root, "test", image_size=image_size)
    if "vocab" not in config:
        all_train_refs = [c for refs in train_set.captions_by_id().values() for c in refs]
        config["vocab"] = CaptionVocab.build(all_train_refs).to_list()
        config["max_words"] = max(len(c.split()) for c in all_train_refs)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    vocab = CaptionVocab(config["vocab"])
    train_data = CaptionTensors.from_dataset(train_set, vocab, config["max_words"], progress=progress)
    test_data = CaptionTensors.from_dataset(test_set, vocab, progress=progress)

    model_cfg = CaptionerConfig(vocab_size=len(vocab), max_len=config["max_words"] + 2, **config["model"])
    models, histories, seconds = {}, {}, {}
    for name, blind, train_key, ckpt in [
        ("model", False, "train", "checkpoint.pt"),
        ("baseline", True, "baseline_train", "baseline_checkpoint.pt"),
    ]:
        torch.manual_seed(seed)  # same initialisation on every run and every resume
        models[name] = Captioner(replace(model_cfg, blind=blind))
        t0 = time.perf_counter()
        histories[name] = train_captioner(
            models[name], train_data, TrainConfig(**config[train_key]), checkpoint=run_dir / ckpt,
            progress=progress, desc=f"training {'blind baseline' if blind else 'captioner'}",
        )
        seconds[name] = time.perf_counter() - t0

    references = dict(zip(test_data.image_ids, test_data.captions, strict=True))
    scenes = _scenes(root, "test")
    generated = {name: dict(zip(test_data.image_ids, caption_images(m, test_data.images, vocab), strict=True))
                 for name, m in models.items()}
    metrics = {"split": "test", "n_images": len(test_data), **score_split(generated["model"], references, scenes)}
    metrics["baseline"] = score_split(generated["baseline"], references, scenes)
    metrics["oracle"] = score_split(oracle_captions(scenes), references, scenes)
    metrics["vision_gain_cider"] = metrics["CIDEr"] / max(metrics["baseline"]["CIDEr"], 1e-9)
    metrics["skipped_images"] = {"train": train_set.num_skipped, "test": test_set.num_skipped}
    metrics["train_seconds"] = seconds
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "captions_test.json").write_text(json.dumps(
        [{"image_id": i, "caption": generated["model"][i], "baseline": generated["baseline"][i]}
         for i in test_data.image_ids], indent=2))

    import matplotlib.pyplot as plt

    plt.close(plot_loss_curves({"captioner": histories["model"], "blind baseline": histories["baseline"]},
                               run_dir / "loss_curve.png"))
    k = min(n_samples, len(test_data))
    plt.close(plot_caption_grid(test_data.images[:k], [generated["model"][i] for i in test_data.image_ids[:k]],
                                test_data.captions[:k], run_dir / "samples.png"))
    return run_dir
