"""The rectified-flow training loss (stable-audio-tools' ``rectified_flow`` objective).

Esser et al., "Scaling Rectified Flow Transformers" (arXiv 2403.03206) eq. (1)-(3) with the
"rf" velocity target, as stable-audio-tools 0.0.19 trains it (``DiffusionCondTrainingWrapper``):
draw ``t ~ p(t)`` (then the optional length-dependent :class:`~musicdiff.diffusion.TimeShift`),
``x_t = (1 − t)·x0 + t·eps`` and regress the network output on ``v = eps − x0`` with a mean
squared error over the real (non-padding) latent frames. SAT's ``rf_denoiser`` objective trains
with exactly this loss; it only marks a model meant for few-step ping-pong sampling without
guidance, so it is the ``objective`` name, not a different class.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from musicdiff.diffusion.densities import LogitNormalTimesteps, TimeShift
from musicdiff.diffusion.flow import add_flow_noise
from musicdiff.diffusion.loss import regression_loss

FLOW_OBJECTIVE_NAMES = ("rectified_flow", "rf_denoiser")


class RectifiedFlowLoss(nn.Module):
    """``loss(model, x0, cond, padding_mask) -> (scalar, info)`` for a velocity-predicting network.

    Args:
        timestep_density: callable ``(n, device, generator) -> t [n]`` (default logit-normal(0, 1),
            SAT's ``logit_normal``).
        time_shift: optional :class:`TimeShift` applied to ``t`` for the batch's latent length
            (SAT's ``distribution_shift_options``).
        objective: ``rectified_flow`` or ``rf_denoiser`` (same loss; recorded for generation).
    """

    def __init__(
        self,
        timestep_density: Callable[..., torch.Tensor] | None = None,
        time_shift: TimeShift | None = None,
        objective: str = "rectified_flow",
    ) -> None:
        super().__init__()
        if objective not in FLOW_OBJECTIVE_NAMES:
            raise ValueError(f"objective must be one of {FLOW_OBJECTIVE_NAMES}, got {objective!r}")
        self.timestep_density = timestep_density or LogitNormalTimesteps()
        self.time_shift = time_shift
        self.objective = objective

    def forward(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        cond: Mapping[str, Any] | None = None,
        padding_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss on one batch.

        Args:
            model: ``model(x_t, t, **cond) -> v`` (the raw network, no preconditioning).
            x0: clean latents ``[B, D, L]``.
            cond: conditioning keyword arguments for the model (may hold None values).
            padding_mask: bool ``[B, L]``, True on real frames; None = all real.
            generator: optional RNG for ``t`` and the noise (drawn in that order, as SAT does).

        Returns:
            The mean squared error over real frames, and ``{"t": [B], "mse": [B]}`` per item.
        """
        if x0.ndim != 3:
            raise ValueError(f"x0 must be [B, D, L], got {tuple(x0.shape)}")
        t = self.timestep_density(x0.shape[0], x0.device, generator)
        if self.time_shift is not None:
            t = self.time_shift(t, x0.shape[-1])
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device,
                            dtype=x0.dtype).to(x0.device)
        x_t, v = add_flow_noise(x0, noise, t)
        return regression_loss(model, x_t, t, v, cond, padding_mask)
