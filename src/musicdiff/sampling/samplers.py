"""All samplers in one namespace: ``musicdiff.sampling.samplers.sample_x``.

Samplers are pure functions ``sample_x(model, x, sigmas, extra_args=None, callback=None,
disable=None, **opts) -> x0`` with k-diffusion semantics (``model`` is a denoiser returning
``x0_hat``; ``x`` is already scaled to ``sigmas[0]``; ``sigmas`` ends in 0). Each family lives in
its own module:

* :mod:`musicdiff.sampling.euler_heun` - Euler, Heun (Karras et al. 2022, Algorithm 2)
* :mod:`musicdiff.sampling.ddim` - DDIM in sigma space (Song et al. 2021)
* :mod:`musicdiff.sampling.dpmpp` - DPM-Solver++ 2M, 2M SDE, 3M SDE (Lu et al. 2022)
* :mod:`musicdiff.sampling.flow_samplers` - flow-time Euler, ping-pong and DPM-Solver++ for
  rectified-flow models (``ts`` flow times instead of sigmas; ``SamplerSpec(space="flow")``)
"""

from musicdiff.sampling.ddim import sample_ddim
from musicdiff.sampling.dpmpp import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m_sde
from musicdiff.sampling.euler_heun import sample_euler, sample_heun, to_d
from musicdiff.sampling.flow_samplers import sample_flow_dpmpp, sample_flow_euler, sample_flow_pingpong

__all__ = [
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_flow_dpmpp",
    "sample_flow_euler",
    "sample_flow_pingpong",
    "sample_heun",
    "to_d",
]
