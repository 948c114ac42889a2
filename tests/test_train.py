import math

import pytest
import torch

from velm_course.captioner import Captioner, CaptionerConfig
from velm_course.train import CaptionTensors, TrainConfig, lr_at, sample_batch, train_captioner
from velm_course.vocab import BOS, EOS


def toy_data(n: int = 6) -> CaptionTensors:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
    tokens = torch.randint(4, 10, (n, 2, 6), generator=g)
    tokens[:, :, 0], tokens[:, :, -1] = BOS, EOS
    return CaptionTensors(images, tokens, [["x"] * 2] * n, list(range(n)))


def toy_model() -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(vocab_size=10, d_model=16, n_layer=1, n_head=2, max_len=6, dropout=0.0))


def test_lr_schedule_hand_worked():
    cfg = TrainConfig(steps=20, lr=2.0, warmup=4, min_lr_ratio=0.5)
    assert [lr_at(s, cfg) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    # halfway through the cosine: floor + (peak - floor) * (1 + cos(pi/2)) / 2 = 1 + 1 * 0.5
    assert math.isclose(lr_at(12, cfg), 1.5)
    assert math.isclose(lr_at(20, cfg), 1.0)


def test_batches_depend_only_on_seed_and_step():
    data, cfg = toy_data(), TrainConfig(batch_size=4, seed=3)
    a, b = sample_batch(data, 7, cfg), sample_batch(data, 7, cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(sample_batch(data, 8, cfg)[1], a[1])
    assert a[0].dtype == torch.float32 and 0 <= a[0].min() and a[0].max() <= 1


def test_loss_goes_down():
    data = toy_data()
    data.tokens[:, 1] = data.tokens[:, 0]  # one caption per image, so it can be learned
    history = train_captioner(toy_model(), data, TrainConfig(steps=60, batch_size=6, lr=1e-2, warmup=5), progress=False)
    first, last = history[0]["loss"], sum(h["loss"] for h in history[-5:]) / 5
    assert last < 0.5 * first


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, interrupt_training):
    cfg = TrainConfig(steps=8, batch_size=4, warmup=2, checkpoint_every=3)
    reference = toy_model()
    ref_history = train_captioner(reference, toy_data(), cfg, checkpoint=tmp_path / "ref.pt", progress=False)

    interrupt_training(5)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(toy_model(), toy_data(), cfg, checkpoint=tmp_path / "run.pt", progress=False)
    assert torch.load(tmp_path / "run.pt", weights_only=False)["step"] == 5  # saved on the way out
    interrupt_training(None)

    resumed = toy_model()  # a fresh process would start from a fresh model
    history = train_captioner(resumed, toy_data(), cfg, checkpoint=tmp_path / "run.pt", progress=False)
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in ref_history], rel=1e-6)
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)

    # a finished checkpoint: loading it trains nothing more and gives the same weights
    again = toy_model()
    assert len(train_captioner(again, toy_data(), cfg, checkpoint=tmp_path / "run.pt", progress=False)) == 8
    torch.testing.assert_close(again.lm_head.weight, reference.lm_head.weight)
