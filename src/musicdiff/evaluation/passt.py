"""PaSST AudioSet tagger (Koutini et al. 2022) in PyTorch: the classifier of KL_passt (SA2 Table 2).

stable-audio-metrics (``src/passt_kld.py``) runs ``hear21passt.base.get_basic_model(mode="logits")``:
the PaSST-S checkpoint ``passt-s-f128-p16-s10-ap.476-swa.pt`` (527 AudioSet classes). The
``hear21passt`` wheel needs ``timm`` and ``torchaudio`` (which pin their own torch), so the model
definition is re-implemented here with the checkpoint's parameter names; the weights are read
from a local file (``.pt`` state dict via ``weights_only`` or ``.safetensors``), never downloaded.

Preprocessing (``passt_kld.return_probabilities``): mono at 32 kHz, peak-normalised to -1 dBFS;
10 s windows every 5 s, ``range(0, max(step, len - step), step)``; a short last window is
zero-padded to 10 s if longer than 15% of a window, else kept as is; the model's logits are
averaged over windows and a softmax over the 527 classes gives the tag distribution.

Front end (hear21passt ``AugmentMelSTFT`` in eval mode): pre-emphasis ``x[n+1] - 0.97 x[n]``;
STFT with ``n_fft=1024``, hop 320, an 800-sample symmetric Hann window, centred (reflect
padding); power spectrum; 128 Kaldi mel bands (``torchaudio.compliance.kaldi.get_mel_banks``:
triangles on the ``1127 ln(1 + f / 700)`` scale, 0-15 kHz, zero weight on the Nyquist bin);
``(log(mel + 1e-5) + 4.5) / 5``.

Network (``passt_s_swa_p16_128_ap476``, a DeiT-B/16 with PaSST's positional encoding): a
``16 x 16`` patch convolution with stride 10 on the ``[128, 998]`` mel image (``12 x 99``
patches, 768-d); separate learned frequency and time positional embeddings (time cut to the
input length); class and distillation tokens with their own embeddings; 12 pre-norm blocks
(12 heads, MLP 3072, GELU, LayerNorm eps 1e-6); final LayerNorm; logits of the mean of the two
tokens through ``head = LayerNorm -> Linear(768, 527)``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.evaluation.embedders import _check_audio, peak_normalize, resample
from musicdiff.files.state_dict import read_state_dict, state_dict_mismatch

SAMPLE_RATE = 32000
N_MELS, N_FFT, WIN, HOP = 128, 1024, 800, 320
F_MAX = 15000.0  # hear21passt: fmax=None -> sr // 2 - fmax_aug_range // 2
NUM_CLASSES = 527
ENV_VAR = "MUSICDIFF_PASST_PATH"


def kaldi_mel_banks(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0,
                    f_max: float = F_MAX) -> torch.Tensor:
    """Kaldi mel filterbank ``[n_mels, n_fft // 2 + 1]`` (no VTLN warp; Nyquist column zero)."""
    mel = lambda f: 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)  # noqa: E731
    lo, hi = mel(f_min), mel(f_max)
    delta = (hi - lo) / (n_mels + 1)
    i = torch.arange(n_mels, dtype=torch.float64)[:, None]
    left, center, right = lo + i * delta, lo + (i + 1) * delta, lo + (i + 2) * delta
    bins = mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None]
    up, down = (bins - left) / (center - left), (right - bins) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1)).float()


class PasstMelFrontEnd(nn.Module):
    """32 kHz mono ``[B, T]`` -> normalised log-mel ``[B, 128, 1 + (T - 1) // 320]``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN, periodic=False), persistent=False)
        self.register_buffer("mel_fb", kaldi_mel_banks(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 1:] - 0.97 * x[:, :-1]  # pre-emphasis
        spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WIN, window=self.window, center=True,
                          return_complex=True).abs().pow(2)
        mel = self.mel_fb @ spec
        return (torch.log(mel + 1e-5) + 4.5) / 5.0


class _Block(nn.Module):
    """Pre-norm transformer block (timm ``Block``: ``norm1/attn.qkv/attn.proj/norm2/mlp.fc1/fc2``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, int(dim * mlp_ratio)), nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attn.proj(a)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class PaSST(nn.Module):
    """PaSST-S (distilled ViT on mel patches); defaults are the ``ap476`` AudioSet checkpoint's.

    Args:
        n_mels, n_frames: input mel image size the positional grid is built for (128 x 998).
        patch, stride: patch size and stride (16, 10).
        dim, depth, heads, mlp_ratio: transformer size (768, 12, 12, 4).
        num_classes: output classes (527 AudioSet labels).
    """

    def __init__(self, n_mels: int = N_MELS, n_frames: int = 998, patch: int = 16, stride: int = 10, dim: int = 768,
                 depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.mel = PasstMelFrontEnd()
        grid = (n_mels // stride, n_frames // stride)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, dim, patch, stride=stride)
        self.cls_token, self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)), nn.Parameter(torch.zeros(1, 1, dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, dim, grid[0], 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, dim, 1, grid[1]))
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.head_dist = nn.Linear(dim, num_classes)
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                  self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """Token features ``[B, dim]`` (mean of class and distillation tokens; hear21passt's ``embed_only``)."""
        x = self.patch_embed.proj(mel.unsqueeze(1))  # [B, D, F', T']
        if x.shape[-1] > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"PaSST: input of {mel.shape[-1]} frames is longer than the model's "
                             f"{self.time_new_pos_embed.shape[-1]} time patches")
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        tokens = torch.cat([self.cls_token + self.new_pos_embed[:, :1], self.dist_token + self.new_pos_embed[:, 1:]], 1)
        x = self.norm(self.blocks(torch.cat([tokens.expand(b, -1, -1), x], 1)))
        return (x[:, 0] + x[:, 1]) / 2

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of mel images ``[B, n_mels, frames]``."""
        return self.head(self.features(mel))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of 32 kHz mono audio ``[B, T]`` (T <= 10 s)."""
        return self.forward_mel(self.mel(audio))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """PaSST state dict from ``.safetensors`` or a torch file (``weights_only``); strips ``net.``/``module.``."""
    out = {}
    for k, v in read_state_dict(path, "PaSST weights", unwrap=("state_dict", "model")).items():
        for prefix in ("module.", "net."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if k.startswith("mel.") or k == "device_proxy":
            continue
        out[k] = v
    return out


def _resolve(path: str | Path | None) -> Path:
    if not path:
        raise FileNotFoundError(f"PaSST: no weights file given; set {ENV_VAR} (or the classifier's `path`) to "
                                f"passt-s-f128-p16-s10-ap.476-swa.pt (docs/EVALUATION.md)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"PaSST: weights file not found: {p} (set {ENV_VAR} or the classifier's `path`)")
    return p


@functools.lru_cache(maxsize=2)
def load_passt(path: str, device: str = "cpu") -> PaSST:
    """PaSST-S with the weights of ``path`` (every tensor must match the architecture)."""
    net = PaSST()
    state, expected = load_weights(_resolve(path)), net.state_dict()
    if problem := state_dict_mismatch(state, expected):
        raise ValueError(f"PaSST weights {path}: {problem} (expected passt_s_swa_p16_128_ap476)")
    net.load_state_dict(state)
    return net.to(device).eval().requires_grad_(False)


def analysis_windows(audio: torch.Tensor, window_seconds: float = 10.0, overlap_seconds: float = 5.0,
                     sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """stable-audio-metrics' windows of a mono signal ``[T]`` (see the module docstring)."""
    win, step = int(window_seconds * sample_rate), int((window_seconds - overlap_seconds) * sample_rate)
    if step <= 0:
        raise ValueError(f"PaSST: overlap_seconds ({overlap_seconds}) must be smaller than window_seconds")
    out = []
    for start in range(0, max(step, audio.shape[-1] - step), step):
        w = audio[start:start + win]
        if w.shape[-1] < win and w.shape[-1] > int(win * 0.15):
            w = F.pad(w, (0, win - w.shape[-1]))
        if w.shape[-1] > 0:
            out.append(w)
    return out


class PasstClassifier:
    """AudioSet tag distributions of PaSST-S with stable-audio-metrics' windowing (KL_passt).

    Args:
        path: local weights file; read on first use (a missing file fails there, naming
            ``MUSICDIFF_PASST_PATH``).
        window_seconds, overlap_seconds: analysis windows (10 s, 5 s overlap).
        collect: ``"mean"`` or ``"max"`` of the window logits before the softmax.
        peak_db: peak normalisation target in dBFS (``None``: off).
        device: inference device.
        model: an already built :class:`PaSST` (tests); replaces ``path``.
    """

    def __init__(self, path: str | None = None, window_seconds: float = 10.0, overlap_seconds: float = 5.0,
                 collect: str = "mean", peak_db: float | None = -1.0, device: str = "cpu",
                 model: PaSST | None = None) -> None:
        if collect not in ("mean", "max"):
            raise ValueError(f"PasstClassifier: collect must be 'mean' or 'max', got {collect!r}")
        self.path = None if model is not None or not path else str(path)  # read on first use
        self._model = model.eval().requires_grad_(False) if model is not None else None
        self.window_seconds, self.overlap_seconds = float(window_seconds), float(overlap_seconds)
        self.collect, self.peak_db, self.device = collect, peak_db, device
        self.sample_rate = SAMPLE_RATE
        self.cache_key = ("passt", self.path or id(model), window_seconds, overlap_seconds, collect, peak_db)

    @property
    def model(self) -> PaSST:
        return self._model if self._model is not None else load_passt(self.path, self.device)

    @torch.no_grad()
    def _per_window(self, audio: Sequence[torch.Tensor], sample_rate: int | None, head: bool) -> list[torch.Tensor]:
        model, out = self.model, []
        device = next(model.parameters()).device
        for a in _check_audio(audio):
            x = resample(a, sample_rate or self.sample_rate, SAMPLE_RATE).mean(0)
            x = peak_normalize(x[None], self.peak_db)[0] if self.peak_db is not None else x
            rows = []
            for w in analysis_windows(x, self.window_seconds, self.overlap_seconds):
                f = model.features(model.mel(w[None].to(device)))
                rows.append((model.head(f) if head else f).float().cpu())
            out.append(torch.cat(rows))
        return out

    def logits(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> list[torch.Tensor]:
        """Per-item window logits ``[n_windows, 527]``."""
        return self._per_window(audio, sample_rate, head=True)

    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Per-item mean of the window token features ``[N, 768]`` (an embedder, e.g. for memorization)."""
        rows = [f.mean(0) for f in self._per_window(audio, sample_rate, head=False)]
        return torch.stack(rows).numpy().astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def classify(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Tag distributions ``[N, 527]``: softmax of the mean (or max) window logits."""
        rows = [lg.mean(0) if self.collect == "mean" else lg.amax(0) for lg in self.logits(audio, sample_rate)]
        if not rows:
            return np.zeros((0, NUM_CLASSES))
        return torch.softmax(torch.stack(rows).double(), -1).numpy()
