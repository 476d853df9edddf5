"""Training-time densities for the diffusion time ``t`` (v-objective and rectified flow).

SA2 trains with ``t ~ U[0, 1]`` (REFERENCE.md). The logit-normal density ``t = sigmoid(m + s·z)``,
``z ~ N(0, 1)`` (Esser et al., "Scaling Rectified Flow Transformers", arXiv 2403.03206, eq. 19)
concentrates training on intermediate noise levels. The densities stable-audio-tools 0.0.19 offers
(``timestep_sampler`` of its diffusion training wrapper) are all here, drawing the same numbers from
the same seed: ``uniform`` (SAT draws a scrambled Sobol sequence, we draw i.i.d.), ``logit_normal``
(:class:`LogitNormalTimesteps` with mean 0, std 1), ``trunc_logit_normal``
(:class:`TruncatedLogitNormalTimesteps`) and ``log_snr`` (:class:`LogSNRTimesteps`).
:class:`TimeShift` is SAT's length-dependent ``DistributionShift`` (the resolution-dependent
timestep shift of Esser et al. 2024, Sec. 5.3.2), applied after any density.

Every density draws exactly one ``randn``/``rand`` of ``n`` values, so a generator seeded like
torch's global RNG reproduces SAT's draws.
"""

from __future__ import annotations

import math

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


class TruncatedLogitNormalTimesteps:
    """SAT's ``trunc_logit_normal``: a logit-normal truncated to ``t >= left``, rescaled, flipped.

    ``u = Φ(z)``, ``z ~ N(0, 1)``, is mapped linearly into ``[Φ(logit(left)), Φ(logit(right))]``,
    then ``s = sigmoid(Φ⁻¹(u'))``, ``s' = (s − left)/(right − left)`` and ``t = 1 − s'`` (with
    ``flip``): the mass sits at high noise, and the low-noise tail below ``1 − …`` is cut.

    Args:
        left: lower truncation point of the logit-normal (SAT: 0.075).
        right: upper truncation point (SAT: 1, i.e. none).
        flip: return ``1 − t`` as SAT's training wrapper does.
    """

    def __init__(self, left: float = 0.075, right: float = 1.0, flip: bool = True) -> None:
        if not 0.0 < left < right <= 1.0:
            raise ValueError(f"need 0 < left < right <= 1, got left={left}, right={right}")
        self.left, self.right, self.flip = left, right, flip

    def __call__(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` times on ``device``."""
        z = torch.randn(n, generator=generator, device=generator.device if generator else "cpu")
        normal = torch.distributions.Normal(0.0, 1.0)
        lo = normal.cdf(torch.logit(torch.tensor(self.left)))
        hi = normal.cdf(torch.logit(torch.tensor(self.right)))
        s = torch.sigmoid(normal.icdf(lo + (hi - lo) * normal.cdf(z)))
        t = (s - self.left) / (self.right - self.left)
        return (1 - t if self.flip else t).to(device)


class LogSNRTimesteps:
    """SAT's ``log_snr``: ``λ ~ N(mean, std²)`` on ``λ = log((1−t)/t)``, ``t = sigmoid(−λ)``.

    For the rectified-flow interpolant ``x_t = (1−t)·x0 + t·eps`` this ``λ`` is the half log-SNR
    (Kingma et al., "Variational Diffusion Models", arXiv 2107.00630). Clamped to [1e-4, 1 − 1e-4].

    Args:
        mean: mean of ``λ`` (SAT: −1.2).
        std: standard deviation of ``λ`` (SAT: 2.0).
    """

    def __init__(self, mean: float = -1.2, std: float = 2.0) -> None:
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean, self.std = mean, std

    def __call__(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` times on ``device``."""
        z = torch.randn(n, generator=generator, device=generator.device if generator else "cpu")
        return torch.sigmoid(-(z * self.std + self.mean)).clamp(1e-4, 1 - 1e-4).to(device)


class TimeShift:
    """Length-dependent time shift (SAT ``DistributionShift``; Esser et al. 2024, Sec. 5.3.2).

    ``mu = −(base + (max − base)·(L − min_length)/(max_length − min_length))`` for a sequence of
    ``L`` latent frames and ``t' = 1 − e^mu / (e^mu + t/(1 − t))``, i.e. the shift
    ``t' = s·t / (1 + (s − 1)·t)`` with ``s = e^(−mu)``: longer sequences spend more time at high noise.

    Args:
        base_shift: ``mu`` magnitude at ``min_length`` (SAT: 0.5).
        max_shift: ``mu`` magnitude at ``max_length`` (SAT: 1.15).
        min_length: sequence length of ``base_shift`` (SAT: 256).
        max_length: sequence length of ``max_shift`` (SAT: 4096).
        use_sine: map ``t' -> sin(π t'/2)`` afterwards (SAT option).
    """

    def __init__(
        self,
        base_shift: float = 0.5,
        max_shift: float = 1.15,
        min_length: int = 256,
        max_length: int = 4096,
        use_sine: bool = False,
    ) -> None:
        if max_length <= min_length:
            raise ValueError(f"need max_length > min_length, got {max_length} <= {min_length}")
        self.base_shift, self.max_shift = base_shift, max_shift
        self.min_length, self.max_length, self.use_sine = min_length, max_length, use_sine

    def mu(self, length: int) -> float:
        """The shift parameter ``mu`` for ``length`` latent frames."""
        frac = (length - self.min_length) / (self.max_length - self.min_length)
        return -(self.base_shift + (self.max_shift - self.base_shift) * frac)

    def __call__(self, t: torch.Tensor, length: int) -> torch.Tensor:
        """Shift times ``t`` in [0, 1] for a sequence of ``length`` latent frames."""
        e = math.exp(self.mu(length))
        out = 1 - e / (e + (1 / (1 - t) - 1))
        return torch.sin(out * math.pi / 2) if self.use_sine else out
