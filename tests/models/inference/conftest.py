"""Fixtures of the inference fast-path tests: one intra-op thread (tests/helpers/threads.py)."""

from tests.helpers.threads import single_thread  # noqa: F401  (autouse fixture)
