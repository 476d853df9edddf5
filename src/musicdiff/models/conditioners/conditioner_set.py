"""A set of named conditioners routed to cross-attention tokens and the global vector.

SA2 (Evans et al., arXiv 2404.10301) §3.4 and the SAO model config: the prompt tokens, one
``seconds_start`` token and one ``seconds_total`` token are concatenated along the sequence for
cross-attention; the two timing embeddings are also concatenated along channels into the global
vector that the DiT projects into its prepended token. Each conditioner reads the metadata
field of its own name (or the field given in ``input_keys``), as stable-audio-tools'
``MultiConditioner`` does. Datasets carry every metadata field of a file into the batch metadata
(:func:`musicdiff.data.base.item_fields`) and generation requests carry theirs
(``GenerationRequest.fields``), so a conditioner of a new field needs no code outside its module;
``field_defaults`` gives the value for items without the field (e.g. the training demos).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn


class ConditionerSet(nn.Module):
    """``forward(metadata, device) -> {cross_attn_cond, cross_attn_mask, global_cond}``.

    Args:
        conditioners: named conditioners (each with ``output_dim`` and ``forward(values, device)``).
        cross_attn_ids: names whose tokens are concatenated for cross-attention, in order.
        global_ids: names whose (single-token) embeddings are concatenated into the global vector.
        cond_dim: width of every cross-attention token (checked against the conditioners).
        global_cond_dim: width of the global vector (checked: sum of the global ids' widths).
        input_keys: optional ``{name: metadata_key}`` when a conditioner reads another field.
        field_defaults: optional ``{metadata_key: value}`` used for items that lack the field (else
            such an item is an error naming the field).
    """

    def __init__(
        self,
        conditioners: Mapping[str, nn.Module],
        cross_attn_ids: Sequence[str] = (),
        global_ids: Sequence[str] = (),
        cond_dim: int = 0,
        global_cond_dim: int = 0,
        input_keys: Mapping[str, str] | None = None,
        field_defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict(dict(conditioners))
        self.cross_attn_ids = list(cross_attn_ids)
        self.global_ids = list(global_ids)
        self.cond_dim = int(cond_dim)
        self.global_cond_dim = int(global_cond_dim)
        self.input_keys = dict(input_keys or {})
        self.field_defaults = dict(field_defaults or {})
        for name in self.cross_attn_ids + self.global_ids + list(self.input_keys):
            if name not in self.conditioners:
                raise ValueError(
                    f"conditioner id '{name}' is routed but not defined; defined: "
                    f"{sorted(self.conditioners)}"
                )
        for name in self.cross_attn_ids:
            width = self.conditioners[name].output_dim
            if width != self.cond_dim:
                raise ValueError(f"conditioner '{name}' outputs {width} channels, cond_dim is {self.cond_dim}")
        total = sum(self.conditioners[name].output_dim for name in self.global_ids)
        if total != self.global_cond_dim:
            raise ValueError(
                f"global ids {self.global_ids} give {total} channels but global_cond_dim is "
                f"{self.global_cond_dim}"
            )

    def _values(self, name: str, metadata: Sequence[Mapping[str, Any]]) -> list[Any]:
        key = self.input_keys.get(name, name)
        values = []
        for i, item in enumerate(metadata):
            if key not in item and key not in self.field_defaults:
                raise ValueError(f"batch item {i} has no metadata field '{key}' (needed by '{name}'; "
                                 f"conditioner.field_defaults can give a default)")
            value = item.get(key, self.field_defaults.get(key))
            if isinstance(value, (list, tuple)) and len(value) == 1:
                value = value[0]
            values.append(value)
        return values

    def forward(
        self, metadata: Sequence[Mapping[str, Any]], device: torch.device | str
    ) -> dict[str, torch.Tensor | None]:
        """Run every routed conditioner on the batch metadata.

        Args:
            metadata: one dict per batch item (prompt, seconds_start, seconds_total ...).
            device: where the tensors are put.

        Returns:
            ``cross_attn_cond [B, N, cond_dim]``, ``cross_attn_mask bool [B, N]`` and
            ``global_cond [B, global_cond_dim]``; a key is None when nothing is routed to it.
        """
        if len(metadata) == 0:
            raise ValueError("ConditionerSet needs at least one metadata item")
        outputs = {
            name: self.conditioners[name](self._values(name, metadata), device)
            for name in dict.fromkeys(self.cross_attn_ids + self.global_ids)
        }
        cond: dict[str, torch.Tensor | None] = {
            "cross_attn_cond": None,
            "cross_attn_mask": None,
            "global_cond": None,
        }
        if self.cross_attn_ids:
            tokens = [outputs[n][0] for n in self.cross_attn_ids]
            masks = [outputs[n][1].to(torch.bool) for n in self.cross_attn_ids]
            dtype = torch.promote_types(tokens[0].dtype, torch.float32)
            cond["cross_attn_cond"] = torch.cat([t.to(dtype) for t in tokens], dim=1)
            cond["cross_attn_mask"] = torch.cat(masks, dim=1)
        if self.global_ids:
            vecs = [outputs[n][0].to(torch.float32) for n in self.global_ids]
            cond["global_cond"] = torch.cat([v.reshape(v.shape[0], -1) for v in vecs], dim=-1)
        return cond
