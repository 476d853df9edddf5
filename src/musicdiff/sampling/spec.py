"""``SamplerSpec``: one sampler configuration (the object a ``conf/sampler/*.yaml`` builds).

It bundles the sampler function, the sigma schedule and its range, the step count and the
classifier-free-guidance settings, so the generation pipeline and training demos only call
``spec.sigmas(device)``, ``spec.guided(denoiser)`` and ``spec.run(denoiser, x, extra_args)``.
Defaults are Stable Audio Open's: DPM-Solver++(3M) SDE, 100 steps, polyexponential sigmas
(rho 1) from 500 to 0.3, CFG 7 ([SAO] model card).

``space`` says what the schedule's numbers are: ``ve`` sigmas of k-diffusion samplers
(``x = x0 + σ·eps``) or ``flow`` times of the flow samplers (``x = (1 − t)·x0 + t·eps``, ``t`` in
(0, 1]; :mod:`musicdiff.sampling.flow_samplers`). For flow specs ``sigma_max`` is the starting
time (1 = noise) and ``sigma_min`` may be None when the schedule has no lower end.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from musicdiff.sampling.guidance import CFGDenoiser
from musicdiff.sampling.noise import default_noise_sampler
from musicdiff.sampling.sigma_schedules import get_sigmas_polyexponential

__all__ = ["SamplerSpec"]


def _accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` (possibly a partial) takes a parameter ``name`` not yet bound."""
    if isinstance(fn, functools.partial) and name in fn.keywords:
        return False
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False


def _name(fn: Callable) -> str:
    return getattr(fn.func if isinstance(fn, functools.partial) else fn, "__name__", repr(fn))


class SamplerSpec:
    """A sampler: function, schedule, steps, sigma range and guidance settings.

    Args:
        fn: Sampler ``fn(model, x, sigmas, extra_args=None, callback=None, disable=None)``,
            usually a partial with its options bound (eta, s_noise...).
        steps: Number of sampling steps (denoiser evaluations for 1st-order / multistep samplers).
        schedule: ``schedule(n, sigma_min, sigma_max, [rho,] device=...) -> sigmas [n+1]``
            (a partial of a ``get_sigmas_*`` function).
        sigma_min: Smallest non-zero sigma; None for schedules that take none (it is then passed
            to the schedule only if the schedule has a ``sigma_min`` parameter).
        sigma_max: Starting sigma for generation from noise (flow: starting time, at most 1).
        rho: Schedule curvature passed to ``schedule``; None for schedules without one.
        cfg_scale: Classifier-free guidance scale.
        cfg_rescale: CFG-rescale factor ``phi`` (0: off).
        cfg_interval: ``(sigma_lo, sigma_hi)`` where guidance applies.
        noise_sampler: Factory ``(x, sigma_min, sigma_max, seed) -> noise_sampler`` for samplers
            that take a ``noise_sampler``; None: Brownian tree (Gaussian without torchsde).
        name: Display name (defaults to the function name).
        space: ``ve`` (k-diffusion sigmas) or ``flow`` (flow times); the Generator wraps the
            network in the denoiser of this space (:func:`musicdiff.diffusion.make_denoiser`).
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        steps: int = 100,
        schedule: Callable[..., torch.Tensor] = get_sigmas_polyexponential,
        sigma_min: float | None = 0.3,
        sigma_max: float = 500.0,
        rho: float | None = 1.0,
        cfg_scale: float = 7.0,
        cfg_rescale: float = 0.0,
        cfg_interval: Sequence[float] = (0.0, 1e9),
        noise_sampler: Callable[..., Callable] | None = None,
        name: str | None = None,
        space: str = "ve",
    ) -> None:
        if isinstance(fn, str):
            raise ValueError(f"fn must be a callable (use `_target_` + `_partial_: true`), got the string {fn!r}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if space not in ("ve", "flow"):
            raise ValueError(f"space must be 've' or 'flow', got {space!r}")
        if sigma_min is None and _accepts(schedule, "sigma_min"):
            raise ValueError(f"schedule {_name(schedule)} needs sigma_min")
        if not 0 < (sigma_max if sigma_min is None else sigma_min) <= sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if space == "flow" and sigma_max > 1:
            raise ValueError(f"a flow sampler starts at a time sigma_max <= 1, got {sigma_max}")
        if rho is not None and not _accepts(schedule, "rho"):
            raise ValueError(f"schedule {_name(schedule)} takes no rho; set rho: null")
        self.fn = fn
        self.steps = int(steps)
        self.schedule = schedule
        self.sigma_min = None if sigma_min is None else float(sigma_min)
        self.space = space
        self.sigma_max = float(sigma_max)
        self.rho = None if rho is None else float(rho)
        self.cfg_scale = float(cfg_scale)
        self.cfg_rescale = float(cfg_rescale)
        lo, hi = (float(v) for v in cfg_interval)
        self.cfg_interval = (lo, hi)
        self.noise_sampler = default_noise_sampler if noise_sampler is None else noise_sampler
        self.name = name or _name(fn)
        self.guided(lambda x, sigma, **kw: x)  # validates the CFG settings early

    def __repr__(self) -> str:
        return (
            f"SamplerSpec({self.name}, steps={self.steps}, schedule={_name(self.schedule)}, "
            f"sigma=[{self.sigma_min}, {self.sigma_max}], rho={self.rho}, cfg_scale={self.cfg_scale}, "
            f"space={self.space})"
        )

    def sigmas(
        self,
        device: str | torch.device = "cpu",
        steps: int | None = None,
        sigma_max: float | None = None,
        length: int | None = None,
    ) -> torch.Tensor:
        """The sampling schedule ``[steps + 1]`` (decreasing, ending in 0).

        Args:
            device: Device of the tensor.
            steps: Overrides ``self.steps``.
            sigma_max: Overrides ``self.sigma_max`` (audio-to-audio starts at ``init_noise_level``).
            length: Latent frames of the sample, for schedules that take a ``length`` (time shift).

        Returns:
            Sigmas tensor.
        """
        sigma_max = self.sigma_max if sigma_max is None else float(sigma_max)
        if not sigma_max > (0.0 if self.sigma_min is None else self.sigma_min):
            raise ValueError(f"starting sigma {sigma_max} must be > sigma_min ({self.sigma_min or 0.0})")
        if self.space == "flow" and sigma_max > 1:
            raise ValueError(f"a flow sampler's starting time (init_noise_level) must be <= 1, got {sigma_max}")
        kwargs: dict[str, Any] = {"device": device, "sigma_max": sigma_max}
        if self.rho is not None:
            kwargs["rho"] = self.rho
        if _accepts(self.schedule, "sigma_min"):
            kwargs["sigma_min"] = self.sigma_min
        if length is not None and _accepts(self.schedule, "length"):
            kwargs["length"] = int(length)
        return self.schedule(self.steps if steps is None else int(steps), **kwargs)

    def guided(self, denoiser: Callable[..., torch.Tensor], scale: float | None = None) -> CFGDenoiser:
        """Wraps ``denoiser`` in a :class:`CFGDenoiser` with this spec's guidance settings."""
        scale = self.cfg_scale if scale is None else scale
        return CFGDenoiser(denoiser, scale=scale, rescale=self.cfg_rescale, interval=self.cfg_interval)

    def run(
        self,
        denoiser: Callable[..., torch.Tensor],
        x: torch.Tensor,
        extra_args: dict[str, Any] | None = None,
        callback: Callable[[dict], None] | None = None,
        disable: bool | None = None,
        sigmas: torch.Tensor | None = None,
        seed: int | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Runs the sampler from ``x`` (already scaled to ``sigmas[0]``).

        Args:
            denoiser: ``denoiser(x, sigma, **extra_args) -> x0_hat`` (e.g. a :class:`CFGDenoiser`).
            x: Starting sample.
            extra_args: Keyword arguments for the denoiser (``cond``/``uncond`` for CFG).
            callback: Per-step callback.
            disable: Disables the progress bar.
            sigmas: Schedule to use; default ``self.sigmas(x.device)``.
            seed: Seed(s) of the SDE noise (one per batch item for batch-independent noise).

        Returns:
            The final sample.
        """
        sigmas = self.sigmas(x.device) if sigmas is None else sigmas
        kwargs: dict[str, Any] = {}
        if _accepts(self.fn, "noise_sampler"):
            positive = sigmas[sigmas > 0]
            if positive.numel() == 0:
                raise ValueError("sigmas must contain at least one positive noise level")
            kwargs["noise_sampler"] = self.noise_sampler(x, positive.min(), sigmas.max(), seed=seed)
        return self.fn(denoiser, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kwargs)
