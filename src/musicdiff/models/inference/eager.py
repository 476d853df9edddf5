"""When the inference fast paths may act, and the in-place residual sum they share.

Without autograd and outside ``torch.compile`` (which fuses these ops itself), a sum can be written
into a freshly computed branch output instead of a new buffer: the same values, one full-size
allocation less per residual connection.
"""

from __future__ import annotations

import torch


def eager_inference() -> bool:
    """True outside autograd and ``torch.compile``, where in-place updates of fresh outputs are safe."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def residual_add(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``x + branch``; in eager inference written into ``branch`` (a fresh output nothing else reads)
    when that keeps the dtype ``x + branch`` would have (e.g. not for bf16 branches of an fp32 stream)."""
    if eager_inference() and branch.dtype == torch.promote_types(x.dtype, branch.dtype):
        return branch.add_(x)
    return x + branch
