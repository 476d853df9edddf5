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


def _typed(a: int, b: float = 1.0, c: bool = False, d: str | None = None, e: int | None = 3, f=None,
           g: "list[int] | None" = None) -> None:
    """A target with annotated parameters for the type checks."""


@pytest.mark.parametrize(("key", "value", "ok"), [
    ("a", 3, True), ("a", "abc", False), ("a", 1.5, False), ("a", True, False), ("a", None, False),
    ("b", 2, True), ("b", 2.5, True), ("b", "fast", False), ("c", True, True), ("c", "yes", False),
    ("d", None, True), ("d", "x", True), ("d", 3, False), ("e", None, True), ("e", "x", False),
    ("f", "anything", True), ("g", [1, 2], True), ("g", "x", True),  # unannotated / non-cheap: left to the target
])
def test_validate_checks_value_types(key, value, ok):
    cfg = OmegaConf.create({"node": {"_target_": f"{__name__}._typed", "a": 1, key: value}})
    if ok:
        validate_targets(cfg)
    else:
        with pytest.raises(ConfigError, match=rf"Config value node\.{key}=.* has the wrong type: .*_typed expects"):
            validate_targets(cfg)


def test_wrong_type_and_plus_key_fail_at_composition(compose_cfg):
    """Issue 13: `trainer.max_steps=abc` failed only after the model was built; `+misspelt=key` was accepted."""
    with pytest.raises(ConfigError) as info:
        validate_targets(compose_cfg("train", ["trainer.max_steps=abc"]))
    assert str(info.value) == ("Config value trainer.max_steps='abc' has the wrong type: "
                               "musicdiff.training.trainer.Trainer expects int")
    with pytest.raises(ConfigError, match=r"Unknown config key 'misspelt': the GenerateConfig schema accepts"):
        validate_targets(compose_cfg("generate", ["+misspelt=key"]))
    with pytest.raises(ConfigError, match=r"Unknown config key 'num_sample': .* Did you mean 'num_samples'\?"):
        validate_targets(compose_cfg("generate", ["+num_sample=3"]))
    with pytest.raises(ConfigError, match=r"'paths.lgo_dir': the PathsConfig schema .* Did you mean 'log_dir'\?"):
        validate_targets(compose_cfg("train", ["+paths.lgo_dir=x"]))
    validate_targets(compose_cfg("train", ["trainer.max_steps=7"]))
