"""Run profiles: one place that decides how big everything is.

The course runs the same cells in two settings. ``ci`` (the default on a CPU) keeps every
notebook to about a minute on two cores; ``full`` is for a GPU session (Colab, a workstation)
and uses bigger data, wider models and more steps. Pick one with the environment variable
``VELM_PROFILE``; nothing else in the package reads the environment for sizes.

>>> get_profile("ci").image_size
64
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

PROFILE_ENV = "VELM_PROFILE"
DATA_DIR_ENV = "VELM_DATA_DIR"


@dataclass(frozen=True)
class Profile:
    name: str  # "ci" or "full"
    device: str  # "cpu", or "cuda" when the full profile finds a GPU
    seed: int  # one seed for data generation, initialisation and batching
    # synthetic "shapes" captioning data
    image_size: int  # side of the square generated images, in pixels
    n_train: int  # training images (each has 5 reference captions)
    n_val: int  # validation images
    n_test: int  # held-out test images, scored in metrics.json
    # captioning model
    d_model: int  # width of the image tokens and the decoder
    n_layer: int  # decoder blocks
    n_head: int  # attention heads per block
    # captioning training
    steps: int  # optimizer steps for the main model
    blind_steps: int  # optimizer steps for the image-blind baseline
    batch_size: int  # images per step (one of their 5 captions is drawn per image); on a CPU,
    # more small steps learned shapes better than fewer big ones for the same time
    lr: float  # peak AdamW learning rate (linear warm-up, cosine decay)

    def to_dict(self) -> dict:
        return asdict(self)


_PROFILES = {
    "ci": Profile(
        name="ci", device="cpu", seed=0,
        image_size=64, n_train=4000, n_val=200, n_test=300,
        d_model=128, n_layer=2, n_head=4,
        steps=2400, blind_steps=200, batch_size=32, lr=2e-3,
    ),
    "full": Profile(
        name="full", device="cuda", seed=0,
        image_size=128, n_train=40000, n_val=1000, n_test=1000,
        d_model=256, n_layer=4, n_head=8,
        steps=20000, blind_steps=2000, batch_size=128, lr=1e-3,
    ),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile named ``name`` (default: ``$VELM_PROFILE``, else ``ci``), with overrides.

    The full profile falls back to the CPU when no GPU is present, so it still runs
    (slowly) rather than failing.

    >>> get_profile("ci", steps=10).steps
    10
    """
    name = name or os.environ.get(PROFILE_ENV, "ci")
    if name not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}: set {PROFILE_ENV} to one of {sorted(_PROFILES)}")
    profile = _PROFILES[name]
    if profile.device == "cuda":
        import torch  # heavy import only when the full profile asks for a device

        if not torch.cuda.is_available():
            profile = replace(profile, device="cpu")
    return replace(profile, **overrides) if overrides else profile


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
