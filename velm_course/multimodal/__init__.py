"""Models that read images and write text: the captioner (fusion and VQA models join it here)."""

from .captioner import Captioner, CaptionerConfig

__all__ = ["Captioner", "CaptionerConfig"]
