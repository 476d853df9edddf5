"""One switch for every inference fast path: ``with fast_inference(autoencoder, dit): ...``.

The model files build plain layers that read like the paper. For inference the speed code of
this package is applied from outside, by replacing the ``forward`` of the modules it applies to
for the duration of a ``with`` block (instance attributes, removed on exit, also after an
exception). Parameters, buffers and state dicts are untouched. Every replacement takes the
module's own ``forward`` under autograd and inside ``torch.compile``, so the switch never changes
training; without autograd the outputs equal the plain ones bit for bit (in-place SnakeBeta and
residual sums) or to float32 rounding (channels-last layout, polyphase upsampling, packed GEMMs:
other summation orders).

==============================================  ==============================================
module                                          inference form
==============================================  ==============================================
``OobleckEncoder`` / ``OobleckDecoder``         per-layer channels-last layout, cached weight norm
``AudioAutoencoder.encode/decode_chunked``      weight norm computed once for all windows
``ResidualUnit``                                in-place residual sum (NWC: into a dead buffer)
``SnakeBeta``                                   one buffer, or in place on fresh intermediates
``nn.Conv1d`` / ``nn.Upsample`` (in the VAE)    channels-last inputs
``nn.ConvTranspose1d`` (in the VAE)             polyphase form on long inputs
``TransformerBlock``                            in-place residuals, zero-token rows skip cross-attention
``GLU``                                         product into the SiLU buffer
``nn.Linear`` (``packed_gemm=True``)            MKL packed-weight GEMMs (fp32 CPU)
==============================================  ==============================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn

from musicdiff.models.autoencoder.autoencoder import AudioAutoencoder
from musicdiff.models.autoencoder.blocks import ResidualUnit
from musicdiff.models.autoencoder.oobleck import OobleckDecoder, OobleckEncoder
from musicdiff.models.autoencoder.snake import SnakeBeta
from musicdiff.models.dit.blocks import GLU, TransformerBlock
from musicdiff.models.inference.dit import ContextRows, glu_forward, transformer_block_forward
from musicdiff.models.inference.layout import conv1d_forward, upsample_forward
from musicdiff.models.inference.oobleck import (
    coder_forward,
    inplace_activations,
    residual_unit_forward,
    with_cached_weights,
)
from musicdiff.models.inference.packed_gemm import packed_linears
from musicdiff.models.inference.polyphase import transposed_conv_forward
from musicdiff.models.inference.snake import snake_forward

__all__ = ["fast_inference"]

_CHUNKED = ("encode_chunked", "decode_chunked")


def _plain_modules(model: nn.Module) -> Iterator[nn.Module]:
    """``model``'s modules, skipping ``torch.compile`` wrappers (Inductor fuses those itself)."""
    if hasattr(model, "_orig_mod"):
        return
    yield model
    for child in model.children():
        yield from _plain_modules(child)


def _replacements(model: nn.Module, rows: ContextRows) -> Iterator[tuple[nn.Module, str, Callable]]:
    """``(module, attribute, replacement)`` for every fast path that applies inside ``model``."""
    inplace = inplace_activations(model)
    vae_parts = {id(m) for c in _plain_modules(model) if isinstance(c, (OobleckEncoder, OobleckDecoder))
                 for m in _plain_modules(c)}
    for m in _plain_modules(model):
        if isinstance(m, (OobleckEncoder, OobleckDecoder)):
            yield m, "forward", coder_forward(m)
        elif isinstance(m, AudioAutoencoder):
            for name in _CHUNKED:
                yield m, name, with_cached_weights(getattr(m, name))
        elif isinstance(m, ResidualUnit):
            yield m, "forward", residual_unit_forward(m)
        elif isinstance(m, SnakeBeta):
            yield m, "forward", snake_forward(m, id(m) in inplace)
        elif isinstance(m, TransformerBlock):
            yield m, "forward", transformer_block_forward(m, rows)
        elif isinstance(m, GLU):
            yield m, "forward", glu_forward(m)
        elif id(m) in vae_parts and isinstance(m, nn.Conv1d):
            yield m, "forward", conv1d_forward(m)
        elif id(m) in vae_parts and isinstance(m, nn.ConvTranspose1d):
            yield m, "forward", transposed_conv_forward(m)
        elif id(m) in vae_parts and isinstance(m, nn.Upsample) and m.mode == "nearest":
            yield m, "forward", upsample_forward(m)


@contextlib.contextmanager
def fast_inference(*models: nn.Module | None, packed_gemm: bool = True, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``models`` (autoencoder, DiT, ...) run their inference fast paths.

    Args:
        models: built models (None entries are ignored). Modules already switched (an enclosing
            block, or another patch such as an adapter's) are left as they are.
        packed_gemm: also let the ``nn.Linear`` layers use MKL packed-weight GEMMs in float32 on CPU
            (:mod:`musicdiff.models.inference.packed_gemm`).
        enabled: False makes the block a no-op (the plain model runs).

    Yields:
        The number of modules switched (0 when disabled).
    """
    if not enabled:
        yield 0
        return
    rows = ContextRows()
    patched: list[tuple[nn.Module, str]] = []
    linears = 0
    try:
        with contextlib.ExitStack() as stack:
            for model in models:
                if model is None:
                    continue
                for module, name, replacement in _replacements(model, rows):
                    if name in vars(module):
                        continue
                    setattr(module, name, replacement)
                    patched.append((module, name))
                if packed_gemm:  # restored by packed_linears' own exit
                    linears += stack.enter_context(packed_linears(model))
            yield len(patched) + linears
    finally:
        for module, name in patched:
            delattr(module, name)
        rows.clear()
