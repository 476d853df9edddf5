"""Autoencoder losses: multi-resolution STFT, MS-STFT discriminator, GAN objectives, KL."""

from musicdiff.losses.adversarial import HingeGANLoss, LeastSquaresGANLoss, feature_matching
from musicdiff.losses.discriminator import EncodecDiscriminator, MultiScaleSTFTDiscriminator
from musicdiff.losses.posterior_kl import KLLoss, gaussian_kl
from musicdiff.losses.mel import MultiScaleMelLoss, mel_filterbank
from musicdiff.losses.perceptual import AWeighting
from musicdiff.losses.stft import MultiResolutionSTFTLoss, STFTLoss, SumAndDifferenceSTFTLoss, sum_and_difference

__all__ = [
    "AWeighting",
    "EncodecDiscriminator",
    "HingeGANLoss",
    "KLLoss",
    "LeastSquaresGANLoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "MultiScaleSTFTDiscriminator",
    "STFTLoss",
    "SumAndDifferenceSTFTLoss",
    "feature_matching",
    "gaussian_kl",
    "mel_filterbank",
    "sum_and_difference",
]
