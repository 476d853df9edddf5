"""Loss tests run single-threaded: their small convolutions gain nothing from a second thread, and
spin-waiting intra-op threads slow them down 10x+ when the CPU is shared with other jobs."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
