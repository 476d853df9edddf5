"""Diffusion objectives (v, rectified flow): schedules, timestep densities, denoisers, losses, CFG dropout."""

from musicdiff.diffusion.cfg_dropout import cfg_dropout, null_cond
from musicdiff.diffusion.denoiser import VDenoiser
from musicdiff.diffusion.densities import (
    LogitNormalTimesteps,
    LogSNRTimesteps,
    TimeShift,
    TruncatedLogitNormalTimesteps,
    UniformTimesteps,
)
from musicdiff.diffusion.flow import add_flow_noise, flow_t_to_sigma, sigma_to_flow_t
from musicdiff.diffusion.flow_denoiser import FlowDenoiser, FlowSigmaDenoiser, VFlowDenoiser
from musicdiff.diffusion.loss import VObjectiveLoss, masked_mse
from musicdiff.diffusion.objectives import OBJECTIVES, make_denoiser, objective_family, objective_of
from musicdiff.diffusion.rf_loss import RectifiedFlowLoss
from musicdiff.diffusion.v_noising import (
    add_noise,
    alpha_sigma_to_t,
    sigma_to_t,
    t_to_alpha_sigma,
    t_to_sigma,
)

__all__ = [
    "OBJECTIVES",
    "FlowDenoiser",
    "FlowSigmaDenoiser",
    "LogSNRTimesteps",
    "LogitNormalTimesteps",
    "RectifiedFlowLoss",
    "TimeShift",
    "TruncatedLogitNormalTimesteps",
    "VFlowDenoiser",
    "add_flow_noise",
    "flow_t_to_sigma",
    "make_denoiser",
    "masked_mse",
    "objective_family",
    "objective_of",
    "sigma_to_flow_t",
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
