"""Multi-resolution STFT reconstruction losses (SA2 §3.1 and §3.5).

Per resolution (Yamamoto et al. 2019, "Parallel WaveGAN", Eq. 4-6; Arik et al. 2018):
``L = ||S_y| - |S_x||_F / ||S_y||_F  +  mean |log|S_y| - log|S_x||`` (spectral convergence plus
log-magnitude L1), averaged over resolutions. SA2 applies A-weighting before the STFT and uses 7
resolutions (FFT 2048 … 32, hop FFT/4) on mid/side (weight 1) and on left/right (0.5 each);
the mid/side term is ``(L(l+r) + L(l-r)) / 2`` (Steinmetz et al. 2020). Numerically follows
auraloss as vendored in stable-audio-tools (a parity test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from musicdiff.losses.perceptual import AWeighting

SA2_FFT_SIZES = (2048, 1024, 512, 256, 128, 64, 32)  # the paper's 7 resolutions


class STFTLoss(nn.Module):
    """Single-resolution spectral-convergence + log-magnitude loss.

    Args:
        fft_size: FFT size.
        hop_size: hop in samples.
        win_length: Hann window length.
        w_sc: weight of spectral convergence.
        w_log_mag: weight of the log-magnitude L1 term.
        w_lin_mag: weight of the linear-magnitude L1 term.
        eps: floor on the squared magnitude.
        sc_floor: RMS magnitude floor of the spectral-convergence denominator,
            ``sqrt(||Y||² + sc_floor² · n_bins)``. 0 reproduces auraloss exactly, but SC is then
            unbounded for (near-)silent targets, e.g. the side channel of a centre-panned or
            mono-sourced stereo file, where it reaches 10⁴ and makes training diverge; 1e-2 leaves
            SC of ordinary audio unchanged to < 1e-5 relative.
    """

    def __init__(self, fft_size: int = 1024, hop_size: int = 256, win_length: int | None = None, w_sc: float = 1.0,
                 w_log_mag: float = 1.0, w_lin_mag: float = 0.0, eps: float = 1e-8, sc_floor: float = 0.0) -> None:
        super().__init__()
        self.fft_size, self.hop_size = int(fft_size), int(hop_size)
        self.win_length = int(win_length or fft_size)
        self.w_sc, self.w_log_mag, self.w_lin_mag, self.eps = w_sc, w_log_mag, w_lin_mag, eps
        if sc_floor < 0:
            raise ValueError(f"sc_floor must be >= 0, got {sc_floor}")
        self.sc_floor = float(sc_floor)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """``|STFT(x)|`` of ``x [N, T]`` → ``[N, F, frames]`` (centred, reflect-padded)."""
        if x.shape[-1] <= self.fft_size // 2:
            raise ValueError(f"signal of {x.shape[-1]} samples is too short for an FFT of {self.fft_size}")
        spec = torch.stft(x.float(), self.fft_size, self.hop_size, self.win_length, self.window.float(),
                          return_complex=True)
        return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=self.eps))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of prediction ``x`` against target ``y`` (both ``[..., T]``)."""
        x_mag = self.magnitude(x.reshape(-1, x.shape[-1]))
        y_mag = self.magnitude(y.reshape(-1, y.shape[-1]))
        loss = x_mag.new_zeros(())
        if self.w_sc:
            denom = torch.linalg.norm(y_mag, dim=(-2, -1))
            if self.sc_floor:
                denom = torch.sqrt(denom ** 2 + self.sc_floor ** 2 * y_mag[0].numel())
            sc = torch.linalg.norm(y_mag - x_mag, dim=(-2, -1)) / denom
            loss = loss + self.w_sc * sc.mean()
        if self.w_log_mag:
            loss = loss + self.w_log_mag * (torch.log(y_mag) - torch.log(x_mag)).abs().mean()
        if self.w_lin_mag:
            loss = loss + self.w_lin_mag * (y_mag - x_mag).abs().mean()
        return loss


class MultiResolutionSTFTLoss(nn.Module):
    """Average of ``STFTLoss`` over resolutions, optionally A-weighted.

    Args:
        fft_sizes: FFT sizes (SA2: 2048 … 32).
        hop_sizes: hops (default FFT/4, i.e. 75% overlap).
        win_lengths: window lengths (default = FFT sizes).
        perceptual_weighting: A-weight both signals first (needs ``sample_rate``).
        sample_rate: audio sample rate in Hz.
        w_sc: spectral-convergence weight.
        w_log_mag: log-magnitude weight.
        w_lin_mag: linear-magnitude weight.
        sc_floor: spectral-convergence denominator floor (see :class:`STFTLoss`; 0 = auraloss).
    """

    def __init__(self, fft_sizes: Sequence[int] = SA2_FFT_SIZES, hop_sizes: Sequence[int] | None = None,
                 win_lengths: Sequence[int] | None = None, perceptual_weighting: bool = True,
                 sample_rate: int | None = None, w_sc: float = 1.0, w_log_mag: float = 1.0,
                 w_lin_mag: float = 0.0, sc_floor: float = 0.0) -> None:
        super().__init__()
        fft_sizes = [int(f) for f in fft_sizes]
        hop_sizes = [int(h) for h in hop_sizes] if hop_sizes is not None else [f // 4 for f in fft_sizes]
        win_lengths = [int(w) for w in win_lengths] if win_lengths is not None else list(fft_sizes)
        if not (len(fft_sizes) == len(hop_sizes) == len(win_lengths)) or not fft_sizes:
            raise ValueError(f"fft_sizes, hop_sizes, win_lengths must have one equal non-zero length, got "
                             f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}")
        if perceptual_weighting and not sample_rate:
            raise ValueError("perceptual_weighting=True needs sample_rate")
        self.prefilter = AWeighting(sample_rate) if perceptual_weighting else None
        self.stft_losses = nn.ModuleList(
            STFTLoss(f, h, w, w_sc, w_log_mag, w_lin_mag, sc_floor=sc_floor)
            for f, h, w in zip(fft_sizes, hop_sizes, win_lengths))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of prediction ``x`` against target ``y``, both ``[B, C, T]``."""
        if x.shape != y.shape:
            raise ValueError(f"prediction {tuple(x.shape)} and target {tuple(y.shape)} differ in shape")
        if self.prefilter is not None:
            x, y = self.prefilter(x), self.prefilter(y)
        return sum(loss(x, y) for loss in self.stft_losses) / len(self.stft_losses)


def sum_and_difference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mid/side signals ``(l + r, l - r)`` of stereo ``x [B, 2, T]``, each ``[B, 1, T]``."""
    if x.dim() != 3 or x.shape[1] != 2:
        raise ValueError(f"sum/difference needs stereo [B, 2, T] audio, got {tuple(x.shape)}")
    return (x[:, 0] + x[:, 1]).unsqueeze(1), (x[:, 0] - x[:, 1]).unsqueeze(1)


class SumAndDifferenceSTFTLoss(nn.Module):
    """``(w_sum · MRSTFT(mid) + w_diff · MRSTFT(side)) / 2`` for stereo audio (Steinmetz et al. 2020).

    Args:
        mrstft: the multi-resolution loss applied to each of mid and side.
        w_sum: weight of the mid (sum) term.
        w_diff: weight of the side (difference) term.
    """

    def __init__(self, mrstft: MultiResolutionSTFTLoss, w_sum: float = 1.0, w_diff: float = 1.0) -> None:
        super().__init__()
        self.mrstft, self.w_sum, self.w_diff = mrstft, w_sum, w_diff

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xs, xd = sum_and_difference(x)
        ys, yd = sum_and_difference(y)
        return (self.w_sum * self.mrstft(xs, ys) + self.w_diff * self.mrstft(xd, yd)) / 2
