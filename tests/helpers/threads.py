"""One intra-op thread for tests of small convolutions, even when ``MUSICDIFF_TEST_THREADS`` raises the
suite's default (tests/conftest.py).

Small convolutions gain nothing from a second thread, and spin-waiting intra-op threads slow them down
10x+ when the CPU is shared with other jobs. Importing the fixture into a conftest or test module turns
it on there::

    from tests.helpers.threads import single_thread  # noqa: F401  (autouse fixture)
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
