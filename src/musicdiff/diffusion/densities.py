"""Training-time densities for the diffusion time ``t`` of the v-objective.

SA2 trains with ``t ~ U[0, 1]`` (REFERENCE.md). The logit-normal density ``t = sigmoid(m + s·z)``,
``z ~ N(0, 1)`` (Esser et al., "Scaling Rectified Flow Transformers", arXiv 2403.03206, eq. 19)
is offered as an option; it concentrates training on intermediate noise levels.
"""

from __future__ import annotations

import torch


class UniformTimesteps:
    """``t ~ U[t_min, t_max]`` (SA2 uses [0, 1])."""

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0) -> None:
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        self.t_min, self.t_max = t_min, t_max

    def __call__(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` times on ``device``."""
        u = torch.rand(n, generator=generator, device=generator.device if generator else device)
        return (self.t_min + (self.t_max - self.t_min) * u).to(device)


class LogitNormalTimesteps:
    """``t = sigmoid(mean + std·z)``, ``z ~ N(0, 1)`` (Esser et al. 2024, eq. 19)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std = mean, std

    def __call__(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` times on ``device``."""
        z = torch.randn(n, generator=generator, device=generator.device if generator else device)
        return torch.sigmoid(self.mean + self.std * z).to(device)
