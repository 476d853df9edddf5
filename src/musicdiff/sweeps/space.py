"""Search spaces: config keys → Optuna distributions, written as plain YAML.

Example (``conf/sweep.yaml``)::

    search_space:
      sampler.cfg_scale: {type: float, low: 1.0, high: 9.0}
      sampler.steps: {type: int, low: 4, high: 64, log: true}
      sampler: {type: categorical, choices: [dpmpp_2m, dpmpp_3m_sde, euler]}

A key naming a config *group* (``sampler``) becomes a group override (``sampler=euler``); any
other key becomes a value override (``sampler.steps=17``).
"""

from __future__ import annotations

from typing import Any, Mapping

import optuna


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sample one point of ``space`` with ``trial``.

    Raises:
        ValueError: for an unknown ``type`` or missing bounds, naming the key.
    """
    params: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec.get("type")
        try:
            if kind == "float":
                params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                                  log=bool(spec.get("log", False)), step=spec.get("step"))
            elif kind == "int":
                params[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]),
                                                log=bool(spec.get("log", False)), step=int(spec.get("step", 1)))
            elif kind == "categorical":
                params[key] = trial.suggest_categorical(key, list(spec["choices"]))
            else:
                raise ValueError(f"search_space.{key}: type must be float|int|categorical, got {kind!r}")
        except KeyError as exc:
            raise ValueError(f"search_space.{key}: missing {exc.args[0]!r}") from exc
    return params


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """Hydra override strings for sampled params."""
    return [f"{k}={v}" for k, v in params.items()]
