"""Condition dropout for classifier-free guidance.

Ho & Salimans, "Classifier-Free Diffusion Guidance" (arXiv 2207.12598) Algorithm 1: during
training, the condition of each item is replaced by the null condition with probability ``p``
(0.1 in SA2), so one network learns both the conditional and the unconditional model. As in
stable-audio-tools the null condition is all-zero cross-attention tokens (the masks and the
global timing vector are kept); :func:`null_cond` builds the same null for guidance at sampling.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch


def null_cond(cond: Mapping[str, Any]) -> dict[str, Any]:
    """The unconditional counterpart of ``cond``: cross-attention tokens zeroed, rest unchanged."""
    out = dict(cond)
    if out.get("cross_attn_cond") is not None:
        out["cross_attn_cond"] = torch.zeros_like(out["cross_attn_cond"])
    return out


def cfg_dropout(
    cond: Mapping[str, Any], prob: float, generator: torch.Generator | None = None
) -> dict[str, Any]:
    """Replace each item's cross-attention tokens by zeros with probability ``prob``.

    Args:
        cond: ConditionerSet output (``cross_attn_cond [B, N, Dc]`` ...).
        prob: drop probability in [0, 1].
        generator: optional RNG for the Bernoulli draws.

    Returns:
        A new dict; unchanged (same tensors) when ``prob == 0`` or there are no tokens.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"cfg dropout probability must be in [0, 1], got {prob}")
    out = dict(cond)
    tokens = out.get("cross_attn_cond")
    if prob == 0.0 or tokens is None:
        return out
    dev = generator.device if generator is not None else tokens.device
    drop = torch.rand(tokens.shape[0], generator=generator, device=dev) < prob
    drop = drop.to(tokens.device)[:, None, None]
    out["cross_attn_cond"] = torch.where(drop, torch.zeros_like(tokens), tokens)
    return out
