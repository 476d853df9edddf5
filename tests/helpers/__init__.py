"""Shared test helpers (reference loaders, tiny text models)."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True on CI (``CI=true``, set by CI services), where a missing reference is an error."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """A parity reference (or other required test dependency) is missing: skip locally, fail on CI.

    A skip would let a broken ``make setup`` pass CI with the parity tests silently not run.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI=true: parity references must be installed; run `make setup`)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
