"""Inpainting and continuation by latent replacement, for any (unconditioned-on-mask) model.

RePaint-style (Lugmayr et al. 2022, "RePaint", Sec. 4.1) known-region replacement in latent space:
at every denoiser call the kept latent frames of the input are replaced by the known latents
re-noised to the current sigma with a fixed per-item noise, ``x_known = z_known + sigma * n``, and
the denoiser's estimate there is replaced by ``z_known``. The sampler's own state therefore
follows the exact ODE of a data distribution concentrated on ``z_known`` in the kept frames and
ends on it; the model sees consistent context and regenerates only the masked span. The final
sample is pasted once more at the end (:meth:`InpaintDenoiser.finalize`). For flow-time samplers
(``flow=True``) the re-noised known latents are ``(1 - t) * z_known + t * n``.

The autoencoder is lossy, so the decoded kept regions only approximate the input. After decoding,
the original audio is pasted back (:func:`paste_known`): kept samples are the input's exactly, and
a short crossfade (``InpaintRequest.crossfade_seconds``, 15 ms by default) inside the generated
span joins the two at every boundary.

Stable-audio-tools instead trains a mask-conditioned model; this method needs no retraining.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "CROSSFADE_SHAPES", "InpaintDenoiser", "InpaintRequest", "check_keep_ranges", "crossfade_weights", "keep_mask",
    "latent_keep_mask", "paste_known",
]

CROSSFADE_SHAPES = ("linear", "equal_power")


def check_keep_ranges(ranges: Any, audio_seconds: float, tolerance: float = 1e-3) -> list[tuple[float, float]]:
    """Validates ``inpaint_keep``: the ``[[start_s, end_s], ...]`` regions of the inpaint audio to keep.

    Every range must satisfy ``0 <= start < end <= audio_seconds`` (``tolerance`` seconds of slack at
    the end, for rounding). One flat pair ``[start, end]`` is accepted as a single range. Ranges may
    overlap (their union is kept). ``None`` keeps the whole audio (continuation past its end).

    Args:
        ranges: the configured value (lists of numbers, OmegaConf lists included).
        audio_seconds: length of the inpaint audio.
        tolerance: seconds an end may exceed ``audio_seconds``.

    Returns:
        The ranges as ``(start, end)`` float pairs.

    Raises:
        ValueError: naming the offending range (negative, reversed, empty, beyond the clip, not a
            pair of numbers) or an empty list, which would keep nothing and silently become plain
            text-to-music.
    """
    if ranges is None:
        return [(0.0, float(audio_seconds))]
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Sequence):
        raise ValueError(f"inpaint_keep={ranges!r}: expected [[start_s, end_s], ...]")
    items = list(ranges)
    if len(items) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        items = [items]  # one flat pair [start, end]
    if not items:
        raise ValueError("inpaint_keep=[] keeps nothing: give [[start_s, end_s], ...] or leave it unset "
                         "(null keeps all of inpaint_audio)")
    out = []
    for rng in items:
        pair = list(rng) if isinstance(rng, Sequence) and not isinstance(rng, (str, bytes)) else None
        if pair is None or len(pair) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair):
            raise ValueError(f"inpaint_keep range {rng!r} is not a pair of seconds [start_s, end_s]")
        start, end = float(pair[0]), float(pair[1])
        if start < 0 or end <= start:
            raise ValueError(f"inpaint_keep range [{start:g}, {end:g}]: need 0 <= start < end (seconds)")
        if end > audio_seconds + tolerance:
            raise ValueError(f"inpaint_keep range [{start:g}, {end:g}] goes beyond the inpaint audio, which is "
                             f"{audio_seconds:.3f} s long")
        out.append((start, end))
    return out


def keep_mask(ranges: Sequence[tuple[float, float]], num_samples: int, sample_rate: int) -> torch.Tensor:
    """Bool ``[num_samples]`` mask, True inside the (validated) ``ranges`` given in seconds."""
    keep = torch.zeros(num_samples, dtype=torch.bool)
    for start, end in ranges:
        keep[int(round(start * sample_rate)): int(round(end * sample_rate))] = True
    return keep


@dataclass
class InpaintRequest:
    """Known audio and which of its samples to keep.

    Attributes:
        audio: Known audio ``[C, T]`` or ``[B, C, T]`` at the model's sample rate and channels.
        keep: Bool ``[T]`` or ``[B, T]``; True where the audio is kept, False where it is generated.
            Samples beyond ``T`` (up to the model window) are generated.
        crossfade_seconds: Length of the crossfade from the pasted-back original into the
            generated audio at every kept/generated boundary (inside the generated span, so kept
            samples stay exact); 0 pastes with a hard cut.
        crossfade_shape: ``linear`` (constant amplitude; right when both sides are correlated, as
            the decoded audio next to a kept region is) or ``equal_power`` (constant power, for
            uncorrelated sides).
    """

    audio: torch.Tensor
    keep: torch.Tensor
    crossfade_seconds: float = 0.015
    crossfade_shape: str = "linear"

    def __post_init__(self) -> None:
        if self.audio.ndim not in (2, 3):
            raise ValueError(f"inpaint audio must be [C, T] or [B, C, T], got shape {tuple(self.audio.shape)}")
        keep = torch.as_tensor(self.keep)
        if keep.ndim not in (1, 2) or keep.shape[-1] != self.audio.shape[-1]:
            raise ValueError(
                f"inpaint keep mask must be [T] or [B, T] with T = {self.audio.shape[-1]}, got {tuple(keep.shape)}"
            )
        self.keep = keep.to(torch.bool)
        if not bool(self.keep.reshape(-1, self.keep.shape[-1]).any(dim=-1).all()):
            raise ValueError("inpaint keep mask keeps no sample (of some item): nothing to inpaint around; "
                             "generate without inpaint instead")
        if not (math.isfinite(self.crossfade_seconds) and self.crossfade_seconds >= 0):
            raise ValueError(f"inpaint crossfade_seconds must be a finite number >= 0, got {self.crossfade_seconds}")
        if self.crossfade_shape not in CROSSFADE_SHAPES:
            raise ValueError(f"inpaint crossfade_shape must be one of {CROSSFADE_SHAPES}, got {self.crossfade_shape!r}")

    @classmethod
    def continuation(cls, audio: torch.Tensor, keep_seconds: float, sample_rate: int, **kwargs: Any) -> InpaintRequest:
        """Keeps the first ``keep_seconds`` of ``audio`` and continues from there (``kwargs``: crossfade)."""
        n = min(int(round(keep_seconds * sample_rate)), audio.shape[-1])
        keep = torch.zeros(audio.shape[-1], dtype=torch.bool)
        keep[:n] = True
        return cls(audio, keep, **kwargs)

    @classmethod
    def span(cls, audio: torch.Tensor, start_s: float, end_s: float, sample_rate: int, **kwargs: Any) -> InpaintRequest:
        """Regenerates ``[start_s, end_s)`` of ``audio`` and keeps the rest (``kwargs``: crossfade)."""
        if not 0 <= start_s < end_s:
            raise ValueError(f"need 0 <= start_s < end_s, got start_s={start_s}, end_s={end_s}")
        keep = torch.ones(audio.shape[-1], dtype=torch.bool)
        keep[int(round(start_s * sample_rate)) : int(round(end_s * sample_rate))] = False
        return cls(audio, keep, **kwargs)


def crossfade_weights(keep: torch.Tensor, length: int, fade: int,
                      shape: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gains of the original and the generated audio for :func:`paste_known`.

    A generated sample ``d`` samples away from the nearest kept one (``1 <= d <= fade``) gets the
    original at ``1 - d / (fade + 1)`` (``linear``) or ``cos(pi/2 * d / (fade + 1))`` with the
    generated audio at ``sin(...)`` (``equal_power``); kept samples are all original, samples
    further away all generated. Beyond ``T`` there is no original to fade from: a continuation
    past the end of its audio joins with a hard cut (keep a little less than the whole clip to
    crossfade into the generated audio instead).

    Args:
        keep: Bool ``[T]`` over the original audio; samples beyond ``T`` are generated.
        length: Output length in samples (``keep`` is cropped or padded to it).
        fade: Crossfade length in samples (0: hard cut).
        shape: ``linear`` or ``equal_power``.

    Returns:
        ``(original_gain, generated_gain)``, float ``[length]`` each.
    """
    if shape not in CROSSFADE_SHAPES:
        raise ValueError(f"crossfade shape must be one of {CROSSFADE_SHAPES}, got {shape!r}")
    original_len = keep.shape[-1]
    keep = F.pad(keep[:length].to(torch.uint8), (0, max(0, length - keep.shape[-1]))).to(torch.bool)
    idx = torch.arange(length)
    if not keep.any():
        return torch.zeros(length), torch.ones(length)
    big = 2 * length + 2 * fade + 2
    last = torch.cummax(torch.where(keep, idx, torch.full_like(idx, -big)), dim=0).values
    nxt = torch.cummin(torch.where(keep, idx, torch.full_like(idx, big)).flip(0), dim=0).values.flip(0)
    dist = torch.minimum(idx - last, nxt - idx).to(torch.float64)  # 0 on kept samples
    ramp = (1.0 - dist / (fade + 1)).clamp(min=0.0)
    if shape == "linear":
        original, generated = ramp, 1.0 - ramp
    else:
        angle = (math.pi / 2) * (1.0 - ramp)
        original, generated = torch.cos(angle), torch.sin(angle)
    far = (ramp <= 0) | (idx >= original_len)  # exactly generated (cos(pi/2) is not exactly 0 in floating point)
    original, generated = original.masked_fill(far, 0.0), generated.masked_fill(far, 1.0)
    return original.float(), generated.float()


def paste_known(generated: torch.Tensor, known: torch.Tensor, keep: torch.Tensor, sample_rate: int,
                crossfade_seconds: float = 0.015, shape: str = "linear") -> torch.Tensor:
    """Pastes the original audio back into the kept regions of a decoded inpainting result.

    Kept samples become exactly ``known``'s; generated samples within ``crossfade_seconds`` of a
    kept one are crossfaded (see :func:`crossfade_weights`); the rest stay generated.

    Args:
        generated: Decoded audio ``[C, T]``.
        known: The request's audio ``[C, T_known]`` (cropped or zero-padded to ``T``).
        keep: Bool ``[T_known]`` keep mask of ``known``.
        sample_rate: Samples per second.
        crossfade_seconds: Crossfade length.
        shape: ``linear`` or ``equal_power``.

    Returns:
        ``[C, T]`` audio.
    """
    length = generated.shape[-1]
    fade = int(round(crossfade_seconds * sample_rate))
    original_gain, generated_gain = crossfade_weights(keep.cpu(), length, fade, shape)
    original_gain, generated_gain = original_gain.to(generated), generated_gain.to(generated)
    known = known[..., :length].to(generated)
    known = F.pad(known, (0, length - known.shape[-1]))
    blend = original_gain * known + generated_gain * generated
    kept = F.pad(keep[:length].to(torch.uint8), (0, max(0, length - keep.shape[-1]))).to(torch.bool)
    return torch.where(kept.to(generated.device), known, blend)  # bit-exact on kept samples


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
        flow: The sampler runs in flow time ``t`` (``x_t = (1 - t) x0 + t eps``) instead of sigma.
    """

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        known: torch.Tensor,
        keep: torch.Tensor,
        noise: torch.Tensor,
        flow: bool = False,
    ) -> None:
        if known.shape != noise.shape:
            raise ValueError(f"known {tuple(known.shape)} and noise {tuple(noise.shape)} shapes differ")
        self.denoiser = denoiser
        self.known = known
        self.keep = keep.to(device=known.device, dtype=torch.bool)
        self.noise = noise
        self.flow = flow

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        """Denoises ``x`` with the kept frames replaced by the re-noised known latents."""
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        noised = self.known * (1 - s) + s * self.noise if self.flow else self.known + s * self.noise
        x = torch.where(self.keep, noised, x)
        return torch.where(self.keep, self.known, self.denoiser(x, sigma, **kwargs))

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pastes the known latents into the final sample."""
        return torch.where(self.keep, self.known, x)
