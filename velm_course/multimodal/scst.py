"""Self-critical sequence training (SCST): fine-tune a captioner on the score it is judged by.

Cross-entropy training teaches a captioner to predict the next word of a reference, reading the
reference so far; at test time it reads its own words and is scored by CIDEr-D, not by
likelihood. SCST (Rennie et al., 2017) treats the captioner as a policy that writes a caption
w ~ p(· | image) and earns a reward r(w), and follows the gradient of the expected reward
(REINFORCE):

    ∇ E[r(w)] = E[(r(w) - b) ∇ log p(w | image)]

Any baseline b that does not depend on the sampled w leaves the gradient unbiased and can lower
its variance a lot. *Self-critical*: b is the reward of the model's own greedy caption of the
same image, what it would write at test time. A sample that beats it is made likelier, one that
does worse less likely, and no learned critic is needed. Per batch of B images:

    loss = -(1/B) Σ_i (r_i - b_i) Σ_t log p(w_it | w_i<t, image_i)

with Σ_t over the sample's words up to and including its <eos>. The sum is not divided by the
caption's length (as in the paper): the reward already judges the length, CIDEr-D through its
length penalty, and dividing would make every extra word of a good caption cheaper.

A batch for SCST is images with their ids (``SCSTImages``, ``collate_images``): the reward
compares each caption with all of its image's references. ``scst_loss_fn`` turns a reward
function into a loss function for ``velm_course.engine.fit``, as ``pipeline.captioner_loss`` is
for cross-entropy. The reward is injected: CIDEr-D from ``velm_course.eval.metrics`` in the
course, or anything that scores captions against references.

Shape letters: B batch (images), T caption tokens.

>>> lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
>>> scst_loss(lp, torch.tensor([[True, False]]), torch.tensor([3.0]), torch.tensor([1.0]))
tensor(2., grad_fn=<NegBackward0>)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.captions import normalize_caption
from ..decoding import token_logprobs
from ..vision.encoders import as_encoder_input

RewardFn = Callable[[dict, dict], np.ndarray]  # (gts {key: [refs]}, res {key: caption}) -> (B,) rewards


def caption_mask(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """(B, T) booleans, True at each caption's words up to and including its first <eos>
    (all of a row that never ends): the positions that belong to the caption.

    >>> caption_mask(torch.tensor([[5, 2, 0], [5, 6, 7]]), eos=2).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    ended_before = (tokens == eos).int().cumsum(dim=1) - (tokens == eos).int()  # <eos> seen before t
    return ended_before == 0


def scst_loss(logprobs: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor,
              baseline: torch.Tensor) -> torch.Tensor:
    """The self-critical loss: -mean over captions of (reward - baseline) · Σ_t log p(w_t).

    ``logprobs`` (B, T) are the log-probabilities of the sampled captions' tokens (with
    gradient), ``mask`` (B, T) marks the tokens that belong to each caption (``caption_mask``),
    ``reward`` and ``baseline`` (B,) are constants: no gradient flows into them. Summed over a
    caption's tokens, not averaged (see the module docstring).
    """
    advantage = (reward - baseline).detach().to(logprobs.dtype)  # (B,)
    # masked_fill, not a product: a position past <eos> may hold -inf, and -inf * 0 is nan
    caption_logp = logprobs.masked_fill(~mask, 0.0).sum(dim=1)  # (B,)
    return -(advantage * caption_logp).mean()


class SCSTImages(Dataset):
    """Each image of a captions dataset once, with its id: SCST's examples.

    Cross-entropy trains on (image, caption) pairs; SCST writes its own caption for an image and
    scores it against all of the image's references, so an epoch sees each image once.
    """

    def __init__(self, dataset, in_memory: bool = False):
        self.dataset = dataset
        self.ids = list(dataset.image_ids)
        self.images = torch.stack([dataset.get_uint8(i)[0] for i in range(len(dataset))]) if in_memory else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i] if self.images is not None else self.dataset.get_uint8(i)[0]
        return {"image": image, "image_id": self.ids[i]}


def collate_images(items: list[dict]) -> dict:
    """Images (B, 3, H, W) uint8 and their ids (a list: ids need not be numbers)."""
    return {"images": torch.stack([it["image"] for it in items]), "image_ids": [it["image_id"] for it in items]}


def scst_loss_fn(
    reward_fn: RewardFn,
    references: Mapping[Hashable, list[str]],
    vocab,
    sample_kwargs: dict | None = None,
) -> Callable[[torch.nn.Module, dict], tuple[torch.Tensor, torch.Tensor, dict]]:
    """A loss function for ``engine.fit`` that fine-tunes a captioner by SCST.

    For a batch {"images": (B, 3, H, W), "image_ids": B ids}, it

    1. writes a greedy caption and a sampled caption per image, without gradient and in eval
       mode (the model as it captions at test time: no dropout, BatchNorm's running statistics);
    2. scores both with ``reward_fn(gts, res) -> (B,)``, ``gts`` the image's references (from
       ``references``, normalised as the captions are) and ``res`` the caption, keyed by
       position in the batch (an image drawn twice into one batch is scored twice): the sample's
       score is the reward, the greedy caption's the baseline;
    3. recomputes the sample's log-probabilities with gradient, in training mode, by teacher
       forcing through the model's forward (so a DistributedDataParallel wrapper syncs them).

    Returns (loss summed over the B images, B, {"reward": Σ reward, "baseline": Σ baseline}):
    the engine divides by B and logs the mean reward and baseline as ``loss_reward`` and
    ``loss_baseline``. ``vocab`` turns tokens into text (``decode``); ``sample_kwargs`` go to
    ``model.sample`` (temperature, top_k, top_p). The model needs ``generate``, ``sample``,
    ``bos_id``, ``eos_id`` and ``banned_tokens``, as both course captioners have.

    Set the model's dropout to 0 for SCST: the samples come from the model without dropout, and
    the log-probabilities should be those of the same model.
    """
    refs = {k: [normalize_caption(c) for c in v] for k, v in references.items()}
    sample_kwargs = dict(sample_kwargs or {})

    def loss_fn(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        inner = getattr(model, "module", model)  # the captioner inside a DDP wrapper
        images = as_encoder_input(batch["images"])
        ids = batch["image_ids"]
        ids = ids.tolist() if torch.is_tensor(ids) else list(ids)
        was_training = inner.training
        inner.eval()
        try:
            with torch.no_grad():
                greedy = inner.generate(images)  # (B, T1)
                samples = inner.sample(images, **sample_kwargs)  # (B, T2)
        finally:
            inner.train(was_training)
        gts = {j: refs[i] for j, i in enumerate(ids)}
        rewards = [np.asarray(reward_fn(gts, {j: vocab.decode(row) for j, row in enumerate(tokens.tolist())}),
                   dtype=np.float64) for tokens in (samples, greedy)]
        reward, baseline = (torch.as_tensor(r, dtype=torch.float32, device=images.device) for r in rewards)
        bos = torch.full_like(samples[:, :1], inner.bos_id)
        logits, _ = model(images, torch.cat([bos, samples[:, :-1]], dim=1))  # (B, T2, V), with gradient
        logp = token_logprobs(logits, samples, inner.banned_tokens)  # (B, T2)
        loss = scst_loss(logp, caption_mask(samples, inner.eos_id), reward, baseline)
        B = len(ids)
        return loss * B, torch.tensor(B, device=images.device), {"reward": reward.sum(), "baseline": baseline.sum()}

    return loss_fn
