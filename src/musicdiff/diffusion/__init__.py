"""v-objective diffusion: schedule, timestep densities, VDenoiser, loss and CFG dropout."""

from musicdiff.diffusion.cfg_dropout import cfg_dropout, null_cond
from musicdiff.diffusion.denoiser import VDenoiser
from musicdiff.diffusion.densities import LogitNormalTimesteps, UniformTimesteps
from musicdiff.diffusion.loss import VObjectiveLoss
from musicdiff.diffusion.schedule import (
    add_noise,
    alpha_sigma_to_t,
    sigma_to_t,
    t_to_alpha_sigma,
    t_to_sigma,
)

__all__ = [
    "LogitNormalTimesteps",
    "UniformTimesteps",
    "VDenoiser",
    "VObjectiveLoss",
    "add_noise",
    "alpha_sigma_to_t",
    "cfg_dropout",
    "null_cond",
    "sigma_to_t",
    "t_to_alpha_sigma",
    "t_to_sigma",
]
