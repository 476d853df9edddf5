"""A missing parity reference skips locally but fails on CI (CI=true), so a broken setup can't pass CI."""

from __future__ import annotations

import pytest

import tests.helpers.kdiffusion as kd_helper
import tests.helpers.stable_audio_tools as sat_helper
from musicdiff.reference.sat_reference import ReferenceUnavailable


def _missing():
    raise ReferenceUnavailable("not installed (test)")


@pytest.mark.parametrize("helper, attr, loader", [(sat_helper, "load_stable_audio_tools", sat_helper.load_sat),
                                                  (kd_helper, "_load", kd_helper.load_k_diffusion)])
def test_missing_reference_fails_on_ci_and_skips_locally(monkeypatch, helper, attr, loader):
    monkeypatch.setattr(helper, attr, _missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: parity references must be installed"):
        loader()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        loader()
