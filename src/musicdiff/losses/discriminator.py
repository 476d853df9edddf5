"""EnCodec multi-scale STFT discriminator (Défossez et al. 2022, §3.4; SA2 §3.1: 5 scales, 64 filters).

Each sub-discriminator takes the complex STFT (real and imaginary parts stacked as channels, every
audio channel kept), runs weight-normalised 2-D convolutions with dilations over time and returns
logits plus all intermediate feature maps. Module layout matches stable-audio-tools'
``EncodecDiscriminator`` (``discriminators.discriminators.<i>.convs.<j>.conv`` …) up to the weight-norm
key rename described in ``musicdiff.models.autoencoder.blocks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from musicdiff.losses.adversarial import HingeGANLoss, feature_matching


def _pad2d(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class NormConv2d(nn.Module):
    """Weight-normalised ``nn.Conv2d`` (wrapper kept for the reference key layout)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv2d(*args, **kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DiscriminatorSTFT(nn.Module):
    """One STFT scale.

    Args:
        filters: conv width.
        in_channels: audio channels.
        n_fft: FFT size; hop_length, win_length: STFT hop and Hann window length.
        kernel_size: (time, freq) kernel of the inner convs.
        dilations: time dilations of the inner convs.
        stride: (time, freq) stride of the inner convs ((1, 1) as stable-audio-tools; EnCodec used (1, 2)).
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, filters: int, in_channels: int = 2, n_fft: int = 1024, hop_length: int = 256,
                 win_length: int = 1024, kernel_size: tuple[int, int] = (3, 9), dilations: Sequence[int] = (1, 2, 4),
                 stride: tuple[int, int] = (1, 1), negative_slope: float = 0.2) -> None:
        super().__init__()
        kernel_size, stride = tuple(kernel_size), tuple(stride)
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.activation = nn.LeakyReLU(negative_slope)
        square = (kernel_size[0], kernel_size[0])
        self.convs = nn.ModuleList([NormConv2d(2 * in_channels, filters, kernel_size, padding=_pad2d(kernel_size))])
        for d in dilations:
            self.convs.append(NormConv2d(filters, filters, kernel_size, stride=stride, dilation=(d, 1),
                                         padding=_pad2d(kernel_size, (d, 1))))
        self.convs.append(NormConv2d(filters, filters, square, padding=_pad2d(square)))
        self.conv_post = NormConv2d(filters, 1, square, padding=_pad2d(square))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → ``[B, 2C, frames, freq]`` window-normalised complex STFT, uncentred."""
        b, c, t = x.shape
        if t < self.n_fft:
            raise ValueError(f"audio of {t} samples is shorter than the discriminator FFT size {self.n_fft}")
        window = self.window.float()  # FFTs in float32 (cuFFT has no bf16); the convs may autocast
        z = torch.stft(x.reshape(b * c, t).float(), self.n_fft, self.hop_length, self.win_length, window, center=False,
                       return_complex=True) / window.pow(2).sum().sqrt()
        z = z.reshape(b, c, *z.shape[-2:])
        return torch.cat([z.real, z.imag], dim=1).transpose(-1, -2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(logits [B, 1, frames', freq'], feature maps)``."""
        z = self.spectrogram(x)
        feats = []
        for conv in self.convs:
            z = self.activation(conv(z))
            feats.append(z)
        return self.conv_post(z), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """One ``DiscriminatorSTFT`` per (n_fft, hop, window) triple."""

    def __init__(self, filters: int, in_channels: int, n_ffts: Sequence[int], hop_lengths: Sequence[int],
                 win_lengths: Sequence[int], **kwargs) -> None:
        super().__init__()
        if not (len(n_ffts) == len(hop_lengths) == len(win_lengths)) or not n_ffts:
            raise ValueError("n_ffts, hop_lengths and win_lengths need one equal non-zero length")
        self.discriminators = nn.ModuleList(
            DiscriminatorSTFT(filters, in_channels, int(n), int(h), int(w), **kwargs)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outs = [d(x) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class EncodecDiscriminator(nn.Module):
    """The SA2 discriminator plus its losses.

    Args:
        in_channels: audio channels (2).
        filters: conv width (SA2: 64).
        n_ffts: FFT sizes (SA2: 2048, 1024, 512, 256, 128).
        hop_lengths: hops (SA2: FFT/4).
        win_lengths: window lengths (SA2: = FFT sizes).
        gan_loss: objective object with ``discriminator_loss(real, fake)`` / ``generator_loss(fake)``
            (default ``HingeGANLoss``).
        normalize_feature_matching: divide feature distances by the real features' mean magnitude.
        **kwargs: passed to every ``DiscriminatorSTFT`` (kernel_size, dilations, stride, negative_slope).
    """

    def __init__(self, in_channels: int = 2, filters: int = 64,
                 n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
                 hop_lengths: Sequence[int] = (512, 256, 128, 64, 32),
                 win_lengths: Sequence[int] = (2048, 1024, 512, 256, 128),
                 gan_loss: nn.Module | None = None, normalize_feature_matching: bool = False, **kwargs) -> None:
        super().__init__()
        self.discriminators = MultiScaleSTFTDiscriminator(filters, in_channels, n_ffts, hop_lengths, win_lengths,
                                                          **kwargs)
        self.gan_loss = gan_loss if gan_loss is not None else HingeGANLoss()
        self.normalize_feature_matching = normalize_feature_matching

    @property
    def num_scales(self) -> int:
        return len(self.discriminators.discriminators)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Logits and feature maps of every scale for ``x [B, C, T]``."""
        return self.discriminators(x)

    def discriminator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> torch.Tensor:
        """GAN loss of the discriminator, averaged over scales (pass ``fakes.detach()``)."""
        real_logits, _ = self(reals)
        fake_logits, _ = self(fakes)
        return sum(self.gan_loss.discriminator_loss(r, f) for r, f in zip(real_logits, fake_logits)) / self.num_scales

    def generator_loss(self, reals: torch.Tensor, fakes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(adversarial, feature_matching)`` for the generator, each averaged over scales."""
        with torch.no_grad():
            _, real_feats = self(reals)
        fake_logits, fake_feats = self(fakes)
        adv = sum(self.gan_loss.generator_loss(f) for f in fake_logits) / self.num_scales
        fm = sum(feature_matching(r, f, self.normalize_feature_matching)
                 for r, f in zip(real_feats, fake_feats)) / self.num_scales
        return adv, fm
