"""A pretrained VQA model from the Hugging Face hub, for real photographs.

The course's own VQA model (``velm_course.multimodal.vqa``) trains on the shapes data in a
minute. To see what the same recipe gives at scale, ViLT (Kim et al., 2021: a Transformer
over image patches and question words together, pretrained on image-text pairs with
matching and masked-word losses, then fine-tuned on VQA v2's 3,129 answers) answers questions
about photographs in a few lines:

    processor, model = load_hf_vqa()                        # needs the hub (Colab, a workstation)
    hf_answer(processor, model, [photo], ["how many cats are there?"])

Offline, ``load_hf_vqa`` raises a clear error naming what failed (the notebook skips its cell
with that message). The same code loads a model folder from disk, which is how the tests run
it: a small ViLT with random weights, saved and loaded again.
"""

from __future__ import annotations

from collections.abc import Sequence

HF_VQA_MODEL = "dandelin/vilt-b32-finetuned-vqa"  # ViLT-B/32 fine-tuned on VQA v2


def load_hf_vqa(name: str = HF_VQA_MODEL):
    """(processor, model) of a ViLT VQA model from a local folder or the hub, in eval mode.

    Raises ``RuntimeError`` with the reasons when neither can be had (offline, no folder).
    """
    from ..text.hf_encoder import local_or_hub

    def load(path: str, source: str):
        from transformers import ViltForQuestionAnswering, ViltProcessor

        return ViltProcessor.from_pretrained(path), ViltForQuestionAnswering.from_pretrained(path).eval()

    loaded, problems = local_or_hub(name, load)
    if loaded is None:
        raise RuntimeError(f"could not load the VQA model {name}: {'; '.join(problems)}")
    return loaded


def hf_answer(processor, model, images: Sequence, questions: Sequence[str], top_k: int = 1
              ) -> list[list[tuple[str, float]]]:
    """The ``top_k`` answers (answer, probability) of a ViLT model for each (image, question).

    Images are PIL images of any size and mode (converted to RGB; the processor resizes).
    ViLT was trained with a sigmoid per answer (VQA v2's soft scores), so the probabilities
    are independent sigmoids, not a softmax: they need not sum to 1.
    """
    import torch

    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    images = [im.convert("RGB") for im in images]
    inputs = processor(images=images, text=list(questions), return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**inputs).logits.sigmoid()  # (B, A)
    top = probs.topk(top_k, dim=1)
    labels = model.config.id2label
    return [[(labels[int(i)], round(float(p), 4)) for p, i in zip(ps, ids, strict=True)]
            for ps, ids in zip(top.values, top.indices, strict=True)]
