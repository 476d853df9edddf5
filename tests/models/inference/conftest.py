"""Fixtures of the inference fast-path tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Small convolutions gain nothing from a second thread on a shared CPU (see tests/models/autoencoder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
