"""Inpainting and continuation by latent replacement, for any (unconditioned-on-mask) model.

RePaint-style (Lugmayr et al. 2022, "RePaint", Sec. 4.1) known-region replacement in latent space:
at every denoiser call the kept latent frames of the input are replaced by the known latents
re-noised to the current sigma with a fixed per-item noise, ``x_known = z_known + sigma * n``, and
the denoiser's estimate there is replaced by ``z_known``. The sampler's own state therefore
follows the exact ODE of a data distribution concentrated on ``z_known`` in the kept frames and
ends on it; the model sees consistent context and regenerates only the masked span. The final
sample is pasted once more at the end (:meth:`InpaintDenoiser.finalize`).

Stable-audio-tools instead trains a mask-conditioned model; this method needs no retraining.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["InpaintDenoiser", "InpaintRequest", "latent_keep_mask"]


@dataclass
class InpaintRequest:
    """Known audio and which of its samples to keep.

    Attributes:
        audio: Known audio ``[C, T]`` or ``[B, C, T]`` at the model's sample rate and channels.
        keep: Bool ``[T]`` or ``[B, T]``; True where the audio is kept, False where it is generated.
            Samples beyond ``T`` (up to the model window) are generated.
    """

    audio: torch.Tensor
    keep: torch.Tensor

    def __post_init__(self) -> None:
        if self.audio.ndim not in (2, 3):
            raise ValueError(f"inpaint audio must be [C, T] or [B, C, T], got shape {tuple(self.audio.shape)}")
        keep = torch.as_tensor(self.keep)
        if keep.ndim not in (1, 2) or keep.shape[-1] != self.audio.shape[-1]:
            raise ValueError(
                f"inpaint keep mask must be [T] or [B, T] with T = {self.audio.shape[-1]}, got {tuple(keep.shape)}"
            )
        self.keep = keep.to(torch.bool)

    @classmethod
    def continuation(cls, audio: torch.Tensor, keep_seconds: float, sample_rate: int) -> InpaintRequest:
        """Keeps the first ``keep_seconds`` of ``audio`` and continues from there."""
        n = min(int(round(keep_seconds * sample_rate)), audio.shape[-1])
        keep = torch.zeros(audio.shape[-1], dtype=torch.bool)
        keep[:n] = True
        return cls(audio, keep)

    @classmethod
    def span(cls, audio: torch.Tensor, start_s: float, end_s: float, sample_rate: int) -> InpaintRequest:
        """Regenerates ``[start_s, end_s)`` of ``audio`` and keeps the rest."""
        if not 0 <= start_s < end_s:
            raise ValueError(f"need 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}")
        keep = torch.ones(audio.shape[-1], dtype=torch.bool)
        keep[int(round(start_s * sample_rate)) : int(round(end_s * sample_rate))] = False
        return cls(audio, keep)


def latent_keep_mask(keep: torch.Tensor, ratio: int, latent_len: int) -> torch.Tensor:
    """Maps a per-sample keep mask to latent frames: a frame is kept if all its samples are.

    Args:
        keep: Bool ``[B, T]``.
        ratio: Audio samples per latent frame.
        latent_len: Number of latent frames ``L``; the mask is cropped or padded (False) to
            ``L * ratio`` samples.

    Returns:
        Bool ``[B, 1, L]``.
    """
    total = latent_len * ratio
    keep = keep[:, :total]
    keep = F.pad(keep.to(torch.uint8), (0, total - keep.shape[-1])).to(torch.bool)
    return keep.reshape(keep.shape[0], latent_len, ratio).all(dim=-1).unsqueeze(1)


class InpaintDenoiser:
    """Denoiser wrapper that pins the kept latent frames to known latents.

    Args:
        denoiser: ``denoiser(x, sigma, **kwargs) -> x0_hat`` (e.g. a CFGDenoiser).
        known: Known latents ``[B, D, L]``.
        keep: Bool ``[B, 1, L]`` (or broadcastable): True where ``known`` is kept.
        noise: Fixed unit noise ``[B, D, L]`` used to re-noise the known latents.
    """

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        known: torch.Tensor,
        keep: torch.Tensor,
        noise: torch.Tensor,
    ) -> None:
        if known.shape != noise.shape:
            raise ValueError(f"known {tuple(known.shape)} and noise {tuple(noise.shape)} shapes differ")
        self.denoiser = denoiser
        self.known = known
        self.keep = keep.to(device=known.device, dtype=torch.bool)
        self.noise = noise

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        """Denoises ``x`` with the kept frames replaced by the re-noised known latents."""
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        x = torch.where(self.keep, self.known + s * self.noise, x)
        return torch.where(self.keep, self.known, self.denoiser(x, sigma, **kwargs))

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pastes the known latents into the final sample."""
        return torch.where(self.keep, self.known, x)
