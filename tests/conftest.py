"""Fixtures shared by several test files."""

import pytest
import torch

import velm_course.train as train_mod


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: on a busy two-core machine, two threads spin-wait for
    each other and a training test gets many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def interrupt_training(monkeypatch):
    """``interrupt_training(k)``: training raises KeyboardInterrupt (a Ctrl-C) when it reaches
    step k; ``interrupt_training(None)`` undoes it."""
    real = train_mod.sample_batch

    def at(stop_step):
        if stop_step is None:
            monkeypatch.setattr(train_mod, "sample_batch", real)
            return

        def sample(data, step, cfg):
            if step == stop_step:
                raise KeyboardInterrupt
            return real(data, step, cfg)

        monkeypatch.setattr(train_mod, "sample_batch", sample)

    return at
