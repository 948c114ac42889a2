"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run every test on one torch thread: on a busy two-core machine, two threads spin-wait
    for each other and a training test gets many times slower. The previous setting comes
    back afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread(_one_torch_thread):
    """The old explicit opt-in, kept for tests that still ask for it: every test already runs
    on one torch thread (see ``_one_torch_thread``)."""
    assert torch.get_num_threads() == 1
    yield
