"""Batch collation for audio and latent items (docs/ARCHITECTURE.md, "Tensors and batches")."""

from __future__ import annotations

from typing import Any, Sequence

import torch

SIGNAL_KEYS = ("audio", "latents")


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack dataset items into a batch.

    Args:
        items: dataset items, each with ``audio [C, T]`` or ``latents [D, L]``, ``padding_mask``
            and metadata values (prompt, seconds_start, seconds_total, path ...).

    Returns:
        ``{"audio" | "latents": [B, C, T], "padding_mask": bool [B, T], "metadata": list[dict]}``;
        each metadata dict holds every other key of its item.

    Raises:
        ValueError: empty batch, missing signal/mask, mixed kinds or mismatched shapes.
    """
    if not items:
        raise ValueError("collate got an empty list of items")
    kinds = [k for k in SIGNAL_KEYS if k in items[0]]
    if len(kinds) != 1:
        raise ValueError(f"an item needs exactly one of {SIGNAL_KEYS}, got keys {sorted(items[0])}")
    key = kinds[0]
    for i, item in enumerate(items):
        if key not in item or "padding_mask" not in item:
            raise ValueError(f"item {i} lacks {key!r} or 'padding_mask' (keys {sorted(item)})")
        if item[key].shape != items[0][key].shape or item["padding_mask"].shape != items[0]["padding_mask"].shape:
            raise ValueError(f"item {i} has {key} shape {tuple(item[key].shape)} / mask "
                             f"{tuple(item['padding_mask'].shape)}, item 0 has {tuple(items[0][key].shape)} / "
                             f"{tuple(items[0]['padding_mask'].shape)}: crop items to one window")
    return {
        key: torch.stack([item[key] for item in items]),
        "padding_mask": torch.stack([item["padding_mask"].bool() for item in items]),
        "metadata": [{k: v for k, v in item.items() if k not in (key, "padding_mask")} for item in items],
    }
