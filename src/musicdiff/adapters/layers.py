"""Low-rank updates of one linear layer ``y = x Wᵀ + b``: LoRA, DoRA and LoRA-XS.

Each module computes the change of the layer's output, ``Δy = x ΔWᵀ``, from the layer input ``x``
and its base output, and the equivalent dense ``ΔW`` (for merging and diagnostics). Scales and
noise-level gating are applied by the caller (:mod:`musicdiff.adapters.stack`), so an adapter at
scale ``s`` is exactly the layer ``W + s·ΔW`` and several adapters stack as a sum of updates.

- LoRA (Hu et al., arXiv 2106.09685, eq. 3): ``ΔW = (α/r)·B A``, ``A`` Kaiming-uniform, ``B = 0``.
- DoRA (Liu et al., arXiv 2402.09353, eq. 5): ``W' = m ⊙ (W + (α/r) B A) / ‖W + (α/r) B A‖_c`` with a
  trained magnitude ``m`` (initialised to the row norms ``‖W‖_c``) and the norm detached (§4.3), so
  ``ΔW = W' − W``.
- LoRA-XS (Bałazy et al., arXiv 2405.17604, eq. 2): ``ΔW = (α/r)·U_r Σ_r R V_rᵀ`` with the truncated
  SVD of the base weight frozen and only the ``r×r`` matrix ``R`` trained (``R = 0`` at start; its
  gradient ``(UΣ)ᵀ G V`` is not zero, so it learns).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _lin(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x.to(weight.dtype), weight)


class LoRALayer(nn.Module):
    """``ΔW = (α/r)·B A`` (LoRA eq. 3).

    Args:
        in_features: input width of the base layer.
        out_features: output width of the base layer.
        rank: ``r``.
        scaling: ``α/r``.
        dropout: dropout on the branch input while training.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.scaling = float(scaling)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """``(α/r)·x Aᵀ Bᵀ`` with dropout on ``x``."""
        return _lin(_lin(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    def delta(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Linear) -> torch.Tensor:  # noqa: ARG002
        """``Δy = x ΔWᵀ``."""
        return self.branch(x)

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        """Dense ``ΔW`` ``[out, in]`` (float32)."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling


class DoRALayer(LoRALayer):
    """Weight-decomposed LoRA: a trained per-output magnitude ``m`` times a LoRA-updated direction.

    Args:
        weight: the base weight ``[out, in]``; ``m`` starts at its row norms so ``ΔW = 0``.
        rank, scaling, dropout: as :class:`LoRALayer`.
    """

    def __init__(self, weight: torch.Tensor, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__(weight.shape[1], weight.shape[0], rank, scaling, dropout)
        self.magnitude = nn.Parameter(weight.detach().float().norm(dim=1))

    def _ratio(self, weight: torch.Tensor) -> torch.Tensor:
        """``m / ‖W + (α/r) B A‖_c`` per output, the norm detached (DoRA §4.3)."""
        with torch.no_grad():
            norm = (weight.float() + super().delta_weight(weight)).norm(dim=1).clamp_min(1e-12)
        return self.magnitude / norm

    def delta(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """``Δy = (m/n − 1)·x Wᵀ + (m/n)·(α/r)·x Aᵀ Bᵀ`` with ``x Wᵀ = base_out − b``."""
        xw = base_out if layer.bias is None else base_out - layer.bias
        ratio = self._ratio(layer.weight)
        return (ratio - 1.0) * xw.float() + ratio * self.branch(x).float()

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """Dense ``ΔW = m ⊙ (W + (α/r)BA)/‖·‖_c − W`` (float32)."""
        w = weight.float()
        return self._ratio(weight)[:, None] * (w + super().delta_weight(weight)) - w


class LoRAXSLayer(nn.Module):
    """``ΔW = (α/r)·(U_r Σ_r) R V_rᵀ``: frozen truncated SVD of ``W``, trained ``R`` (``r×r``).

    Args:
        weight: the base weight ``[out, in]`` (its truncated SVD becomes the frozen buffers).
        rank: ``r`` (at most ``min(out, in)``).
        scaling: ``α/r``.
        dropout: dropout on the branch input while training.
    """

    def __init__(self, weight: torch.Tensor, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        out_f, in_f = weight.shape
        if rank > min(out_f, in_f):
            raise ValueError(f"LoRA-XS rank {rank} exceeds min(out, in) = {min(out_f, in_f)} of a {out_f}x{in_f} layer")
        u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
        self.scaling = float(scaling)
        self.register_buffer("xs_B", (u[:, :rank] * s[:rank]).contiguous())  # U_r Σ_r  [out, r]
        self.register_buffer("xs_A", vh[:rank].contiguous())                  # V_rᵀ     [r, in]
        self.xs_R = nn.Parameter(torch.zeros(rank, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta(self, x: torch.Tensor, base_out: torch.Tensor, layer: nn.Linear) -> torch.Tensor:  # noqa: ARG002
        """``Δy = (α/r)·x V_r Rᵀ (U_rΣ_r)ᵀ``."""
        return _lin(_lin(_lin(self.dropout(x), self.xs_A), self.xs_R), self.xs_B) * self.scaling

    def delta_weight(self, weight: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        """Dense ``ΔW`` ``[out, in]`` (float32)."""
        return (self.xs_B @ self.xs_R.float() @ self.xs_A) * self.scaling


def make_layer(kind: str, layer: nn.Linear, rank: int, scaling: float, dropout: float) -> nn.Module:
    """The adapter module of ``kind`` for the base ``layer`` (float32 parameters on its device)."""
    if kind == "lora":
        mod: nn.Module = LoRALayer(layer.in_features, layer.out_features, rank, scaling, dropout)
    elif kind == "dora":
        mod = DoRALayer(layer.weight, rank, scaling, dropout)
    elif kind == "lora_xs":
        mod = LoRAXSLayer(layer.weight, rank, scaling, dropout)
    else:
        raise ValueError(f"no adapter layer for kind {kind!r}")
    return mod.to(device=layer.weight.device, dtype=torch.float32)
