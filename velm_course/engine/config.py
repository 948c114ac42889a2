"""The typed, versioned run configuration: data, model, training and evaluation settings.

A run folder's ``config.json`` and every checkpoint hold ``RunConfig.to_dict()``; reading one
back goes through ``RunConfig.from_dict``, which names the file and the field when something
is missing, unknown or of the wrong type. The CLI builds its options from these fields, and
the profiles (``velm_course.profiles``) are presets of them.

On resume, ``resume_conflicts`` lists the settings that may not change: anything in ``data``
or ``model`` (the weights would not fit the data or the architecture), and the training
settings that shape the optimisation. Raising the step count is allowed.

>>> cfg = RunConfig()
>>> RunConfig.from_dict(cfg.to_dict()) == cfg
True
>>> resume_conflicts(cfg.to_dict(), RunConfig(train=TrainConfig(steps=9999)).to_dict())
[]
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

CONFIG_VERSION = 2  # bump when a field changes meaning; older run folders are then refused

DATASETS = ("shapes", "coco", "coco2017")
DECODERS = ("course", "gpt2")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A config file or dict that cannot be used; the message names the file and the field."""


@dataclass
class DataConfig:
    dataset: str = "shapes"  # a name in velm_course.data.registry: "shapes", "coco" or "coco2017"
    root: str | None = None  # dataset folder; None: the default under $VELM_DATA_DIR
    image_size: int = 64  # side of the square images the model sees
    n_train: int = 4000  # shapes only: generated training images
    n_val: int = 200  # shapes only: validation images
    n_test: int = 300  # shapes only: test images
    n_compositional: int = 0  # shapes only: images of held-out colour-shape pairs (0: hold none out)
    min_word_count: int = 1  # words seen fewer times in training captions become <unk>
    max_words: int | None = None  # longest caption in words; None: the longest training caption
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    in_memory: bool = True  # decode every image once into RAM, if the split fits in 2 GiB decoded


@dataclass
class ModelConfig:
    encoder: str = "small_cnn"  # image encoder, see velm_course.vision.encoders.ENCODER_NAMES
    pretrained: bool = False  # load the encoder's ImageNet weights
    freeze_encoder: bool = False  # keep the encoder's weights fixed
    # with freeze_encoder: run the encoder once over every image into an on-disk cache (fp16
    # shards under $VELM_DATA_DIR/features, reused by later runs) and train a projection and the
    # decoder on the cached features; a step then costs the decoder's alone
    feature_cache: bool = False
    d_model: int = 128  # width of image tokens, word embeddings and every block
    n_layer: int = 2  # decoder blocks
    n_head: int = 4  # attention heads per block
    dropout: float = 0.1  # dropout in the decoder while training
    fusion: str = "cross_attention"  # where the image enters the decoder: concat, prefix, cross_attention, co_attention
    # "gpt2": Hugging Face's GPT-2 reads the image through cross-attention, starting from
    # gpt2_name's weights (pretrained where they load; offline, RANDOM weights over the caption
    # words sized by d_model, n_layer, n_head, with a warning); d_model, n_layer, n_head then
    # size only that fallback, and fusion must be cross_attention
    decoder: str = "course"  # "course" (the course's Transformer decoder) or "gpt2"
    gpt2_name: str = "gpt2"  # decoder gpt2: a hub name (gpt2, gpt2-medium...) or a save_pretrained folder


@dataclass
class TrainConfig:
    steps: int = 2400  # optimizer steps
    batch_size: int = 32  # examples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-3  # peak learning rate
    warmup: int = 100  # steps of linear warm-up from 0 to lr
    min_lr_ratio: float = 0.05  # the cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay (matrices only)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    seed: int = 0  # seeds initialisation, data order and dropout
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda" or "cuda:N"
    precision: str = "auto"  # "auto" (bf16/fp16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16"
    compile: bool = False  # torch.compile the model (falls back to eager if it fails)
    checkpoint_every: int = 200  # steps between checkpoints (0: only at the end)
    checkpoint_minutes: float = 10.0  # also save when this long has passed since the last save
    keep_last: int = 2  # step checkpoints kept besides checkpoint.pt and best.pt
    log_every: int = 50  # steps between host synchronisations: logged loss, throughput
    val_every: int = 0  # steps between validation-loss measurements (0: never)
    val_batches: int = 4  # validation batches per measurement
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard
    patience: int = 0  # stop after this many validations without a lower validation loss (0: never)


@dataclass
class EvalConfig:
    batch_size: int = 256  # images per generation batch
    n_samples: int = 8  # test images drawn in samples.png


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    profile: str = "ci"  # the preset these settings started from
    version: int = CONFIG_VERSION  # schema version of this config

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, source: str = "config") -> RunConfig:
        """Rebuild from ``to_dict()`` output; ``source`` (a file name) goes into error messages."""
        return _from_dict(cls, d, source, "")

    @classmethod
    def load(cls, path) -> RunConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(d, source=str(path))

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def digest(self) -> str:
        """A short hash of the settings that define the model and its data."""
        return config_digest({"data": asdict(self.data), "model": asdict(self.model)})


def config_digest(config: dict) -> str:
    """A short, order-independent hash of a JSON-able config dict.

    >>> config_digest({"a": 1, "b": 2}) == config_digest({"b": 2, "a": 1})
    True
    """
    key = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


# fields added after a config version, whose default reproduces what configs written before
# them did: such a config (a run folder, a recorded experiment) still loads, with the default
ADDED_FIELDS = {"model.feature_cache", "model.decoder", "model.gpt2_name"}


def _from_dict(cls, d, source: str, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be an object, got {type(d).__name__}")
    if cls is RunConfig and "version" in d and d["version"] != CONFIG_VERSION:
        # before the fields: an older schema has other fields, and its version says why
        raise ConfigError(f"{source}: config version {d['version']!r} is not this package's "
                          f"{CONFIG_VERSION}; start a new run")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {[prefix + u for u in unknown]}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d and prefix + f.name in ADDED_FIELDS:
            continue  # written before the field existed: its default is what that run did
        if f.name not in d:
            raise ConfigError(f"{source}: missing field {prefix + f.name!r}")
        value, tp = d[f.name], hints[f.name]
        if is_dataclass(tp):
            value = _from_dict(tp, value, source, prefix + f.name + ".")
        elif not _type_ok(value, tp):
            raise ConfigError(f"{source}: field {prefix + f.name!r} should be {tp}, got {value!r}")
        kwargs[f.name] = value
    if cls is RunConfig and kwargs["version"] != CONFIG_VERSION:
        raise ConfigError(f"{source}: config version {kwargs['version']} is not this package's "
                          f"{CONFIG_VERSION}; start a new run")
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None


def validate(cfg: RunConfig) -> None:
    """Raise ValueError naming every setting out of range (zero or negative sizes, unknown names)."""
    from ..multimodal.fusion import FUSION_KINDS
    from ..vision.encoders import ENCODER_NAMES

    problems = []
    positive = {
        "data.image_size": cfg.data.image_size, "data.n_train": cfg.data.n_train,
        "data.n_val": cfg.data.n_val, "data.n_test": cfg.data.n_test,
        "data.min_word_count": cfg.data.min_word_count,
        "model.d_model": cfg.model.d_model, "model.n_layer": cfg.model.n_layer,
        "model.n_head": cfg.model.n_head, "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size, "train.grad_accum": cfg.train.grad_accum,
        "train.log_every": cfg.train.log_every, "train.val_batches": cfg.train.val_batches,
        "eval.batch_size": cfg.eval.batch_size,
    }
    problems += [f"{k} must be >= 1, got {v}" for k, v in positive.items() if v < 1]
    non_negative = {
        "data.num_workers": cfg.data.num_workers, "train.warmup": cfg.train.warmup,
        "train.checkpoint_every": cfg.train.checkpoint_every, "train.keep_last": cfg.train.keep_last,
        "train.val_every": cfg.train.val_every, "train.grad_clip": cfg.train.grad_clip,
        "train.weight_decay": cfg.train.weight_decay, "eval.n_samples": cfg.eval.n_samples,
        "data.n_compositional": cfg.data.n_compositional,
        "train.checkpoint_minutes": cfg.train.checkpoint_minutes, "train.patience": cfg.train.patience,
    }
    problems += [f"{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    if cfg.data.max_words is not None and cfg.data.max_words < 1:
        problems.append(f"data.max_words must be >= 1 or null, got {cfg.data.max_words}")
    if not cfg.train.lr > 0:
        problems.append(f"train.lr must be > 0, got {cfg.train.lr}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        problems.append(f"model.dropout must be in [0, 1), got {cfg.model.dropout}")
    if cfg.model.d_model >= 1 and cfg.model.n_head >= 1 and cfg.model.d_model % cfg.model.n_head:
        problems.append(f"model.d_model={cfg.model.d_model} must be divisible by model.n_head={cfg.model.n_head}")
    if cfg.data.dataset not in DATASETS:
        problems.append(f"unknown data.dataset {cfg.data.dataset!r}: choose from {list(DATASETS)}")
    if cfg.model.fusion not in FUSION_KINDS:
        problems.append(f"unknown model.fusion {cfg.model.fusion!r}: choose from {list(FUSION_KINDS)}")
    if cfg.model.encoder not in ENCODER_NAMES:
        problems.append(f"unknown model.encoder {cfg.model.encoder!r}: choose from {list(ENCODER_NAMES)}")
    if cfg.model.decoder not in DECODERS:
        problems.append(f"unknown model.decoder {cfg.model.decoder!r}: choose from {list(DECODERS)}")
    elif cfg.model.decoder == "gpt2" and cfg.model.fusion != "cross_attention":
        problems.append(f"model.decoder 'gpt2' reads the image through cross-attention only, not "
                        f"{cfg.model.fusion}: set model.fusion to cross_attention")
    if cfg.model.feature_cache and not cfg.model.freeze_encoder:
        problems.append("model.feature_cache needs model.freeze_encoder: only a frozen encoder's features "
                        "stay the same from one step to the next")
    if cfg.train.precision not in PRECISIONS:
        problems.append(f"unknown train.precision {cfg.train.precision!r}: choose from {list(PRECISIONS)}")
    if not (cfg.train.device in ("auto", "cpu", "cuda", "mps") or cfg.train.device.startswith("cuda:")):
        problems.append(f"unknown train.device {cfg.train.device!r}: use auto, cpu, cuda or cuda:N")
    if problems:
        raise ValueError("; ".join(problems))


# settings that may differ between a run and its resumption: how long to train, how often to
# save or log, and where it runs; everything else must match the checkpoint
RESUMABLE_CHANGES = {
    "train.steps", "train.checkpoint_every", "train.checkpoint_minutes", "train.keep_last",
    "train.log_every", "train.tensorboard", "train.device", "train.compile", "data.num_workers",
    "data.root", "eval.batch_size", "eval.n_samples",
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def resume_conflicts(saved: dict, new: dict) -> list[str]:
    """The fields whose change would make a resumed run a different run, as "name: old -> new"."""
    a, b = _flatten(saved), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES]


def field_help(cls) -> dict[str, tuple[object, str]]:
    """{field name: (default, the comment after it)} of a config dataclass, for the CLI's help."""
    import inspect

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        name, _, rest = line.strip().partition(":")
        if "#" in rest and name.isidentifier():
            comments[name] = rest.split("#", 1)[1].strip()
    return {f.name: (f.default if f.default is not MISSING else None, comments.get(f.name, ""))
            for f in fields(cls)}
