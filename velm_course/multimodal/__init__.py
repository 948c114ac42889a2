"""Models that read images and write text: the captioner (fusion and VQA models join it here)."""

from .captioner import CaptionDecoding, Captioner, CaptionerConfig
from .hf_gpt2 import (
    GPT2Captioner,
    GPT2CaptionerConfig,
    GPT2CaptionTokenizer,
    gpt2_config_for,
    load_gpt2,
)
from .scst import SCSTImages, caption_mask, collate_images, scst_loss, scst_loss_fn

__all__ = ["Captioner", "CaptionerConfig"]
__all__ += ["CaptionDecoding", "GPT2CaptionerConfig", "GPT2Captioner", "GPT2CaptionTokenizer", "gpt2_config_for",
            "load_gpt2", "SCSTImages", "caption_mask", "collate_images", "scst_loss", "scst_loss_fn"]
