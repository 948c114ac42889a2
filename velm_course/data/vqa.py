"""Questions and answers as tensors: the answer vocabulary, question encoding, batches.

VQA is treated, as in most VQA models, as classification over a fixed answer vocabulary
built from the training answers. An answer outside it (a word never given in training) maps
to the reserved id ``UNK_ANSWER``: it carries no training loss, the model never predicts it
(``velm_course.multimodal.vqa.predict_answers`` masks it), so such a question always
counts as wrong, which is what it is.

Questions are encoded with a caption vocabulary (``CaptionVocab``): the same words, the same
normalisation and, for a model pretrained on captions, the same ids. A question word the
vocabulary lacks becomes <unk> (the model still answers, from the other words); an empty
question is an error.

Shape letters: Q questions, L question tokens (<bos> words <eos> padding), n images.

>>> answers = AnswerVocab.build(["yes", "no", "yes", "red"])
>>> answers.itos
['<unk>', 'yes', 'no', 'red']
>>> answers.encode("Yes"), answers.encode("purple")
(1, 0)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .captions import PAD, CaptionVocab, normalize_caption
from .coco import DatasetNotFoundError

UNK_ANSWER = 0  # the reserved id of an answer outside the vocabulary
UNK_ANSWER_TOKEN = "<unk>"


class AnswerVocab:
    """Answers (normalised with ``velm_course.eval.vqa.normalize_answer``) <-> class ids."""

    def __init__(self, answers: list[str]):
        if not answers or answers[0] != UNK_ANSWER_TOKEN:
            raise ValueError(f"an answer vocabulary starts with the reserved {UNK_ANSWER_TOKEN!r}")
        if len(set(answers)) != len(answers):
            raise ValueError("an answer vocabulary must not list an answer twice")
        self.itos = list(answers)
        self.stoi = {a: i for i, a in enumerate(self.itos)}

    @classmethod
    def build(cls, answers: Iterable[str], min_count: int = 1, max_size: int | None = None) -> AnswerVocab:
        """The answers seen at least ``min_count`` times, most frequent first (ties by spelling),
        at most ``max_size`` of them (VQA v2 models keep the top 3,129)."""
        from ..eval.vqa import normalize_answer

        counts = Counter(normalize_answer(a) for a in answers)
        kept = sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))
        return cls([UNK_ANSWER_TOKEN] + kept[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, answer: str) -> int:
        from ..eval.vqa import normalize_answer

        return self.stoi.get(normalize_answer(answer), UNK_ANSWER)

    def decode(self, index: int) -> str:
        return self.itos[int(index)]

    def to_list(self) -> list[str]:
        return list(self.itos)


def encode_questions(vocab: CaptionVocab, questions: Sequence[str], max_words: int) -> torch.Tensor:
    """(Q, max_words + 2) question tokens: <bos> words <eos> <pad>...; unknown words become
    <unk>. An empty question (no word once normalised) or one longer than ``max_words``
    words raises.

    >>> vocab = CaptionVocab.build(["what color is the star"])
    >>> ids = encode_questions(vocab, ["What color is the moon?"], 6)
    >>> [vocab.itos[i] for i in ids[0]]
    ['<bos>', 'what', 'color', 'is', 'the', '<unk>', '<eos>', '<pad>']
    """
    for i, q in enumerate(questions):
        if not normalize_caption(q):
            raise ValueError(f"question {i} is empty ({q!r}): there is nothing to answer")
    return vocab.encode_batch(list(questions), max_words)


def read_questions(root, split: str) -> list[dict]:
    """The questions of a generated shapes split: dicts with question_id, image_id, question,
    answer and type."""
    from .shapes import QUESTIONS_VERSION

    path = Path(root) / "annotations" / f"vqa_{split}.json"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"no VQA questions at {path}; generate the shapes dataset with "
            "velm_course.data.shapes.ensure_shapes(ShapesConfig(...))")
    data = json.loads(path.read_text())
    version = data.get("info", {}).get("questions_version", 1)
    if version != QUESTIONS_VERSION:
        raise DatasetNotFoundError(
            f"{path} holds questions of version {version}, not {QUESTIONS_VERSION}; "
            "ensure_shapes(ShapesConfig(...)) generates the folder again")
    return data["questions"]


def write_vqa_annotations(questions: Sequence[dict], path) -> None:
    """Shapes questions in the VQA v2 annotation format (one answer each, the type under
    "answer_type"), for ``velm_course.eval.vqa.read_vqa_annotations``."""
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"], "answer_type": q["type"],
                    "answers": [{"answer": q["answer"], "answer_confidence": "yes", "answer_id": 1}]}
                   for q in questions]
    Path(path).write_text(json.dumps({"annotations": annotations}) + "\n")


@dataclass
class VQATensors:
    """One split's questions, ready for batches. Images are rows of a feature table held
    elsewhere (``image`` indexes it), so an image asked about five times is stored once."""

    question: torch.Tensor  # (Q, L) question tokens
    answer: torch.Tensor  # (Q,) answer ids, UNK_ANSWER for answers outside the vocabulary
    image: torch.Tensor  # (Q,) row of the question's image in the split's feature table
    question_id: list[int]  # (Q,) the dataset's question ids
    types: list[str]  # (Q,) question types
    answers: list[str]  # (Q,) the reference answers as written

    def __len__(self) -> int:
        return len(self.question_id)

    @classmethod
    def build(cls, questions: Sequence[dict], image_ids: Sequence[int], vocab: CaptionVocab,
              answer_vocab: AnswerVocab, max_words: int) -> VQATensors:
        """``image_ids``: the split's images in the order of its feature table."""
        row = {int(i): r for r, i in enumerate(image_ids)}
        unknown = sorted({q["image_id"] for q in questions} - row.keys())
        if unknown:
            raise ValueError(f"questions about images not in the feature table: {unknown[:5]}")
        return cls(
            question=encode_questions(vocab, [q["question"] for q in questions], max_words),
            answer=torch.tensor([answer_vocab.encode(q["answer"]) for q in questions], dtype=torch.long),
            image=torch.tensor([row[q["image_id"]] for q in questions], dtype=torch.long),
            question_id=[q["question_id"] for q in questions],
            types=[q["type"] for q in questions],
            answers=[q["answer"] for q in questions],
        )

    def subset(self, rows: Sequence[int] | torch.Tensor) -> VQATensors:
        rows = torch.as_tensor(rows, dtype=torch.long)
        pick = rows.tolist()
        return VQATensors(self.question[rows], self.answer[rows], self.image[rows],
                          [self.question_id[r] for r in pick], [self.types[r] for r in pick],
                          [self.answers[r] for r in pick])

    def fraction(self, share: float, seed: int) -> VQATensors:
        """A random ``share`` of the questions (at least one), nested: for one seed, the 1 %
        subset lies inside the 10 % subset, which lies inside the whole."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[: max(1, round(share * len(self)))].sort().values)


def vqa_batches(data: VQATensors, grid: torch.Tensor, pooled: torch.Tensor, batch_size: int,
                seed: int, steps: int, grad_accum: int = 1):
    """``batches(start_step)`` for the engine: {"grid" (B, N, Dv), "pooled" (B, Dv), "question"
    (B, L') cut to the batch's longest question, "answer" (B,)}, a function of (seed, step) so
    a resumed run sees the same ones.

    grid (n, N, Dv), pooled (n, Dv): the split's image features, row r for image row r.
    """
    from .loader import tensor_batches

    if grid.shape[0] != pooled.shape[0] or int(data.image.max()) >= grid.shape[0]:
        raise ValueError(f"the questions index {int(data.image.max()) + 1} image rows; the features "
                         f"have {grid.shape[0]} (grid) and {pooled.shape[0]} (pooled)")
    inner = tensor_batches({"question": data.question, "answer": data.answer, "image": data.image},
                           batch_size, seed, steps, grad_accum)

    def batches(start_step: int):
        for b in inner(start_step):
            rows = b.pop("image")  # (B,)
            # cut the padding columns no question of the batch reaches: the question encoder
            # masks padding, so the result is the same, for less work
            width = int((b["question"] != PAD).sum(dim=1).max())
            b["question"] = b["question"][:, :width]  # (B, L') with L' <= L
            yield {"grid": grid[rows], "pooled": pooled[rows], **b}

    return batches
