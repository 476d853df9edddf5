"""Figures people would rather look at than read: log-magnitude spectrograms, metric curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def spectrogram_figure(audio: torch.Tensor, sample_rate: int, title: str | None = None, n_fft: int = 1024):
    """Plot a dB spectrogram of each channel of ``audio [C, T]``.

    Args:
        audio: waveform, channels first.
        sample_rate: in Hz, for the axes.
        title: optional figure title.
        n_fft: FFT size (hop n_fft/4, Hann window).

    Returns:
        A matplotlib ``Figure`` (close it after saving).
    """
    audio = audio.detach().float().cpu()
    if audio.dim() == 1:
        audio = audio[None]
    n_fft = max(16, min(n_fft, 2 ** int(np.floor(np.log2(max(audio.shape[-1], 16))))))
    window = torch.hann_window(n_fft)
    spec = torch.stft(audio, n_fft, hop_length=n_fft // 4, window=window, return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-5))
    channels = db.shape[0]
    fig, axes = plt.subplots(channels, 1, figsize=(8, 2.2 * channels), squeeze=False)
    duration = audio.shape[-1] / sample_rate
    for c in range(channels):
        ax = axes[c, 0]
        ax.imshow(db[c].numpy(), origin="lower", aspect="auto", cmap="magma", vmin=float(db.max()) - 80,
                  extent=(0.0, duration, 0.0, sample_rate / 2 / 1000))
        ax.set_ylabel(f"ch{c} kHz")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig


def curves_figure(curves: dict[str, list[tuple[int, float]]], step_seconds: float | None = None,
                  title: str | None = None):
    """Plot each curve ``[(step, value), ...]`` in its own panel, e.g. the long-form metrics per window.

    Args:
        curves: ``{name: [(step, value), ...]}``.
        step_seconds: seconds per step for a time axis (``None``: the step index).
        title: optional figure title.

    Returns:
        A matplotlib ``Figure`` (close it after saving).
    """
    fig, axes = plt.subplots(len(curves), 1, figsize=(7, 2.2 * max(len(curves), 1)), squeeze=False)
    for ax, (name, points) in zip(axes[:, 0], curves.items()):
        steps = np.array([s for s, _ in points], dtype=float)
        ax.plot(steps * step_seconds if step_seconds else steps, [v for _, v in points], marker="o")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("track time of the window (s)" if step_seconds else "window")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig


def save_figure(figure, path) -> None:
    """Save a figure as PNG and close it."""
    figure.savefig(path, dpi=90)
    plt.close(figure)
