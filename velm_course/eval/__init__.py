"""Evaluation: caption metrics equal to pycocoevalcap's, and scoring a captioner on a split."""

from .captioning import caption_images, score_split
from .metrics import bleu, cider_d, rouge_l, score_captions, tokenize_caption

__all__ = ["caption_images", "score_split", "bleu", "cider_d", "rouge_l", "score_captions",
           "tokenize_caption"]
