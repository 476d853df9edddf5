"""What an adapter is: its kind, rank, scaling, target layers and active noise-level interval.

An :class:`AdapterSpec` is the ``adapter`` config group (``conf/adapter/*.yaml``) and is recorded,
as JSON, in every adapter file. Targets are names of the DiT's ``nn.Linear`` layers, given as preset
names (:data:`TARGET_PRESETS`: ``self_attn``, ``cross_attn``, ``ff``) or regular expressions matched
against the full module name (``transformer.layers.3.self_attn.to_qkv``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

KINDS = ("none", "lora", "dora", "lora_xs")

# Linear layers of the SA2 DiT blocks (musicdiff.models.dit.blocks), by branch.
TARGET_PRESETS = {
    "self_attn": r"transformer\.layers\.\d+\.self_attn\.(to_qkv|to_out)",
    "cross_attn": r"transformer\.layers\.\d+\.cross_attn\.(to_q|to_kv|to_out)",
    "ff": r"transformer\.layers\.\d+\.ff\.ff\.(0\.proj|2)",
}


class AdapterError(ValueError):
    """An adapter spec, file or combination that cannot be used (the message names the value or file)."""


@dataclass
class AdapterSpec:
    """One adapter on the DiT's linear layers.

    Args:
        kind: ``none`` (no adapter) | ``lora`` (Hu et al. arXiv 2106.09685) | ``dora`` (Liu et al.
            arXiv 2402.09353) | ``lora_xs`` (Bałazy et al. arXiv 2405.17604).
        rank: rank ``r`` of the update.
        alpha: the update is scaled by ``alpha / r`` (LoRA eq. 3's scaling).
        dropout: dropout on the adapter branch's input while training.
        targets: preset names (:data:`TARGET_PRESETS`) or regexes fully matching ``nn.Linear`` names.
        t_interval: ``[t_lo, t_hi]``: the adapter acts only on samples whose diffusion time ``t``
            (noise level, 0 = clean, 1 = pure noise) lies in the closed interval; None = always.
    """

    kind: str = "lora"
    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: Sequence[str] = field(default_factory=lambda: ["self_attn", "cross_attn", "ff"])
    t_interval: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in KINDS:
            raise AdapterError(f"adapter kind must be one of {'|'.join(KINDS)}, got {self.kind!r}")
        self.rank, self.alpha, self.dropout = int(self.rank), float(self.alpha), float(self.dropout)
        self.targets = [str(t) for t in self.targets]
        if self.t_interval is not None:
            self.t_interval = [float(v) for v in self.t_interval]
        if not self.active:
            return
        if self.rank < 1:
            raise AdapterError(f"adapter rank must be >= 1, got {self.rank}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise AdapterError(f"adapter alpha must be a positive number, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"adapter dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise AdapterError("adapter targets is empty: name presets (self_attn, cross_attn, ff) or regexes")
        for t in self.targets:
            try:
                re.compile(TARGET_PRESETS.get(t, t))
            except re.error as exc:
                raise AdapterError(f"adapter target {t!r} is neither a preset ({', '.join(TARGET_PRESETS)}) "
                                   f"nor a valid regex: {exc}") from None
        if self.t_interval is not None:
            lo_hi = self.t_interval
            if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0:
                raise AdapterError(f"adapter t_interval must be [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1, got {lo_hi}")

    @property
    def active(self) -> bool:
        """False for ``kind: none``."""
        return self.kind != "none"

    @property
    def scaling(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    @property
    def always_on(self) -> bool:
        """True when no noise-level interval limits the adapter (it can be merged into the weights)."""
        return self.t_interval is None or (self.t_interval[0] <= 0.0 and self.t_interval[1] >= 1.0)

    def patterns(self) -> list[str]:
        """The target regexes (presets expanded)."""
        return [TARGET_PRESETS.get(t, t) for t in self.targets]

    def to_json(self) -> str:
        """The spec as a JSON object (recorded in adapter files)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AdapterSpec":
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise AdapterError(f"adapter spec must be a JSON object, got {text[:80]!r}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise AdapterError(f"adapter spec has unknown keys {sorted(unknown)}")
        return cls(**data)


def parse_adapter_specs(specs: Iterable[Any] | None) -> list[tuple[Path, float]]:
    """``["a.safetensors:0.8", "b.safetensors"]`` -> ``[(Path("a.safetensors"), 0.8), (Path("b..."), 1.0)]``.

    The scale follows the last ``:``; without one (or when what follows is not a number, as in a
    Windows drive letter) the whole string is the path and the scale is 1. ``(path, scale)`` pairs
    pass through.

    Args:
        specs: strings ``path[:scale]`` or ``(path, scale)`` pairs; None means none.

    Returns:
        ``(path, scale)`` pairs in order.

    Raises:
        AdapterError: a non-finite scale or an empty path.
    """
    out: list[tuple[Path, float]] = []
    for item in specs or ():
        if isinstance(item, (str, Path)):
            text = str(item)
            path, scale = text, 1.0
            head, sep, tail = text.rpartition(":")
            if sep and head:
                try:
                    path, scale = head, float(tail)
                except ValueError:
                    path, scale = text, 1.0
        else:
            try:
                path, scale = item
                scale = float(scale)
            except (TypeError, ValueError):
                raise AdapterError(f"adapter spec {item!r} is not 'path[:scale]' or (path, scale)") from None
        if not str(path):
            raise AdapterError(f"adapter spec {item!r} has an empty path")
        if not math.isfinite(scale):
            raise AdapterError(f"adapter spec {item!r}: scale must be finite, got {scale}")
        out.append((Path(path), float(scale)))
    return out
