"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread. On a busy 2-core machine two OpenMP threads waiting on each other
    make small forwards 5-50x slower; one thread is nearly as fast on an idle machine and steady on a busy one.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
