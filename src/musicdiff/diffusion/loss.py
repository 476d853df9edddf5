"""The v-objective training loss with padding masks and a configurable timestep density.

Salimans & Ho (arXiv 2202.00512) eq. (9)-(10) in the SA2 setting (REFERENCE.md): draw
``t ~ p(t)``, noise ``x_t = alpha·x0 + sigma·eps`` and regress the network output on
``v = alpha·eps − sigma·x0`` with a mean squared error. Latent frames marked as padding
(``padding_mask`` False) are excluded from the mean, so short items padded to the window are not
trained to predict the padding.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from musicdiff.diffusion.densities import UniformTimesteps
from musicdiff.diffusion.v_noising import add_noise


class VObjectiveLoss(nn.Module):
    """``loss(model, x0, cond, padding_mask) -> (scalar, info)``.

    Args:
        timestep_density: callable ``(n, device, generator) -> t [n]`` (default ``U[0, 1]``).
    """

    objective = "v"  # the name generation uses to pick the denoiser (musicdiff.diffusion.objectives)

    def __init__(self, timestep_density: Callable[..., torch.Tensor] | None = None) -> None:
        super().__init__()
        self.timestep_density = timestep_density or UniformTimesteps()

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
            generator: optional RNG for ``t`` and the noise (reproducible tests).

        Returns:
            The mean squared error over real frames, and ``{"t": [B], "mse": [B]}`` per item.
        """
        if x0.ndim != 3:
            raise ValueError(f"x0 must be [B, D, L], got {tuple(x0.shape)}")
        t = self.timestep_density(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t, v = add_noise(x0, noise, t)
        return regression_loss(model, x_t, t, v, cond, padding_mask)


def regression_loss(model: Callable[..., torch.Tensor], x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor,
                    cond: Mapping[str, Any] | None, padding_mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The network's prediction at ``(x_t, t)`` scored against ``target`` over the real frames (every objective).

    Returns:
        The masked mean squared error, and ``{"t": [B], "mse": [B]}`` per item.
    """
    pred = model(x_t, t, **{k: val for k, val in (cond or {}).items() if val is not None})
    loss, per_item = masked_mse(pred, target, padding_mask)
    return loss, {"t": t.detach(), "mse": per_item.detach()}


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over the real frames of ``[B, D, L]`` tensors.

    Args:
        pred: network output ``[B, D, L]``.
        target: regression target, same shape.
        padding_mask: bool ``[B, L]``, True on real frames; None = all real.

    Returns:
        ``(loss, per_item)``: the mean over all real entries and the ``[B]`` per-item means.
    """
    err = (pred.float() - target.float()) ** 2
    if padding_mask is None:
        mse = err.mean(dim=(1, 2))
        return mse.mean(), mse
    b, _, length = err.shape
    if padding_mask.shape != (b, length):
        raise ValueError(f"padding_mask must be [B, L] = {(b, length)}, got {tuple(padding_mask.shape)}")
    w = padding_mask.to(device=err.device, dtype=err.dtype)[:, None, :].expand_as(err)
    per_item = (err * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)).clamp(min=1.0))
    return (err * w).sum() / w.sum().clamp(min=1.0), per_item
