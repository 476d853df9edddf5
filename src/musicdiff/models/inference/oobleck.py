"""Replacement ``forward``s of the Oobleck VAE for inference (see :func:`musicdiff.models.inference.fast_inference`).

* Residual units add their branch in place and, in the channels-last layout, let the pointwise
  convolution write into the buffer of the (dead) first activation.
* The encoder and decoder run each top-level layer in its preferred memory layout (``layout.py``)
  and compute the weight-normalised weights ``g · v / ||v||`` once per call
  (``torch.nn.utils.parametrize.cached``) instead of once per convolution call; a chunked
  encode/decode computes them once for all its windows.
* :func:`inplace_activations` names the SnakeBetas whose input is a fresh intermediate that nothing
  else reads (conv outputs inside residual units, block outputs), which may overwrite it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from musicdiff.models.autoencoder.blocks import DecoderBlock, EncoderBlock, ResidualUnit
from musicdiff.models.autoencoder.oobleck import OobleckDecoder, OobleckEncoder
from musicdiff.models.inference.eager import eager_inference, residual_add
from musicdiff.models.inference.layout import run_layers

__all__ = ["cached_weights", "coder_forward", "inplace_activations", "residual_unit_forward"]


def cached_weights() -> contextlib.AbstractContextManager:
    """Cache parametrised (weight-norm) weights for the duration of an eager inference call."""
    return parametrize.cached() if eager_inference() else contextlib.nullcontext()


def with_cached_weights(method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``method`` (e.g. a bound ``encode_chunked``) run under :func:`cached_weights`."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        with cached_weights():
            return method(*args, **kwargs)

    return call


def residual_unit_forward(unit: ResidualUnit) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replacement ``forward`` of a residual unit: the residual sum into the branch output."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not eager_inference():
            return ResidualUnit.forward(unit, x)
        if x.ndim == 4:  # channels-last: the pointwise conv writes into h, dead by then
            act, conv, act2, pointwise = unit.layers
            h = act(x)
            return residual_add(x, pointwise(act2(conv(h)), out=h))  # (module calls: hooks still run)
        return residual_add(x, unit.layers(x))

    return forward


def coder_forward(coder: OobleckEncoder | OobleckDecoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replacement ``forward`` of an Oobleck encoder or decoder: adaptive layout, cached weights."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not eager_inference():
            return type(coder).forward(coder, x)
        with cached_weights():
            return run_layers(coder.layers, x)

    return forward


def inplace_activations(model: nn.Module) -> set[int]:
    """``id``s of the activations of ``model``'s Oobleck coders that may overwrite their input."""
    ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, ResidualUnit):
            ids.add(id(m.layers[2]))  # on the dilated conv's output
        elif isinstance(m, OobleckEncoder):
            ids.add(id(m.layers[-2]))  # on the last block's output
            ids.update(id(b.layers[-2]) for b in m.layers if isinstance(b, EncoderBlock))  # on a residual output
        elif isinstance(m, OobleckDecoder):
            ids.add(id(m.layers[-3]))  # on the last block's output
            # a block's input is the first conv's or the previous block's output
            ids.update(id(b.layers[0]) for b in m.layers if isinstance(b, DecoderBlock))
    return ids
