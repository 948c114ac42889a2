"""Evaluation: caption metrics equal to pycocoevalcap's, scoring a captioner on a split,
Recall@K for image-text retrieval, and VQA accuracy."""

from .captioning import caption_images, score_split
from .coco_eval import evaluate_captions, read_results, write_results
from .metrics import CiderD, bleu, cider_d, rouge_l, score_captions, tokenize_caption
from .ptb import ptb_tokenize
from .retrieval import chance_recall, recall_at_k
from .scene import (
    Mention,
    ParsedCaption,
    count_accuracy,
    exact_scene,
    hallucination_rate,
    parse_scene,
    relation_accuracy,
    scene_f1,
    scene_scores,
)
from .vqa import majority_answers, normalize_answer, score_vqa, vqa_accuracy

__all__ = ["caption_images", "score_split", "bleu", "cider_d", "rouge_l", "score_captions",
           "tokenize_caption", "recall_at_k", "chance_recall"]
__all__ += ["Mention", "ParsedCaption", "parse_scene", "scene_f1", "exact_scene", "count_accuracy",
            "relation_accuracy", "hallucination_rate", "scene_scores"]
__all__ += ["evaluate_captions", "read_results", "write_results", "CiderD", "ptb_tokenize"]
__all__ += ["majority_answers", "normalize_answer", "score_vqa", "vqa_accuracy"]
