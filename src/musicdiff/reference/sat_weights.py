"""Key mapping between stable-audio-tools checkpoints and musicdiff's three modules, both ways.

A SAT ``diffusion_cond`` state dict (the layout of Stable Audio Open's ``model.safetensors``)
holds three subtrees, which musicdiff keeps as separate modules (DESIGN.md principle 7):

=====================================  ==========================================================
SAT key                                musicdiff module / key
=====================================  ==========================================================
``pretransform.model.<k>``             ``autoencoder.<k>``; weight-norm ``weight_g``/``weight_v``
                                       become ``parametrizations.weight.original0``/``original1``
``model.model.<k>``                    ``dit.<k>``; the all-zero ``*norm.beta`` buffers of SAT's
                                       bias-free LayerNorms are dropped (and re-created on export)
``conditioner.conditioners.<k>``       ``conditioner.conditioners.<k>`` (T5 weights are not part
                                       of either checkpoint)
=====================================  ==========================================================

All other names and every tensor shape are identical (the module trees mirror SAT's), so the
mapping is a rename; tensors are never modified. Checkpoints are read with safetensors or
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from musicdiff.files.state_dict import read_state_dict

SAT_PREFIXES = {
    "autoencoder": "pretransform.model.",
    "dit": "model.model.",
    "conditioner": "conditioner.",
}
_WN_TO_OURS = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_WN_TO_SAT = {v: k for k, v in _WN_TO_OURS.items()}
_NORM_BETA = re.compile(r"(^|\.)(pre_norm|cross_attend_norm|ff_norm)\.beta$")
_NORM_GAMMA = re.compile(r"(^|\.)(pre_norm|cross_attend_norm|ff_norm)\.gamma$")
# Training-wrapper checkpoints (``model.ckpt`` of a SAT training run) nest everything in ``diffusion.``;
# the EMA copy of the DiT wrapper lives in ``diffusion_ema.ema_model.``.
_TRAINING_PREFIX = "diffusion."
_EMA_PREFIX = "diffusion_ema.ema_model."


class SATKeyError(KeyError):
    """A SAT state dict holds keys this mapping does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def read_sat_checkpoint(path: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a SAT checkpoint (``.safetensors`` or ``.ckpt``) as an unwrapped model state dict.

    Args:
        path: ``model.safetensors`` (Stable Audio Open release) or a ``.ckpt``/``.pt`` file holding a
            ``state_dict`` (released ``model.ckpt`` or a training-wrapper checkpoint).
        ema: with a training-wrapper checkpoint, take the DiT from its EMA copy.

    Returns:
        Keys as in the released ``model.safetensors`` (``model.model.*``, ``pretransform.model.*``,
        ``conditioner.*``).
    """
    sd = read_state_dict(path, "Stable Audio checkpoint", pickle_hint="unwrap it with stable-audio-tools' "
                         "unwrap_model.py (or use model.safetensors)")
    if any(k.startswith(_TRAINING_PREFIX) for k in sd):
        out = {k[len(_TRAINING_PREFIX):]: v for k, v in sd.items() if k.startswith(_TRAINING_PREFIX)}
        if ema:
            ema_keys = {k[len(_EMA_PREFIX):]: v for k, v in sd.items() if k.startswith(_EMA_PREFIX)}
            if not ema_keys:
                raise ValueError(f"{path}: ema=true but the checkpoint has no {_EMA_PREFIX}* keys")
            out = {k: v for k, v in out.items() if not k.startswith("model.")}
            out.update({"model." + k: v for k, v in ema_keys.items()})
        return out
    if ema:
        raise ValueError(f"{path}: ema=true needs a training-wrapper checkpoint (keys 'diffusion_ema.*')")
    return dict(sd)


def _ae_to_ours(key: str) -> str:
    head, _, leaf = key.rpartition(".")
    return f"{head}.{_WN_TO_OURS[leaf]}" if leaf in _WN_TO_OURS else key


def _ae_to_sat(key: str) -> str:
    for ours, sat in _WN_TO_SAT.items():
        if key.endswith("." + ours):
            return key[: -len(ours)] + sat
    return key


def sat_to_musicdiff(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split and rename a SAT state dict into musicdiff module state dicts.

    Args:
        sd: a SAT ``diffusion_cond`` state dict (see :func:`read_sat_checkpoint`).

    Returns:
        ``{"autoencoder": {...}, "dit": {...}, "conditioner": {...}}``, ready for
        ``module.load_state_dict(..., strict=True)`` (the tensors are shared, not copied).

    Raises:
        SATKeyError: keys outside the three known subtrees, or non-zero LayerNorm betas (a model
            with biased norms would not be reproduced by musicdiff's bias-free LayerNorm).
    """
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in SAT_PREFIXES}
    unknown = []
    for key, value in sd.items():
        if key.startswith(SAT_PREFIXES["autoencoder"]):
            out["autoencoder"][_ae_to_ours(key[len(SAT_PREFIXES["autoencoder"]):])] = value
        elif key.startswith(SAT_PREFIXES["dit"]):
            sub = key[len(SAT_PREFIXES["dit"]):]
            if _NORM_BETA.search(sub):
                if value.device.type != "meta" and bool(value.any()):
                    raise SATKeyError(f"{key} is non-zero: musicdiff's DiT LayerNorms have no bias")
                continue
            out["dit"][sub] = value
        elif key.startswith(SAT_PREFIXES["conditioner"]):
            out["conditioner"][key[len(SAT_PREFIXES["conditioner"]):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise SATKeyError(f"{len(unknown)} SAT keys outside pretransform.model/model.model/conditioner: "
                          f"{unknown[:5]}")
    return out


def musicdiff_to_sat(autoencoder: Mapping[str, torch.Tensor], dit: Mapping[str, torch.Tensor],
                     conditioner: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge musicdiff module state dicts into one SAT ``diffusion_cond`` state dict.

    Args:
        autoencoder: ``AudioAutoencoder.state_dict()``.
        dit: ``DiffusionTransformer.state_dict()``.
        conditioner: ``ConditionerSet.state_dict()``.

    Returns:
        The state dict SAT's ``create_model_from_config`` model loads with ``strict=True``
        (zero ``*norm.beta`` buffers are added for SAT's LayerNorms).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in autoencoder.items():
        out[SAT_PREFIXES["autoencoder"] + _ae_to_sat(key)] = value
    for key, value in dit.items():
        out[SAT_PREFIXES["dit"] + key] = value
        if _NORM_GAMMA.search(key):
            out[SAT_PREFIXES["dit"] + key[: -len("gamma")] + "beta"] = torch.zeros_like(value)
    for key, value in conditioner.items():
        out[SAT_PREFIXES["conditioner"] + key] = value
    return out
