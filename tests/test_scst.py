"""Self-critical sequence training: the loss and its gradient by hand, the modes the captions are
written in, the data path, and that SCST raises the reward of greedy captions."""

import numpy as np
import pytest
import torch

from velm_course.data.captions import EOS, CaptionVocab
from velm_course.data.loader import batch_loader
from velm_course.engine import TrainConfig, fit
from velm_course.eval.metrics import cider_d
from velm_course.multimodal.captioner import Captioner, CaptionerConfig
from velm_course.multimodal.scst import (
    SCSTImages,
    caption_mask,
    collate_images,
    scst_loss,
    scst_loss_fn,
)


def test_gradient_by_hand_on_two_captions():
    logprobs = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, -1.5, -3.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])  # caption 0 ended at its 2nd token
    reward, baseline = torch.tensor([3.0, 0.5]), torch.tensor([1.0, 1.0])
    loss = scst_loss(logprobs, mask, reward, baseline)
    # -(1/2) [ (3 - 1)(-1 - 2) + (0.5 - 1)(-0.5 - 1.5 - 3) ] = -(1/2) (-6 + 2.5)
    assert loss.item() == pytest.approx(1.75)
    loss.backward()
    # d loss / d log p(w_it) = -(r_i - b_i) / B on the caption's tokens, 0 past its <eos>
    expected = torch.tensor([[-1.0, -1.0, 0.0], [0.25, 0.25, 0.25]])
    torch.testing.assert_close(logprobs.grad, expected)


def test_no_push_when_the_sample_scores_as_greedy():
    logprobs = torch.randn(3, 4, requires_grad=True)
    reward = torch.tensor([0.2, 1.0, 5.0])
    loss = scst_loss(logprobs, torch.ones(3, 4, dtype=torch.bool), reward, reward.clone())
    loss.backward()
    assert loss.item() == 0.0 and (logprobs.grad == 0).all()
    # and no gradient ever reaches the rewards: they are constants
    r = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    scst_loss(logprobs, torch.ones(3, 4, dtype=torch.bool), r, torch.zeros(3)).backward()
    assert r.grad is None


def test_caption_mask_ends_after_the_first_eos():
    tokens = torch.tensor([[5, EOS, 0, 0], [EOS, 0, 0, 0], [5, 6, 7, 8], [5, EOS, 6, EOS]])
    assert caption_mask(tokens, EOS).int().tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]


WORDS = ["red", "blue", "circle", "box", "a"]
VOCAB = CaptionVocab(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])


def count_red(gts, res):
    """A reward anyone can check: how often the caption says "red" (references ignored)."""
    return np.array([res[k].split().count("red") for k in sorted(res)], dtype=float)


def tiny_captioner(cls=Captioner):
    torch.manual_seed(0)
    return cls(CaptionerConfig(vocab_size=len(VOCAB), d_model=16, n_layer=1, n_head=2, max_len=6,
                               dropout=0.0, image_size=32))


def says_its_word(gts, res):
    """A reward that needs the picture: how often the caption says its image's one reference word."""
    return np.array([res[k].split().count(gts[k][0]) for k in sorted(res)], dtype=float)


def image_batches(n_images=8):
    """Dark images then bright ones (with noise), the same batch every step."""
    g = torch.Generator().manual_seed(0)
    images = torch.cat([torch.full((n_images // 2, 3, 32, 32), 30), torch.full((n_images - n_images // 2, 3, 32, 32), 220)])
    images = (images + torch.randint(-30, 30, images.shape, generator=g)).to(torch.uint8)

    def batches(start_step):
        while True:
            yield {"images": images, "image_ids": list(range(n_images))}
    return images, batches


def test_scst_raises_the_reward_of_greedy_captions():
    """Dark images should say "red", bright ones "circle"; the untrained model says neither."""
    model = tiny_captioner()
    images, batches = image_batches()
    refs = {i: ["red"] if i < 4 else ["circle"] for i in range(8)}

    def greedy_reward():
        model.eval()
        caps = [VOCAB.decode(r) for r in model.generate(images.float() / 255).tolist()]
        return says_its_word(refs, dict(enumerate(caps))).mean()

    before = greedy_reward()
    loss_fn = scst_loss_fn(says_its_word, refs, VOCAB, {"temperature": 1.0})
    history = fit(model, loss_fn, batches, TrainConfig(steps=150, batch_size=8, lr=3e-3, warmup=1,
                                                       device="cpu", log_every=25), progress=False)
    after = greedy_reward()
    assert before <= 1.0 and after >= 4.0, (before, after)  # at most 5: max_len - 1 words
    # the engine logs the batch means of both rewards; both climb
    assert history[-1]["loss_reward"] > history[0]["loss_reward"] + 1.0
    assert history[-1]["loss_baseline"] > history[0]["loss_baseline"]


class Recording(Captioner):
    """A captioner that notes the mode it was in for each kind of call."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.modes = []

    def generate(self, images, max_new_tokens=None):
        self.modes.append(("greedy", self.training, torch.is_grad_enabled()))
        return super().generate(images, max_new_tokens)

    def sample(self, images, *a, **kw):
        self.modes.append(("sample", self.training, torch.is_grad_enabled()))
        return super().sample(images, *a, **kw)

    def forward(self, images, idx, targets=None):
        self.modes.append(("forward", self.training, torch.is_grad_enabled()))
        return super().forward(images, idx, targets)


def test_captions_are_written_in_eval_mode_and_scored_with_gradient_in_training_mode():
    model = tiny_captioner(Recording).train()
    images, batches = image_batches(4)
    seen = {}

    def reward(gts, res):
        seen.setdefault("res", []).append(dict(res))
        seen["gts"] = gts
        return count_red(gts, res)

    loss_fn = scst_loss_fn(reward, {i: ["A Red, circle!"] for i in range(4)}, VOCAB, {"seed": 0})
    loss_sum, count, terms = loss_fn(model, next(batches(0)))
    greedy_calls = [m for m in model.modes if m[0] == "greedy"]
    sample_calls = [m for m in model.modes if m[0] == "sample"]
    grad_calls = [m for m in model.modes if m[0] == "forward" and m[2]]
    assert greedy_calls and all(not training and not grad for _, training, grad in greedy_calls)
    assert sample_calls and all(not training and not grad for _, training, grad in sample_calls)
    assert len(grad_calls) == 1 and grad_calls[0][1]  # the log-probabilities: training mode, gradient
    assert model.training  # left as found
    assert seen["gts"] == {j: ["a red circle"] for j in range(4)}  # references normalised as captions are
    assert count == 4 and loss_sum.requires_grad
    sampled, greedy = (count_red(None, r) for r in seen["res"])
    assert terms["reward"].item() == pytest.approx(sampled.sum())
    assert terms["baseline"].item() == pytest.approx(greedy.sum())


class ImagesWithCaptions:
    """The parts of a captions dataset SCST reads: ids, references, uint8 images."""

    image_ids = ["img-a", "img-b", "img-c"]

    def captions_by_id(self):
        return {"img-a": ["a red circle"], "img-b": ["a blue box"], "img-c": ["a red box", "a box"]}

    def __len__(self):
        return 3

    def get_uint8(self, i):
        return torch.full((3, 32, 32), 40 * i, dtype=torch.uint8), self.image_ids[i]


def test_scst_batches_from_the_course_loader_with_cider_d():
    data = ImagesWithCaptions()
    dataset = SCSTImages(data, in_memory=True)
    assert len(dataset) == 3 and dataset[1]["image_id"] == "img-b"
    batch = next(iter(batch_loader(dataset, collate_images, batch_size=3, seed=0, steps=1)(0)))
    assert batch["images"].shape == (3, 3, 32, 32) and sorted(batch["image_ids"]) == data.image_ids
    loss_fn = scst_loss_fn(lambda gts, res: cider_d(gts, res)[1], data.captions_by_id(), VOCAB)
    loss_sum, count, terms = loss_fn(tiny_captioner().train(), batch)
    assert torch.isfinite(loss_sum) and count == 3
    loss_sum.backward()
