"""Run profiles: one place that decides how big everything is.

The course runs the same cells in two settings. ``ci`` (the default on a CPU) keeps every
notebook to about a minute on two cores; ``full`` is for a GPU session (Colab, a workstation)
and uses bigger data, wider models and more steps. Pick one with the environment variable
``VELM_PROFILE``; nothing else in the package reads the environment for sizes.

A profile is a preset: the main job's ``RunConfig`` (data, model, training, evaluation) and
the sizes the notebooks use (``NotebookSizes``), so no notebook asks which profile it runs in.

>>> get_profile("ci").image_size
64
>>> get_profile("ci", steps=10).run.train.steps
10
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

PROFILE_ENV = "VELM_PROFILE"
DATA_DIR_ENV = "VELM_DATA_DIR"


@dataclass(frozen=True)
class NotebookSizes:
    bpe_train_chars: int  # 02: characters of Shakespeare the tokenizers train on
    rnn_hidden: int  # 03: LSTM hidden size
    rnn_layers: int  # 03: stacked LSTM layers
    rnn_dropout: float  # 03: dropout of the LSTM language model
    rnn_steps: int  # 03: optimizer steps of the character LSTM
    rnn_batch_size: int  # 03: windows per step
    rnn_block_size: int  # 03: characters per window
    rnn_lr: float  # 03: peak learning rate
    cell_steps: int  # 03: optimizer steps of each run of the RNN / GRU / LSTM comparison
    mlp_steps: int  # 03: optimizer steps of each run of the MLP against the n-gram
    compare_seeds: int  # 03: seeds per compared row of those two comparisons
    gpt_layers: int  # 04: Transformer blocks of the character GPT
    gpt_width: int  # 04: its width (n_embd)
    gpt_block: int  # 04: its context, in characters
    gpt_batch: int  # 04: training windows per step
    gpt_steps: int  # 04: its optimizer steps
    lstm_hidden: int  # 04: hidden size of the LSTM trained with the GPT's compute (steps follow)
    bert_steps: int  # 04: optimizer steps of the masked-LM training (the BERT has the GPT's size)
    fusion_d_model: int  # 07-08: width of the fusion models (the pretrained encoder's too)
    fusion_steps: int  # 07: optimizer steps of each fusion captioner
    fusion_seeds: int  # 07-08: seeds per compared row, for the spread
    joint_steps: int  # 08: optimizer steps of each run of the loss-weight sweep
    vqa_pretrain_steps: int  # 11: optimizer steps of pretraining on the captions (shipped for ci)
    vqa_steps: int  # 11: optimizer steps of each VQA run on all training questions


@dataclass(frozen=True)
class Profile:
    name: str  # "ci" or "full"
    run: RunConfig  # the main job: data, model, training and evaluation settings
    notebooks: NotebookSizes  # what the notebooks train, at this profile's size

    # shortcuts for what notebooks read most
    @property
    def seed(self) -> int:
        return self.run.train.seed

    @property
    def device(self) -> str:
        """"cuda" when the run asks for it (or for "auto") and a GPU is present, else "cpu"."""
        dev = self.run.train.device
        if dev == "cpu":
            return "cpu"
        import torch  # heavy import only when a GPU may be asked for

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def image_size(self) -> int:
        return self.run.data.image_size

    @property
    def n_train(self) -> int:
        return self.run.data.n_train

    @property
    def notebook_data(self) -> DataConfig:
        """The main job's data settings without its compositional hold-out: the in-distribution
        shapes data the notebooks before chapter 09 use (the same as ``ShapesConfig.from_profile``).

        >>> get_profile("ci").notebook_data.n_compositional
        0
        """
        return replace(self.run.data, n_compositional=0)


_PROFILES = {
    "ci": Profile(
        name="ci",
        run=RunConfig(
            data=DataConfig(image_size=64, n_train=4000, n_val=200, n_test=300, n_compositional=200),
            # no dropout: on 4,000 images for 2,400 steps, dropout 0.1 ended at validation loss
            # 0.505 nats per token against 0.459 without (benchmarks/HISTORY.md, the main job)
            model=ModelConfig(d_model=128, n_layer=2, n_head=4, dropout=0.0),
            train=TrainConfig(steps=2400, batch_size=32, lr=2e-3, warmup=100, device="cpu",
                              patience=2, log_every=25, val_every=400, val_batches=4),
            profile="ci",
        ),
        notebooks=NotebookSizes(
            bpe_train_chars=300_000, rnn_hidden=128, rnn_layers=1, rnn_dropout=0.0, rnn_steps=400,
            rnn_batch_size=32, rnn_block_size=64, rnn_lr=1e-2, cell_steps=200, mlp_steps=1000,
            compare_seeds=2, gpt_layers=2, gpt_width=64, gpt_block=64,
            gpt_batch=32, gpt_steps=600, lstm_hidden=128, bert_steps=600,
            fusion_d_model=64, fusion_steps=300, fusion_seeds=2, joint_steps=300,
            vqa_pretrain_steps=2000, vqa_steps=300,
        ),
    ),
    "full": Profile(
        name="full",
        run=RunConfig(
            data=DataConfig(image_size=128, n_train=40000, n_val=1000, n_test=1000, n_compositional=1000, num_workers=4),
            model=ModelConfig(d_model=256, n_layer=4, n_head=8),
            train=TrainConfig(steps=20000, batch_size=128, lr=1e-3, warmup=100, device="auto",
                              patience=3, log_every=100, val_every=1000),
            profile="full",
        ),
        notebooks=NotebookSizes(
            bpe_train_chars=2_000_000, rnn_hidden=512, rnn_layers=2, rnn_dropout=0.2, rnn_steps=5000,
            rnn_batch_size=64, rnn_block_size=128, rnn_lr=2e-3, cell_steps=3000, mlp_steps=10000,
            compare_seeds=3, gpt_layers=6, gpt_width=384, gpt_block=256,
            gpt_batch=64, gpt_steps=5000, lstm_hidden=1024, bert_steps=5000,
            fusion_d_model=128, fusion_steps=3000, fusion_seeds=3, joint_steps=2000,
            vqa_pretrain_steps=10000, vqa_steps=6000,
        ),
    ),
}
PROFILE_NAMES = tuple(_PROFILES)

# What a dataset changes in a profile. Real COCO on a GPU (the full profile) gets the recipe of
# notebook 12: CLIP ViT-B/32's frozen grid features, computed once into the feature cache, read
# by a pretrained GPT-2 through cross-attention (the ClipCap pairing, with cross-attention in
# place of its prefix). ~4.5 passes over COCO's 566k training captions. Not measured: the course
# is built without COCO or a GPU (README, "COCO Captions"). Options given on the command line
# still win.
_COCO_RECIPE = dict(
    image_size=224, min_word_count=5, max_words=16, num_workers=8,
    encoder="clip", pretrained=True, freeze_encoder=True, feature_cache=True, decoder="gpt2",
    batch_size=128, lr=1e-4, warmup=1000, steps=20_000, val_every=2000, val_batches=40, checkpoint_every=1000,
)
DATASET_PRESETS = {("full", "coco"): _COCO_RECIPE, ("full", "coco2017"): _COCO_RECIPE}


def with_overrides(run: RunConfig, **overrides) -> RunConfig:
    """``run`` with fields replaced by name, whichever section holds them.

    >>> with_overrides(RunConfig(), steps=5, encoder="course_vit").model.encoder
    'course_vit'
    """
    sections = {s: getattr(run, s) for s in ("data", "model", "train", "eval")}
    changes: dict[str, dict] = {s: {} for s in sections}
    for key, value in overrides.items():
        owners = [s for s, sec in sections.items() if key in {f.name for f in fields(sec)}]
        if not owners:
            raise TypeError(f"no run setting is called {key!r}")
        changes[owners[0]][key] = value
    return replace(run, **{s: replace(sec, **changes[s]) for s, sec in sections.items()})


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile named ``name`` (default: ``$VELM_PROFILE``, else ``ci``), with run settings
    overridden by field name (``steps=10``, ``n_train=500``, ...). A ``dataset`` with a preset
    in this profile (``DATASET_PRESETS``: COCO in the full profile) brings the preset first.

    >>> get_profile("full", dataset="coco").run.model.decoder
    'gpt2'
    >>> get_profile("full", dataset="coco", steps=5).run.train.steps
    5
    """
    name = name or os.environ.get(PROFILE_ENV, "ci")
    if name not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}: set {PROFILE_ENV} to one of {sorted(_PROFILES)}")
    profile = _PROFILES[name]
    preset = DATASET_PRESETS.get((name, overrides.get("dataset")), {})
    overrides = {**preset, **overrides}
    return replace(profile, run=with_overrides(profile.run, **overrides)) if overrides else profile


def data_dir() -> Path:
    """Where data lives: ``$VELM_DATA_DIR``, else the repository's ``data/`` folder.

    Generated data goes into ``<data_dir>/generated/`` (git-ignored). When the package is
    installed outside a checkout, the default is ``~/.cache/velm_course``.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    repo_data = Path(__file__).resolve().parent.parent / "data"
    if repo_data.is_dir():
        return repo_data
    return Path.home() / ".cache" / "velm_course"
