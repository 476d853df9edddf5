"""Compose every option of every group of every entry point, validate it and instantiate it.

New options are covered automatically: the option lists are read from the conf/ tree. Large
presets are instantiated on the meta device (shapes and parameter counts, no memory).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.config import validate_targets
from musicdiff.config.paths import config_dir

CONF = Path(config_dir())
ROOTS = sorted(p.stem for p in CONF.glob("*.yaml"))
SKIP_GROUPS = {"hydra", "local", "debug", "experiment"}
META_OPTIONS = {("autoencoder", "oobleck_sa2"), ("dit", "sa2"), ("dit", "base")}


def _groups_of(root: str) -> dict[str, list[str]]:
    """Groups named in a root's defaults list → their options on disk."""
    defaults = OmegaConf.load(CONF / f"{root}.yaml").get("defaults", [])
    groups = {}
    for entry in defaults:
        if isinstance(entry, str) or entry is None:
            continue
        for key in entry:
            name = str(key).replace("optional ", "").split("@")[0].strip()
            if name.startswith("override") or name in SKIP_GROUPS:
                continue
            opts = sorted(p.stem for p in (CONF / name).glob("*.yaml"))
            if opts:
                groups[name] = opts
    return groups


CASES = [(root, group, opt) for root in ROOTS for group, opts in _groups_of(root).items() for opt in opts]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))


def _instantiate_group(cfg, group: str, option: str):
    node = cfg[group]
    if node is None or "_target_" not in node:
        return None
    if (group, option) in META_OPTIONS:
        with torch.device("meta"):
            return instantiate(node)
    return instantiate(node)


@pytest.mark.parametrize(("root", "group", "option"), CASES, ids=[f"{r}:{g}={o}" for r, g, o in CASES])
def test_every_option_composes_and_instantiates(compose_cfg, text_model_env, data_env, root, group, option):
    cfg = compose_cfg(root, [f"{group}={option}"])
    validate_targets(cfg)
    OmegaConf.resolve(cfg)
    _instantiate_group(cfg, group, option)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(compose_cfg, text_model_env, data_env, experiment):
    root = "train"
    cfg = compose_cfg(root, [f"experiment={experiment}"])
    validate_targets(cfg)
    OmegaConf.resolve(cfg)
    built = {}
    for group in sorted(_groups_of(root), key=lambda g: g == "task"):  # the task last
        if group == "dataset" and cfg.autoencoder.sample_rate != compose_cfg(root).autoencoder.sample_rate:
            continue  # the fixture's data were made for the tiny autoencoder
        if group in ("autoencoder", "dit"):  # paper-size presets: shapes only, on the meta device
            with torch.device("meta"):
                built[group] = instantiate(cfg[group])
        elif group == "task":  # the task gets those meta modules instead of building full-size copies
            import inspect

            from hydra.utils import get_class

            accepted = inspect.signature(get_class(cfg.task._target_)).parameters
            instantiate(cfg.task, **{k: v for k, v in built.items() if k in accepted})
        else:
            _instantiate_group(cfg, group, "")


@pytest.mark.parametrize("debug", DEBUGS)
def test_debug_configs_compose(compose_cfg, debug):
    cfg = compose_cfg("train", [f"debug={debug}"])
    validate_targets(cfg)


def test_unknown_keys_fail_clearly(compose_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="widht"):
        compose_cfg("train", ["dit.widht=3"])
    with pytest.raises(ConfigCompositionException, match="not_a_root_key"):
        compose_cfg("train", ["not_a_root_key=3"])
    from musicdiff.config import ConfigError

    cfg = compose_cfg("train", ["+dit.widht=3"])
    with pytest.raises(ConfigError, match="Did you mean"):
        validate_targets(cfg)


def test_generation_options_reach_the_generator(compose_cfg):
    """``precision`` and ``packed_gemm`` of musicdiff-generate and musicdiff-memorization."""
    from hydra.errors import ConfigCompositionException

    from musicdiff.cli.generate import build_generator

    cfg = compose_cfg("generate", ["generator.precision=bf16", "generator.packed_gemm=false", "generator.window_seconds=0.5", "logger=none"])
    gen = build_generator(cfg, torch.device("cpu"))
    assert gen.precision == "bf16" and gen.packed_gemm is False
    assert build_generator(compose_cfg("generate", ["generator.window_seconds=0.5"]), torch.device("cpu")).packed_gemm is True
    mem = compose_cfg("memorization", ["generator.precision=fp16", "generator.packed_gemm=false"])
    assert mem.generator.precision == "fp16" and mem.generator.packed_gemm is False
    with pytest.raises(ConfigCompositionException):
        compose_cfg("generate", ["generator.packed_gemm=maybe"])  # typed schema field
