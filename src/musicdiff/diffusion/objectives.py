"""Which denoiser a trained network needs: its objective and the sampler's space.

The objective a DiT was trained with (the ``diffusion`` config group, saved in the run's
``config.yaml`` and carried by exports) decides what its output means: ``v`` (SA2's v-objective,
:class:`~musicdiff.diffusion.VObjectiveLoss`) or ``rectified_flow`` / ``rf_denoiser`` (velocity
``eps − x0``, :class:`~musicdiff.diffusion.RectifiedFlowLoss`). The sampler decides the space it
integrates in (``ve`` sigmas or ``flow`` times, :class:`~musicdiff.sampling.SamplerSpec`).
:func:`make_denoiser` returns the wrapper for each of the four pairs, so any sampler runs any model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from musicdiff.diffusion.denoiser import VDenoiser
from musicdiff.diffusion.flow_denoiser import FlowDenoiser, FlowSigmaDenoiser, VFlowDenoiser
from musicdiff.diffusion.rf_loss import FLOW_OBJECTIVE_NAMES

OBJECTIVES = ("v", *FLOW_OBJECTIVE_NAMES)
SPACES = ("ve", "flow")
_BY_TARGET = {"VObjectiveLoss": "v", "RectifiedFlowLoss": "rectified_flow"}


def objective_family(objective: str) -> str:
    """``"v"`` or ``"flow"`` for an objective name; a clear error for anything else."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown diffusion objective {objective!r}; expected one of {OBJECTIVES}")
    return "v" if objective == "v" else "flow"


def objective_of(diffusion: Any) -> str:
    """The objective name of a loss module, a ``diffusion`` config node, a name, or None (= ``v``).

    Args:
        diffusion: a loss with an ``objective`` attribute; a mapping / DictConfig with an
            ``objective`` key or a ``_target_`` naming ``VObjectiveLoss`` / ``RectifiedFlowLoss``;
            an objective name; or None (configs from before rectified flow existed: ``v``).

    Returns:
        One of :data:`OBJECTIVES`.
    """
    if diffusion is None:
        return "v"
    if isinstance(diffusion, str):
        name = diffusion
    elif isinstance(diffusion, Mapping) or hasattr(diffusion, "keys"):
        name = diffusion.get("objective")
        if name is None:
            target = str(diffusion.get("_target_", ""))
            name = _BY_TARGET.get(target.rsplit(".", 1)[-1])
            if name is None:
                raise ValueError(f"cannot tell the diffusion objective of _target_={target!r}")
    else:
        name = getattr(diffusion, "objective", None)
        if name is None:
            raise ValueError(f"{type(diffusion).__name__} has no 'objective' attribute")
    objective_family(name)
    return name


def make_denoiser(net: nn.Module, objective: str = "v", space: str = "ve") -> nn.Module:
    """Wrap a raw network in the denoiser a sampler of ``space`` calls.

    Args:
        net: the DiT (``net(x, t, **cond)``).
        objective: what ``net`` predicts (:data:`OBJECTIVES`).
        space: ``ve`` (k-diffusion sigmas) or ``flow`` (flow times).

    Returns:
        ``denoiser(x, s, **cond) -> x0_hat`` with ``s`` a sigma (``ve``) or a flow time (``flow``).
    """
    if space not in SPACES:
        raise ValueError(f"sampler space must be one of {SPACES}, got {space!r}")
    family = objective_family(objective)
    if family == "v":
        return VDenoiser(net) if space == "ve" else VFlowDenoiser(net)
    return FlowSigmaDenoiser(net) if space == "ve" else FlowDenoiser(net)
