"""Sampling: sigma schedules, samplers (pure functions), guidance, generation pipeline.

See :mod:`musicdiff.sampling.samplers` for the sampler functions (k-diffusion conventions),
:class:`SamplerSpec` for a configured sampler (``conf/sampler/*.yaml``), :class:`CFGDenoiser`
for classifier-free guidance and :class:`Generator` for text-to-music generation.
"""

from musicdiff.sampling.guidance import CFGDenoiser, batch_conditions
from musicdiff.sampling.inpaint import InpaintDenoiser, InpaintRequest, latent_keep_mask
from musicdiff.sampling.noise import BrownianTreeNoiseSampler, GaussianNoiseSampler, default_noise_sampler
from musicdiff.sampling.pipeline import Generator
from musicdiff.sampling.samplers import (
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m_sde,
    sample_euler,
    sample_heun,
)
from musicdiff.sampling.sigma_schedules import get_sigmas_exponential, get_sigmas_karras, get_sigmas_polyexponential
from musicdiff.sampling.spec import SamplerSpec

__all__ = [
    "BrownianTreeNoiseSampler",
    "CFGDenoiser",
    "GaussianNoiseSampler",
    "Generator",
    "InpaintDenoiser",
    "InpaintRequest",
    "SamplerSpec",
    "batch_conditions",
    "default_noise_sampler",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_polyexponential",
    "latent_keep_mask",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_heun",
]
