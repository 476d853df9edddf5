"""MKL packed-weight GEMMs for float32 CPU inference.

During sampling the DiT's weights are constant for tens of forward passes with the same shapes.
MKL can pack a weight matrix once into its GEMM kernel's internal layout
(``cblas_sgemm_pack``) so that every later product skips the packing step; ``torch.compile``'s
CPU backend does the same when freezing weights. :func:`packed_linears` gives eager models that
for the duration of a ``with`` block: each ``nn.Linear`` of the module computes through
``torch.ops.mkl._mkl_linear`` with its weight packed per input row count (packed lazily, on the
first call with that many rows). Measured on the Stable-Audio-Open-shaped DiT
(``experiments/bench/sat_parity_speed.py``): ~1.1x per denoiser call on CPU, outputs within
~3e-6 of the unpacked ones (the bias is added after the product instead of inside it).

The packed copies cost one extra copy of the linear weights per distinct row count while the
block is active and are dropped on exit. Nothing is packed under autograd (the weights would go
stale after an optimiser step), for non-float32 inputs (autocast), off the CPU, inside
``torch.compile``, or where PyTorch was built without MKL: those calls take ``nn.Linear``'s own
path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["packed_gemm_available", "packed_linears"]


def packed_gemm_available() -> bool:
    """True where this PyTorch build has MKL's packed GEMM ops."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class _PackedForward:
    """Replacement ``forward`` of one ``nn.Linear``: the packed GEMM where it applies."""

    def __init__(self, linear: nn.Linear) -> None:
        self.linear = linear
        self.packed: dict[int, torch.Tensor] = {}

    def _applies(self, x: torch.Tensor) -> bool:
        w = self.linear.weight
        return (x.device.type == "cpu" and w.device.type == "cpu" and x.dtype == torch.float32
                and w.dtype == torch.float32 and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and x.ndim >= 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        if not self._applies(x):
            return nn.Linear.forward(lin, x)
        rows = x.reshape(-1, x.shape[-1])
        m = rows.shape[0]
        if m == 0:
            return nn.Linear.forward(lin, x)
        packed = self.packed.get(m)
        if packed is None:
            packed = self.packed[m] = torch.ops.mkl._mkl_reorder_linear_weight(lin.weight, m)
        out = torch.ops.mkl._mkl_linear(rows.contiguous(), packed, lin.weight, lin.bias, m)
        return out.reshape(*x.shape[:-1], out.shape[-1])


@contextlib.contextmanager
def packed_linears(module: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``module``'s ``nn.Linear`` layers use packed-weight GEMMs where they apply.

    Yields the number of linear layers switched (0 when disabled or unavailable). The layers'
    own ``forward`` is restored on exit, also after an exception.
    """
    if not enabled or not packed_gemm_available() or hasattr(module, "_orig_mod"):  # compiled: Inductor's own
        yield 0
        return
    patched = [m for m in module.modules() if type(m) is nn.Linear and "forward" not in vars(m)]
    for m in patched:
        m.forward = _PackedForward(m)
    try:
        yield len(patched)
    finally:
        for m in patched:
            del m.forward
