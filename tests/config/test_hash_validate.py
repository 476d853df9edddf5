"""Config hash stability and signature validation of `_target_` nodes."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from musicdiff.config import ConfigError, config_hash, flatten, validate_targets


def test_hash_ignores_device_and_logging_keys():
    a = OmegaConf.create({"dit": {"width": 64}, "trainer": {"num_workers": 0, "max_steps": 10},
                          "logger": {"experiment": "a"}, "paths": {"output_dir": "/x"}})
    b = OmegaConf.create({"dit": {"width": 64}, "trainer": {"num_workers": 8, "max_steps": 10},
                          "logger": {"experiment": "b"}, "paths": {"output_dir": "/y"}})
    c = OmegaConf.create({"dit": {"width": 65}, "trainer": {"num_workers": 0, "max_steps": 10}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert len(config_hash(a)) == 12


def test_flatten():
    flat = flatten(OmegaConf.create({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 3}]}))
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d.0.e": "3"}


def test_validate_accepts_known_keys_and_rejects_typos():
    ok = OmegaConf.create({"opt": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}})
    validate_targets(ok)
    bad = OmegaConf.create({"opt": {"_target_": "torch.nn.Linear", "in_features": 2, "out_featurs": 3}})
    with pytest.raises(ConfigError, match=r"opt\.out_featurs.*Did you mean 'out_features'"):
        validate_targets(bad)
    missing = OmegaConf.create({"x": {"_target_": "musicdiff.nope.Thing"}})
    with pytest.raises(ConfigError, match="cannot import"):
        validate_targets(missing)
