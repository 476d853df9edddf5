"""Chunked encode/decode of arbitrarily long audio with cropped receptive fields.

The Oobleck networks are fully convolutional with a finite receptive field, so an output frame only
depends on inputs within a fixed distance ``r``. We cut the sequence into windows of ``chunk_size``
latent frames that overlap by ``overlap`` frames, run the network on each window and keep only its
centre (``overlap // 2`` frames are cropped from every interior edge, none at the true start/end).
Whenever ``overlap // 2 >= r`` the kept samples equal the unchunked output up to float rounding:
there is no cross-fade and so no seam. With SA2's kernels and strides the measured one-sided
receptive field (``receptive_field``) is 9 latent frames for the decoder and 8 for the encoder, so
the default ``overlap = 32`` (16 cropped per side) is exact.

Memory: the network only ever sees ``chunk_size`` frames at a time, so activation memory is bounded
by the chunk, not the song; only the output (``B·C·T`` floats) grows with length, and it can be
written to another device (``out_device="cpu"``). 4m45s of 44.1 kHz stereo is 50 MB of float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def chunk_spans(total: int, chunk_size: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows over ``total`` frames.

    Args:
        total: sequence length in latent frames.
        chunk_size: window length in frames.
        overlap: frames shared by neighbouring windows (``overlap // 2`` cropped on each side).

    Returns:
        ``[(start, keep_start, keep_end), ...]``: window ``[start, start + chunk_size)`` provides output
        frames ``[keep_start, keep_end)``. Windows cover ``[0, total)``; the last one is aligned to the end.
    """
    if chunk_size <= 0 or overlap < 0 or overlap >= chunk_size:
        raise ValueError(f"need chunk_size > overlap >= 0, got chunk_size={chunk_size}, overlap={overlap}")
    if total <= chunk_size:
        return [(0, 0, total)]
    hop, crop = chunk_size - overlap, overlap // 2
    starts = list(range(0, total - chunk_size + 1, hop))
    if starts[-1] + chunk_size != total:
        starts.append(total - chunk_size)
    spans = []
    for s in starts:
        keep_start = s + crop if s > 0 else 0
        keep_end = s + chunk_size - crop if s + chunk_size < total else total
        spans.append((s, keep_start, keep_end))
    return spans


def _run_chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, total: int, in_per_frame: int,
                 out_per_frame: int, chunk_size: int, overlap: int, out_device: torch.device | str | None):
    out = None
    for start, keep_start, keep_end in chunk_spans(total, chunk_size, overlap):
        width = min(chunk_size, total)
        y = fn(x[..., start * in_per_frame:(start + width) * in_per_frame])
        if y.shape[-1] != width * out_per_frame:
            raise ValueError(f"chunk of {width} frames gave {y.shape[-1]} outputs, expected {width * out_per_frame}")
        if out is None:
            out = torch.empty(*y.shape[:-1], total * out_per_frame, dtype=y.dtype, device=out_device or y.device)
        a, b = (keep_start - start) * out_per_frame, (keep_end - start) * out_per_frame
        out[..., keep_start * out_per_frame:keep_end * out_per_frame] = y[..., a:b].to(out.device)
    return out


def decode_chunked(decode_fn: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, ratio: int,
                   chunk_size: int = 128, overlap: int = 32,
                   out_device: torch.device | str | None = None) -> torch.Tensor:
    """Decode ``latents [B, D, L]`` window by window.

    Args:
        decode_fn: maps ``[B, D, l]`` to ``[B, C, l · ratio]``.
        latents: latent sequence.
        ratio: audio samples per latent frame.
        chunk_size: window length in latent frames.
        overlap: overlap in latent frames (>= 2 × receptive field for exact results).
        out_device: where to assemble the output (default: the decoder's device).

    Returns:
        Audio ``[B, C, L · ratio]``.
    """
    return _run_chunked(decode_fn, latents, latents.shape[-1], 1, ratio, chunk_size, overlap, out_device)


def encode_chunked(encode_fn: Callable[[torch.Tensor], torch.Tensor], audio: torch.Tensor, ratio: int,
                   chunk_size: int = 128, overlap: int = 32,
                   out_device: torch.device | str | None = None) -> torch.Tensor:
    """Encode ``audio [B, C, T]`` (T a multiple of ``ratio``) window by window.

    Args:
        encode_fn: maps ``[B, C, l · ratio]`` to ``[B, D, l]``.
        audio: waveform.
        ratio: audio samples per latent frame.
        chunk_size: window length in latent frames.
        overlap: overlap in latent frames.
        out_device: where to assemble the output.

    Returns:
        ``[B, D, T / ratio]``.
    """
    if audio.shape[-1] % ratio:
        raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of the downsampling ratio {ratio}")
    return _run_chunked(encode_fn, audio, audio.shape[-1] // ratio, ratio, 1, chunk_size, overlap, out_device)


@torch.no_grad()
def receptive_field(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], in_per_frame: int,
                    out_per_frame: int, device: torch.device | str = "cpu") -> int:
    """Measure the one-sided receptive field of ``fn`` in latent frames with an impulse.

    Perturbs the middle input frame and returns how many output frames away from it change.
    """
    x = torch.randn(in_shape, device=device)
    frames = in_shape[-1] // in_per_frame
    mid = frames // 2
    x2 = x.clone()
    x2[..., mid * in_per_frame:(mid + 1) * in_per_frame] += 1.0
    diff = (fn(x2) - fn(x)).abs().amax(dim=tuple(range(x.dim() - 1)))
    changed = (diff.reshape(-1, out_per_frame).amax(-1) > 1e-6).nonzero().flatten()
    if changed.numel() == 0:
        return 0
    return int(max(mid - changed.min().item(), changed.max().item() - mid))
