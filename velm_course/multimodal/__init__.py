"""Models that read images and text: the captioner, its GPT-2 variant, self-critical training,
and the VQA model (fusion, losses, the dual encoder and the pretrainer live in their own modules)."""

from .captioner import CaptionDecoding, Captioner, CaptionerConfig
from .hf_gpt2 import (
    GPT2Captioner,
    GPT2CaptionerConfig,
    GPT2CaptionTokenizer,
    gpt2_config_for,
    load_gpt2,
)
from .scst import SCSTImages, caption_mask, collate_images, scst_loss, scst_loss_fn
from .vqa import VQAConfig, VQAModel, answer_images, predict_answers, vqa_loss

__all__ = ["Captioner", "CaptionerConfig"]
__all__ += ["CaptionDecoding", "GPT2CaptionerConfig", "GPT2Captioner", "GPT2CaptionTokenizer", "gpt2_config_for",
            "load_gpt2", "SCSTImages", "caption_mask", "collate_images", "scst_loss", "scst_loss_fn"]
__all__ += ["VQAConfig", "VQAModel", "answer_images", "predict_answers", "vqa_loss"]
