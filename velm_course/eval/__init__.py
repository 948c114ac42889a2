"""Evaluation: caption metrics equal to pycocoevalcap's, scoring a captioner on a split, and
Recall@K for image-text retrieval."""

from .captioning import caption_images, score_split
from .metrics import bleu, cider_d, rouge_l, score_captions, tokenize_caption
from .retrieval import chance_recall, recall_at_k

__all__ = ["caption_images", "score_split", "bleu", "cider_d", "rouge_l", "score_captions",
           "tokenize_caption", "recall_at_k", "chance_recall"]
