"""A stable hash of the experiment-defining part of a resolved config (audiocraft/Dora style).

Keys that only change *where* or *how visibly* a run happens (paths, loggers, device, worker
counts, logging cadence) are dropped before hashing, so the same experiment gets the same hash on
a laptop and on a cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

IGNORED_KEYS: tuple[str, ...] = (
    "paths",
    "logger",
    "run_name",
    "device",
    "out_dir",
    "objective",
    "trainer.num_workers",
    "trainer.log_every",
    "trainer.demo_every",
    "trainer.checkpoint_every",
    "trainer.keep_last",
    "trainer.progress",
    "trainer.resume",
    "hydra",
)


def _drop(d: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head not in d:
        return
    if rest:
        if isinstance(d[head], dict):
            _drop(d[head], rest)
    else:
        del d[head]


def to_plain(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolve a config to plain containers (``${hydra:...}`` left unresolved if unavailable)."""
    if isinstance(cfg, dict):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - hydra resolver missing outside of a Hydra run
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def config_hash(cfg: DictConfig | dict, length: int = 12) -> str:
    """Hash of the resolved config without device/logging keys.

    Args:
        cfg: the composed config.
        length: number of hex characters to keep.

    Returns:
        A hex digest prefix, identical for configs that differ only in ignored keys.
    """
    plain = json.loads(json.dumps(to_plain(cfg), default=str))
    for key in IGNORED_KEYS:
        _drop(plain, key)
    blob = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def flatten(cfg: DictConfig | dict, sep: str = ".") -> dict[str, str]:
    """Flatten a config into ``{"a.b.c": "value"}`` strings (for MLflow params)."""
    out: dict[str, str] = {}

    def rec(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                rec(v, f"{prefix}{sep}{k}" if prefix else str(k))
        elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
            for i, v in enumerate(node):
                rec(v, f"{prefix}{sep}{i}")
        else:
            out[prefix] = str(node)

    rec(to_plain(cfg), "")
    return out
