"""Learning curves in the scoreboard's units: the right rows, the right scorer per model, and a
finished run read back from its checkpoint instead of measured again."""

import pytest
import torch

from velm_course.text.curves import CurveConfig, train_curve, validation_bits
from velm_course.text.gpt import GPT, GPTConfig
from velm_course.text.rnn import RNNLM, RNNLMConfig, sequence_bits
from velm_course.text.scoreboard import window_bits

TEXT = (torch.arange(400) * 7 % 11) % 6  # a periodic "text" over 6 symbols
VAL = TEXT[:97]


def small_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=6, n_layer=1, n_head=2, n_embd=16))


def small_lstm():
    torch.manual_seed(0)
    return RNNLM(RNNLMConfig(vocab_size=6, cell="lstm", n_embd=8, n_hidden=16))


def test_validation_bits_uses_the_window_for_a_gpt_and_the_state_for_an_rnn():
    gpt, lstm = small_gpt(), small_lstm()
    assert validation_bits(gpt, VAL, 0) == pytest.approx(window_bits(gpt, VAL, 0, block_size=8))
    assert validation_bits(lstm, VAL, 0, val_streams=3) == pytest.approx(sequence_bits(lstm, VAL, 0, n_streams=3))


@pytest.mark.parametrize("make", [small_gpt, small_lstm])
def test_curve_rows_count_tokens_compute_and_time(make):
    model = make()
    n_params = sum(p.numel() for p in model.parameters())
    cfg = CurveConfig(steps=25, batch_size=4, block_size=8, lr=1e-2, warmup=2, eval_every=10, log_every=5)
    rows = train_curve(model, TEXT, VAL, 0, cfg, progress=False)
    assert [r["step"] for r in rows] == [0, 10, 20, 25]  # and the last step, off the grid
    assert [r["tokens"] for r in rows] == [0, 320, 640, 800]
    assert all(r["train_flops"] == 6 * n_params * r["tokens"] for r in rows)
    seconds = [r["train_seconds"] for r in rows]
    assert seconds[0] == 0 and all(b > a for a, b in zip(seconds, seconds[1:], strict=False))
    assert [r["step"] for r in rows[-1]["history"]] == [5, 10, 15, 20, 25]
    assert rows[-1]["val_bpc"] < rows[0]["val_bpc"]  # it learned something about the pattern
    # the last row's score is the trained model's, on the whole validation text
    assert rows[-1]["val_bpc"] == pytest.approx(validation_bits(model, VAL, 0) / len(VAL), rel=1e-6)


def test_a_finished_run_is_read_back_not_trained_again(tmp_path):
    cfg = CurveConfig(steps=20, batch_size=4, block_size=8, lr=1e-2, warmup=2, eval_every=10)
    first = train_curve(small_gpt(), TEXT, VAL, 0, cfg, run_dir=tmp_path, progress=False)
    again = train_curve(small_gpt(), TEXT, VAL, 0, cfg, run_dir=tmp_path, progress=False)
    strip = [{k: v for k, v in r.items() if k != "history"} for r in first]
    assert [{k: v for k, v in r.items() if k != "history"} for r in again] == strip


def test_evaluations_must_fall_on_logged_steps():
    cfg = CurveConfig(steps=20, batch_size=4, block_size=8, lr=1e-2, warmup=2, eval_every=7, log_every=5)
    with pytest.raises(ValueError, match="multiple of log_every"):
        train_curve(small_gpt(), TEXT, VAL, 0, cfg, progress=False)
