"""Autoencoder reconstruction metrics of SA2 Table 1: STFT distance ↓, MEL distance ↓, SI-SDR ↑.

SA2 reports them as computed by DAC's audiotools (Kumar et al. 2023):

* STFT distance: sum over windows (2048, 512; hop w/4) of ``L1(log10 max(|S|,1e-5)^2)`` + ``L1(|S|)``.
* MEL distance: ``musicdiff.losses.mel.MultiScaleMelLoss`` with DAC's 7 scales.
* SI-SDR (Le Roux et al. 2019, Eq. 1): ``10 log10(||a·s||^2 / ||a·s - ŝ||^2)``, ``a = <ŝ,s>/||s||^2``,
  zero-mean, per channel, averaged.

All functions take ``pred`` and ``target`` as ``[B, C, T]`` and trim both to the shorter length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from musicdiff.losses.mel import MultiScaleMelLoss

log = logging.getLogger(__name__)


def _trim(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.dim() != 3 or target.dim() != 3 or pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"expected matching [B, C, T] tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    n = min(pred.shape[-1], target.shape[-1])
    return pred[..., :n].float(), target[..., :n].float()


def stft_distance(pred: torch.Tensor, target: torch.Tensor, window_lengths: Sequence[int] = (2048, 512),
                  log_weight: float = 1.0, mag_weight: float = 1.0, pow: float = 2.0,  # noqa: A002
                  clamp_eps: float = 1e-5) -> torch.Tensor:
    """DAC multi-scale STFT distance (lower is better); scalar tensor."""
    pred, target = _trim(pred, target)
    x, y = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    total = x.new_zeros(())
    for w in window_lengths:
        win = torch.hann_window(w, device=x.device)
        xs = torch.stft(x, w, w // 4, w, win, return_complex=True).abs()
        ys = torch.stft(y, w, w // 4, w, win, return_complex=True).abs()
        total = total + log_weight * (xs.clamp(min=clamp_eps).pow(pow).log10()
                                      - ys.clamp(min=clamp_eps).pow(pow).log10()).abs().mean()
        total = total + mag_weight * (xs - ys).abs().mean()
    return total


def si_sdr(pred: torch.Tensor, target: torch.Tensor, zero_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB (higher is better), averaged over batch and channels; scalar tensor."""
    pred, target = _trim(pred, target)
    if zero_mean:
        pred = pred - pred.mean(-1, keepdim=True)
        target = target - target.mean(-1, keepdim=True)
    alpha = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    scaled = alpha * target
    noise = scaled - pred
    ratio = scaled.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps)
    return (10 * torch.log10(ratio + eps)).mean()


class ReconstructionMetrics(nn.Module):
    """All three metrics at once.

    Args:
        sample_rate: audio sample rate (for the mel filterbanks).
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.mel = MultiScaleMelLoss(self.sample_rate)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Return ``{"stft": .., "mel": .., "si_sdr": ..}`` as floats."""
        pred, target = _trim(pred, target)
        self.mel.to(pred.device)
        return {
            "stft": float(stft_distance(pred, target)),
            "mel": float(self.mel(pred, target)),
            "si_sdr": float(si_sdr(pred, target)),
        }


def evaluate_reconstruction_folders(generated_dir: str | Path, reference_dir: str | Path, sample_rate: int,
                                    channels: int = 2) -> dict[str, float]:
    """Mean reconstruction metrics over files paired by relative path (extension ignored).

    Args:
        generated_dir: reconstructions (e.g. audio decoded from its own latents).
        reference_dir: the original audio.
        sample_rate: both sides are loaded (and resampled) at this rate.
        channels: both sides are converted to this many channels.

    Returns:
        ``{"recon_stft", "recon_mel", "recon_si_sdr", "recon_files"}`` (per-file means; file count).

    Raises:
        FileNotFoundError: if a folder is missing.
        ValueError: if no file of ``generated_dir`` has a counterpart in ``reference_dir``.
    """
    from musicdiff.evaluation.folder_eval import list_audio_files, load_audio_file

    gen_root, ref_root = Path(generated_dir), Path(reference_dir)
    key = lambda p, root: p.relative_to(root).with_suffix("").as_posix()  # noqa: E731
    refs = {key(p, ref_root): p for p in list_audio_files(ref_root)}
    pairs = [(g, refs[key(g, gen_root)]) for g in list_audio_files(gen_root) if key(g, gen_root) in refs]
    if not pairs:
        raise ValueError(f"no file of {gen_root} has a counterpart (same relative path) in {ref_root}")
    metrics = ReconstructionMetrics(sample_rate)
    totals: dict[str, float] = {}
    for g, r in pairs:
        out = metrics(load_audio_file(g, sample_rate, channels)[None], load_audio_file(r, sample_rate, channels)[None])
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + v
    log.info("reconstruction metrics over %d paired files", len(pairs))
    result = {f"recon_{k}": v / len(pairs) for k, v in totals.items()}
    result["recon_files"] = float(len(pairs))
    return result
