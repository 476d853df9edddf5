"""Does the adapter do anything? Per-layer weight change and a fixed-seed with/without comparison.

- :func:`relative_weight_change`: ``‖s·ΔW‖_F / ‖W‖_F`` per adapted layer (0 for an untrained LoRA,
  whose ``B`` starts at zero).
- :func:`ab_distances`: relative latent distance ``‖z_a − z_b‖ / ‖z_b‖`` and mean absolute log-mel
  difference between two generations from the same noise (with and without the adapter).
"""

from __future__ import annotations

import torch
from torch import nn

from musicdiff.adapters.stack import iter_layers, stack_of


@torch.no_grad()
def relative_weight_change(dit: nn.Module, name: str | None = None,
                           weights: dict[str, nn.Module] | None = None) -> dict[str, float]:
    """``{layer name: ‖s·ΔW‖_F / ‖W‖_F}`` for adapter ``name`` (every adapter's layers when None).

    Args:
        dit: the adapted DiT.
        name: restrict to one adapter.
        weights: adapter layer modules to use instead of the live ones (``{layer name: module}``,
            e.g. the EMA's), with the same spec.
    """
    stack = stack_of(dit)
    out: dict[str, float] = {}
    for key, layer_name, linear, layer in iter_layers(dit):
        if name is not None and key != name:
            continue
        if weights is not None:
            layer = weights[layer_name]
        delta = layer.delta_weight(linear.weight) * stack.sets[key].scale
        base = linear.weight.detach().float().norm()
        out[layer_name] = float(delta.norm() / base.clamp_min(1e-12))
    return out


@torch.no_grad()
def ab_distances(latents_a: torch.Tensor, latents_b: torch.Tensor, audio_a: torch.Tensor | None = None,
                 audio_b: torch.Tensor | None = None, sample_rate: int | None = None) -> dict[str, float]:
    """Distances between generation A (adapter on) and B (off) from the same noise.

    Args:
        latents_a, latents_b: ``[B, D, L]`` latents.
        audio_a, audio_b: ``[B, C, T]`` decoded audio (optional).
        sample_rate: audio rate (for the mel filterbank).

    Returns:
        ``latent_rel_l2`` and, with audio, ``mel_l1`` (mean |Δ log-mel| over items, 64 bands).
    """
    a, b = latents_a.float(), latents_b.float()
    out = {"latent_rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-12))}
    if audio_a is not None and audio_b is not None and sample_rate:
        from musicdiff.evaluation.embedders import LogMel

        n_fft = min(1024, audio_a.shape[-1])
        mel = LogMel(int(sample_rate), n_fft=n_fft, n_mels=64)
        diffs = [(mel(x.float().cpu()) - mel(y.float().cpu())).abs().mean() for x, y in zip(audio_a, audio_b)]
        out["mel_l1"] = float(torch.stack(diffs).mean())
    return out
