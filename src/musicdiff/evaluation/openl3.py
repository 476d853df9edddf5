"""OpenL3 audio embedding network (mel256, music, 512-d) in PyTorch: the embedder of FD_openl3.

SA2 Table 2 reports the Fréchet distance on OpenL3 embeddings (Cramer et al. 2019) computed by
stable-audio-metrics (``src/openl3_fd.py``, openl3 0.4.2 with its kapre 0.3.7 front end). This
module re-implements that pipeline; the weights are read from a local file, never downloaded.

Preprocessing, per file (stable-audio-metrics ``extract_embeddings``):

1. peak-normalise all channels jointly to -1 dBFS (``pyloudnorm.normalize.peak(audio, -1)``);
2. resample to the evaluation bandwidth (44.1 kHz in the Song Describer examples) with soxr;
3. stereo (``channels=2``): the left and right channels are embedded separately and their
   512-d frame embeddings concatenated (1024-d); mono files are duplicated to L = R;
   ``channels=1`` embeds the mono mix (512-d);
4. openl3 resamples each channel to 48 kHz (resampy ``kaiser_best``; soxr HQ here), pads
   half a window of zeros in front (``center=True``), zero-pads the end so every sample is
   covered, and cuts 1 s windows every ``hop_seconds`` (0.5 s in stable-audio-metrics);
5. every window is one sample of the Gaussian fit: FD_openl3 pools the frames of all files
   (``pooling="frames"``), it does not average per file.

Network (openl3 ``_construct_mel256_audio_network``), per 1 s window of 48000 samples:

* front end (kapre 0.3.7 ``get_melspectrogram_layer``): STFT with ``n_fft=2048``, hop 242,
  periodic Hann window, zero ``pad_end`` (199 frames); magnitude; 256 Slaney mel bands
  (Slaney area normalisation, 0-24 kHz); ``10 log10(max(x, 1e-10))`` minus the window's
  maximum, clipped at -80 dB (openl3's ``kapre_v0_1_4_magnitude_to_decibel``);
* batch-norm, then 4 blocks of two ``3 x 3`` convolutions (64, 128, 256, 512 filters; each
  batch-norm + ReLU except the last, ``audio_embedding_layer``) with ``2 x 2`` max-pooling
  after the first three blocks: ``[256, 199] -> [32, 24]``;
* max-pool over the whole ``32 x 24`` map: the 512-d embedding.

Batch-norm epsilon is Keras' 1e-3. Parameter names follow torchopenl3 (``conv2d_1`` ...
``audio_embedding_layer``, ``batch_normalization_1`` ... ``_8``), so a state dict saved from
``torchopenl3.models.load_audio_embedding_model(input_repr="mel256", content_type="music",
embedding_size=512)`` loads as is (see docs/EVALUATION.md for the conversion).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.evaluation.embedders import _check_audio, peak_normalize, resample
from musicdiff.files.state_dict import read_state_dict, state_dict_mismatch


SAMPLE_RATE = 48000  # openl3's TARGET_SR; one window = 1 s
N_FFT, HOP, N_MELS = 2048, 242, 256
N_FRAMES = math.ceil(SAMPLE_RATE / HOP)  # 199 (kapre pad_end)
EMBEDDING_DIM = 512
ENV_VAR = "MUSICDIFF_OPENL3_PATH"


class OpenL3MelFrontEnd(nn.Module):
    """kapre 0.3.7 mel front end of openl3 0.4: ``[B, 48000] -> [B, 1, 256, 199]`` (dB re. window max)."""

    def __init__(self) -> None:
        super().__init__()
        from musicdiff.evaluation.musicnn import slaney_mel_filterbank

        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        fb = slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS)
        self.register_buffer("mel_fb", torch.from_numpy(np.asarray(fb, np.float32)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (N_FRAMES - 1) * HOP + N_FFT - x.shape[-1]  # tf.signal.stft(pad_end=True)
        frames = F.pad(x, (0, max(pad, 0))).unfold(-1, N_FFT, HOP)[:, :N_FRAMES]  # [B, 199, 2048]
        mag = torch.fft.rfft(frames * self.window, dim=-1).abs()  # [B, 199, 1025]
        mel = mag @ self.mel_fb.T  # [B, 199, 256]
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        db = (db - db.amax(dim=(1, 2), keepdim=True)).clamp_min(-80.0)
        return db.transpose(1, 2).unsqueeze(1)  # [B, 1, F=256, T=199]


class OpenL3AudioNet(nn.Module):
    """The openl3 mel256 audio network with the 512-d max-pooled output (``[B, 48000] -> [B, 512]``)."""

    WIDTHS = (64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.frontend = OpenL3MelFrontEnd()
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=1e-3)
        in_ch, idx = 1, 1
        for width in self.WIDTHS:
            for _ in range(2):
                name = "audio_embedding_layer" if idx == 8 else f"conv2d_{idx}"
                setattr(self, name, nn.Conv2d(in_ch, width, 3, padding=1))
                if idx < 8:
                    setattr(self, f"batch_normalization_{idx + 1}", nn.BatchNorm2d(width, eps=1e-3))
                in_ch, idx = width, idx + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """1 s windows at 48 kHz ``[B, 48000]`` -> embeddings ``[B, 512]``."""
        x = self.batch_normalization_1(self.frontend(audio))
        for idx in range(1, 8):
            x = F.relu(getattr(self, f"batch_normalization_{idx + 1}")(getattr(self, f"conv2d_{idx}")(x)))
            if idx in (2, 4, 6):
                x = F.max_pool2d(x, 2)
        x = self.audio_embedding_layer(x)  # [B, 512, 32, 24]
        return x.amax(dim=(2, 3))


def frame_windows(audio: torch.Tensor, hop_seconds: float, center: bool = True) -> torch.Tensor:
    """openl3 ``_preprocess_audio_batch``: mono 48 kHz ``[T]`` -> 1 s windows ``[n, 48000]``."""
    hop = int(hop_seconds * SAMPLE_RATE)
    if hop <= 0:
        raise ValueError(f"OpenL3: hop_seconds must be positive, got {hop_seconds}")
    x = F.pad(audio, (SAMPLE_RATE // 2, 0)) if center else audio
    n = x.shape[-1]
    pad = SAMPLE_RATE - n if n < SAMPLE_RATE else math.ceil((n - SAMPLE_RATE) / hop) * hop - (n - SAMPLE_RATE)
    x = F.pad(x, (0, max(pad, 0)))
    return x.unfold(-1, SAMPLE_RATE, hop)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an OpenL3 state dict from ``.safetensors`` or a plain torch state dict (``weights_only``).

    Keys may carry a ``model.``/``module.`` prefix; kapre/torchopenl3 spectrogram buffers are dropped.
    """
    out = {}
    for k, v in read_state_dict(path, "OpenL3 weights").items():
        for prefix in ("module.", "model."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if k.startswith(("speclayer.", "frontend.")) or k.endswith("num_batches_tracked"):
            continue
        out[k] = v
    return out


def _resolve(path: str | Path | None) -> Path:
    if not path:
        raise FileNotFoundError(f"OpenL3: no weights file given; set {ENV_VAR} (or the embedder's `path`) to a "
                                f"converted mel256/music state dict (docs/EVALUATION.md)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"OpenL3: weights file not found: {p} (set {ENV_VAR} or the embedder's `path`; "
                                f"see docs/EVALUATION.md for the conversion)")
    return p


@functools.lru_cache(maxsize=2)
def load_openl3(path: str, device: str = "cpu") -> OpenL3AudioNet:
    """The mel256/music network with weights from ``path`` (strict: every tensor must match)."""
    net = OpenL3AudioNet()
    state = load_weights(_resolve(path))
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    if problem := state_dict_mismatch(state, expected):
        raise ValueError(f"OpenL3 weights {path}: {problem} (expected the mel256 audio network)")
    net.load_state_dict(state, strict=False)  # only the BN step counters are absent
    return net.to(device).eval().requires_grad_(False)


class OpenL3Embedder:
    """OpenL3 (mel256, music, 512-d) embeddings with stable-audio-metrics' preprocessing (FD_openl3).

    Args:
        path: local weights file (``.safetensors`` or a torch state dict); read on first use, so a
            missing file fails there with a one-line error naming ``MUSICDIFF_OPENL3_PATH``.
        channels: 2 = per-channel L/R embeddings concatenated (1024-d; SA2 Table 2), 1 = mono mix.
        bandwidth_rate: rate the audio is resampled to before openl3's own 48 kHz resampling
            (stable-audio-metrics' ``samplingrate``: 44100 in its Song Describer examples).
        hop_seconds: hop between 1 s windows (stable-audio-metrics: 0.5).
        pooling: ``"frames"`` (every window is a row, as stable-audio-metrics pools them for FD;
            ``embed_audio`` then returns more rows than items) or ``"mean"`` (one row per item).
        peak_db: peak normalisation target in dBFS (``None``: off).
        device: inference device.
        batch_size: windows per forward pass.
        model: an already built :class:`OpenL3AudioNet` (tests); replaces ``path``.
    """

    def __init__(self, path: str | None = None, channels: int = 2, bandwidth_rate: int = 44100,
                 hop_seconds: float = 0.5, pooling: str = "frames", peak_db: float | None = -1.0,
                 device: str = "cpu", batch_size: int = 32, model: OpenL3AudioNet | None = None) -> None:
        if channels not in (1, 2):
            raise ValueError(f"OpenL3Embedder: channels must be 1 or 2, got {channels}")
        if pooling not in ("frames", "mean"):
            raise ValueError(f"OpenL3Embedder: pooling must be 'frames' or 'mean', got {pooling!r}")
        if hop_seconds <= 0 or bandwidth_rate <= 0:
            raise ValueError("OpenL3Embedder: hop_seconds and bandwidth_rate must be positive")
        self.path = None if model is not None or not path else str(path)  # read on first use
        self._model = model.eval().requires_grad_(False) if model is not None else None
        self.channels, self.bandwidth_rate, self.hop_seconds = int(channels), int(bandwidth_rate), float(hop_seconds)
        self.pooling, self.peak_db, self.device, self.batch_size = pooling, peak_db, device, int(batch_size)
        self.sample_rate = SAMPLE_RATE
        self.dim = EMBEDDING_DIM * self.channels
        self.cache_key = ("openl3", self.path or id(model), channels, bandwidth_rate, hop_seconds, pooling, peak_db)

    @property
    def model(self) -> OpenL3AudioNet:
        return self._model if self._model is not None else load_openl3(self.path, self.device)

    def _prepare(self, audio: torch.Tensor, sample_rate: int) -> list[torch.Tensor]:
        """One ``[C, T]`` item -> per-channel mono 48 kHz signals (``channels`` of them)."""
        x = peak_normalize(audio, self.peak_db) if self.peak_db is not None else audio
        x = resample(resample(x, sample_rate, self.bandwidth_rate), self.bandwidth_rate, SAMPLE_RATE)
        if self.channels == 1:
            return [x.mean(0)]
        return [x[0], x[1]] if x.shape[0] >= 2 else [x[0], x[0]]

    @torch.no_grad()
    def embed_frames(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> list[np.ndarray]:
        """Per-item window embeddings ``[n_i, 512 * channels]`` (window k centred at ``k * hop_seconds``)."""
        model, out = self.model, []
        device = next(model.parameters()).device
        for a in _check_audio(audio):
            per_channel: list[torch.Tensor] = []
            for ch in self._prepare(a, sample_rate or self.sample_rate):
                if per_channel and torch.equal(ch, prev):  # mono "faked" to stereo: embed once
                    per_channel.append(per_channel[-1])
                    continue
                windows, prev = frame_windows(ch, self.hop_seconds), ch
                embs = [model(windows[s:s + self.batch_size].to(device)).float().cpu()
                        for s in range(0, len(windows), self.batch_size)]
                per_channel.append(torch.cat(embs))
            out.append(torch.cat(per_channel, dim=1).numpy().astype(np.float32))
        return out

    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """``[sum n_i, D]`` window embeddings (``pooling="frames"``) or ``[N, D]`` per-item means."""
        frames = self.embed_frames(audio, sample_rate)
        if not frames:
            return np.zeros((0, self.dim), np.float32)
        if self.pooling == "mean":
            return np.stack([f.mean(0) for f in frames]).astype(np.float32)
        return np.concatenate(frames).astype(np.float32)
