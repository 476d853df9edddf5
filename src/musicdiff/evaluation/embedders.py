"""Audio (and text) embedders used by the evaluation metrics and the memorization analysis.

Every embedder follows the :class:`Embedder` protocol: it has a ``sample_rate`` and an
``embed_audio(audio, sample_rate=None)`` that maps a list of ``[C, T]`` waveforms (of any
lengths) to one ``[N, D]`` float32 array. Text-capable embedders (CLAP) also have
``embed_text(texts)``, and classifiers have ``classify(audio, sample_rate=None)`` returning
per-item label distributions ``[N, K]`` (used by the KL metric).

Three implementations:

* :class:`ClapEmbedder` -- a ``transformers`` CLAP model loaded from a local directory
  (audio and text towers; the embedder of the CLAP score of SA2 Table 2 and of the
  memorization analysis of SA2 §4.5).
* :class:`MelStatsEmbedder` -- weight-free log-mel statistics; deterministic and available
  everywhere, the default for tiny runs and CI.
* :class:`RandomConvEmbedder` -- a tiny convolutional net with seeded random weights that also
  acts as a label "classifier" (softmax head) for the KL metric without downloaded weights.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("musicdiff.evaluation")


@runtime_checkable
class Embedder(Protocol):
    """What the metrics need from an embedding model."""

    sample_rate: int

    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Embed waveforms ``[C, T]`` (at ``sample_rate``, default the embedder's) into ``[N, D]``."""
        ...


@dataclass
class AudioSet:
    """A named list of waveforms at one sample rate, with an embedding cache.

    Args:
        audio: waveforms, each ``float32 [C, T]``.
        names: one identifier per waveform (file stem or relative path), used for pairing.
        sample_rate: sample rate of every waveform, in Hz.
    """

    audio: list[torch.Tensor]
    names: list[str]
    sample_rate: int
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.audio) != len(self.names):
            raise ValueError(f"AudioSet: {len(self.audio)} waveforms but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.audio)

    def embed(self, embedder: Embedder) -> np.ndarray:
        """Embeddings of this set by ``embedder``, computed once per embedder configuration."""
        key = ("embed", getattr(embedder, "cache_key", id(embedder)))
        if key not in self._cache:
            self._cache[key] = np.asarray(embedder.embed_audio(self.audio, self.sample_rate), dtype=np.float32)
        return self._cache[key]

    def classify(self, classifier: Any) -> np.ndarray:
        """Label distributions ``[N, K]`` of this set by ``classifier`` (cached like :meth:`embed`)."""
        key = ("classify", getattr(classifier, "cache_key", id(classifier)))
        if key not in self._cache:
            self._cache[key] = np.asarray(classifier.classify(self.audio, self.sample_rate), dtype=np.float64)
        return self._cache[key]


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample ``[C, T]`` audio with soxr (high quality); identity when the rates match."""
    if orig_sr == target_sr:
        return audio
    import soxr

    out = soxr.resample(audio.detach().cpu().float().numpy().T, orig_sr, target_sr, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(out.T)).float()


def peak_normalize(audio: torch.Tensor, target_db: float = -1.0) -> torch.Tensor:
    """Scale ``[C, T]`` audio so its peak over all channels is ``target_db`` dBFS (silence unchanged).

    ``pyloudnorm.normalize.peak``, the loudness step of every stable-audio-metrics metric.
    """
    peak = audio.abs().max()
    return audio if peak <= 0 else audio * (10.0 ** (target_db / 20.0) / peak)


def _check_audio(audio: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(audio, torch.Tensor) and audio.dim() == 3:
        audio = list(audio)
    items = []
    for i, a in enumerate(audio):
        a = torch.as_tensor(a)
        if a.dim() == 1:
            a = a[None]
        if a.dim() != 2 or a.shape[-1] == 0:
            raise ValueError(f"audio item {i}: expected a non-empty [C, T] waveform, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError(f"audio item {i}: waveform contains NaN or Inf")
        items.append(a.detach().float().cpu())
    return items


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-scale mel filterbank ``[n_mels, n_fft // 2 + 1]`` (Slaney-style area norm)."""
    f_max = f_max or sample_rate / 2
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))
    return fb.float()


class LogMel(torch.nn.Module):
    """Mono log-mel spectrogram ``[C, T] -> [n_mels, frames]`` (Hann window, hop n_fft/4)."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, n_mels: int = 64) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def forward(self, audio: torch.Tensor, relative_floor: bool = False) -> torch.Tensor:
        """Log-mel of the mono mix; ``relative_floor`` sets the floor 120 dB below the peak (gain-invariant)."""
        x = audio.mean(0)
        if x.shape[-1] < self.n_fft:
            x = F.pad(x, (0, self.n_fft - x.shape[-1]))
        spec = torch.stft(x, self.n_fft, hop_length=self.n_fft // 4, window=self.window,
                          center=False, return_complex=True).abs().pow(2)
        mel = self.fb @ spec
        floor = 1e-12 * mel.max().clamp_min(1e-30) if relative_floor else 1e-6
        return torch.log(mel + floor)


class MelStatsEmbedder:
    """Weight-free embedding: per-band mean, std and mean absolute delta of the log-mel.

    Deterministic and cheap; it measures timbre/loudness statistics rather than semantics, so
    its Fréchet distance is a smoke-test proxy for FD_openl3 (SA2 Table 2), not a replacement.
    The statistics share a large common offset, so cosine similarities between different sounds
    are high; for nearest-neighbour searches prefer CLAP or :class:`RandomConvEmbedder`.

    Args:
        sample_rate: rate the audio is resampled to before analysis.
        n_fft: STFT size.
        n_mels: mel bands; the embedding has ``3 * n_mels`` dimensions.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, n_mels: int = 64) -> None:
        if sample_rate <= 0 or n_fft <= 0 or n_mels <= 0:
            raise ValueError("MelStatsEmbedder: sample_rate, n_fft and n_mels must be positive")
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.dim = 3 * self.n_mels
        self.cache_key = ("melstats", self.sample_rate, n_fft, n_mels)
        self._mel = LogMel(self.sample_rate, n_fft, n_mels)

    @torch.no_grad()
    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        out = []
        for a in _check_audio(audio):
            mel = self._mel(resample(a, sample_rate or self.sample_rate, self.sample_rate))
            delta = (mel[:, 1:] - mel[:, :-1]).abs().mean(1) if mel.shape[1] > 1 else torch.zeros(mel.shape[0])
            std = mel.std(1, unbiased=False)
            out.append(torch.cat([mel.mean(1), std, delta]))
        return torch.stack(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


class RandomConvEmbedder(torch.nn.Module):
    """Tiny log-mel conv net with seeded random weights; embedder and softmax "classifier".

    Weights come from a private ``torch.Generator`` seeded with ``seed``, so two instances with
    the same arguments are identical and the global RNG is untouched.

    Args:
        sample_rate: analysis rate in Hz.
        dim: embedding size.
        num_classes: labels of the softmax head used by :meth:`classify`.
        n_mels: mel bands of the front end.
        seed: weight seed.
        temperature: softmax temperature of :meth:`classify`.
    """

    def __init__(self, sample_rate: int = 16000, dim: int = 128, num_classes: int = 32, n_mels: int = 64,
                 seed: int = 0, temperature: float = 0.25) -> None:
        super().__init__()
        if dim <= 0 or num_classes < 2 or temperature <= 0:
            raise ValueError("RandomConvEmbedder: need dim > 0, num_classes >= 2 and temperature > 0")
        self.sample_rate = int(sample_rate)
        self.dim, self.num_classes, self.temperature = int(dim), int(num_classes), float(temperature)
        self.cache_key = ("randconv", self.sample_rate, dim, num_classes, n_mels, seed, temperature)
        self.mel = LogMel(self.sample_rate, 1024, n_mels)
        with torch.random.fork_rng(devices=[]):  # default inits must not consume the global RNG
            self.net = torch.nn.Sequential(
                torch.nn.Conv1d(n_mels, 64, 3, padding=1), torch.nn.GELU(),
                torch.nn.Conv1d(64, 64, 3, padding=2, dilation=2), torch.nn.GELU(),
                torch.nn.Conv1d(64, dim, 3, padding=4, dilation=4),
            )
            self.head = torch.nn.Linear(dim, num_classes)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in) if p.dim() > 1
                        else 0.1 * torch.randn(p.shape, generator=gen))
        self.eval().requires_grad_(False)

    def _features(self, audio: Sequence[torch.Tensor], sample_rate: int | None) -> torch.Tensor:
        feats = []
        for a in _check_audio(audio):
            mel = self.mel(resample(a, sample_rate or self.sample_rate, self.sample_rate), relative_floor=True)
            mel = (mel - mel.mean()) / (mel.std() + 1e-5)  # gain-invariant front end
            feats.append(self.net(mel[None])[0].mean(-1))
        return torch.stack(feats) if feats else torch.zeros(0, self.dim)

    @torch.no_grad()
    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        return self._features(audio, sample_rate).numpy().astype(np.float32)

    @torch.no_grad()
    def classify(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Per-item label distributions ``[N, num_classes]`` (softmax of the random head)."""
        logits = self.head(self._features(audio, sample_rate)) / self.temperature
        return torch.softmax(logits.double(), -1).numpy()


@functools.lru_cache(maxsize=2)
def _load_clap(path: str, device: str) -> tuple[Any, Any]:
    from types import SimpleNamespace

    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel, ClapProcessor

    try:
        model = ClapModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"ClapEmbedder: no local CLAP model at {path!r} (weights are never downloaded; point "
            f"MUSICDIFF_CLAP_PATH at a directory saved with ClapModel/ClapProcessor.save_pretrained): {e}"
        ) from e
    try:
        processor = ClapProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        # a checkpoint saved without its feature extractor: CLAP's default front end, sized to the model
        log.warning("ClapEmbedder: no processor files in %s; using a default ClapFeatureExtractor", path)
        processor = SimpleNamespace(
            tokenizer=AutoTokenizer.from_pretrained(path, local_files_only=True),
            feature_extractor=ClapFeatureExtractor(feature_size=model.config.audio_config.num_mel_bins),
        )
    return model.to(device).eval().requires_grad_(False), processor


def _pooled(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClapEmbedder:
    """CLAP audio and text towers from a local ``transformers`` checkpoint (SA2 §4.1, §4.5).

    Audio is resampled to the feature extractor's rate, downmixed to mono and cut into windows
    of the extractor's ``max_length_s`` (shorter windows are repeat-padded by the extractor);
    window embeddings are averaged and re-normalised, so long files are embedded
    deterministically. Loading is lazy: constructing the object reads nothing.

    ``long_audio="reference"`` follows stable-audio-metrics' CLAP score instead (SA2 Table 2):
    the whole mono file goes to the feature extractor, which repeat-pads short audio and, for
    long audio, takes LAION-CLAP's ``fusion`` input (fused checkpoints: a downsampled global
    view plus three random 10 s crops) or one random 10 s crop (``rand_trunc``); the crop
    randomness is seeded per item (``seed + index``), so results are reproducible. With
    ``peak_db=-1`` and ``quantize_int16=True`` the audio is peak-normalised and passed through
    int16 as LAION-CLAP's ``int16_to_float32(float32_to_int16(x))`` does.

    Args:
        path: directory holding ``ClapModel`` and ``ClapProcessor`` files (``local_files_only``).
        device: torch device for inference.
        batch_size: windows (or texts) per forward pass.
        window_seconds: window length; default the extractor's ``max_length_s``.
        labels: texts for zero-shot :meth:`classify` (softmax over label similarities).
        long_audio: ``"windows"`` (mean of window embeddings) or ``"reference"`` (see above).
        peak_db: peak normalisation target in dBFS before embedding (``None``: off).
        quantize_int16: round the waveform to int16 steps (LAION-CLAP's loading) before embedding.
        seed: seed of the extractor's random crops in ``"reference"`` mode.
        text_max_length: tokens kept per text (LAION-CLAP truncates at 77); ``None``: the tokenizer's limit.
    """

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16, window_seconds: float | None = None,
                 labels: Sequence[str] | None = None, long_audio: str = "windows", peak_db: float | None = None,
                 quantize_int16: bool = False, seed: int = 0, text_max_length: int | None = None) -> None:
        if long_audio not in ("windows", "reference"):
            raise ValueError(f"ClapEmbedder: long_audio must be 'windows' or 'reference', got {long_audio!r}")
        self.path, self.device, self.batch_size = str(path), device, int(batch_size)
        self.window_seconds = window_seconds
        self.labels = list(labels) if labels else None
        self.long_audio, self.peak_db, self.seed = long_audio, peak_db, int(seed)
        self.quantize_int16 = bool(quantize_int16)
        self.text_max_length = int(text_max_length) if text_max_length else None
        self.cache_key = ("clap", self.path, window_seconds, long_audio, peak_db, self.quantize_int16, self.seed)

    def _load(self) -> tuple[Any, Any]:
        return _load_clap(self.path, self.device)

    @property
    def sample_rate(self) -> int:
        return int(self._load()[1].feature_extractor.sampling_rate)

    @torch.no_grad()
    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        model, processor = self._load()
        fe = processor.feature_extractor
        sr = int(fe.sampling_rate)
        win = int(round((self.window_seconds or fe.max_length_s) * sr))
        ac = model.config.audio_config  # HTSAT accepts at most spec_size * (spec_size // mels) frames
        win = min(win, (ac.spec_size * (ac.spec_size // ac.num_mel_bins) - 1) * fe.hop_length)
        trunc = "fusion" if getattr(model.config.audio_config, "enable_fusion", False) else "rand_trunc"
        mono = [self._mono(a, sample_rate or sr, sr) for a in _check_audio(audio)]
        if self.long_audio == "reference":
            return self._embed_whole(model, fe, mono, sr, trunc)
        windows, owner = [], []
        for i, x in enumerate(mono):
            for start in range(0, max(len(x), 1), win):
                chunk = x[start:start + win]
                if start == 0 or len(chunk) >= win // 4:  # drop very short tails
                    windows.append(chunk)
                    owner.append(i)
        embs = []
        for s in range(0, len(windows), self.batch_size):
            feats = fe(windows[s:s + self.batch_size], sampling_rate=sr, return_tensors="pt", truncation=trunc,
                       max_length=win)
            feats = {k: v.to(self.device) for k, v in feats.items()}
            embs.append(F.normalize(_pooled(model.get_audio_features(**feats)).float(), dim=-1).cpu())
        if not embs:
            return np.zeros((0, model.config.projection_dim), np.float32)
        emb, owner_t = torch.cat(embs), torch.tensor(owner)
        n = int(owner_t.max()) + 1
        summed = torch.zeros(n, emb.shape[1]).index_add_(0, owner_t, emb)
        return F.normalize(summed, dim=-1).numpy().astype(np.float32)

    def _mono(self, audio: torch.Tensor, sample_rate: int, target_sr: int) -> np.ndarray:
        """Resampled mono mix, optionally peak-normalised and int16-quantised (stable-audio-metrics)."""
        x = resample(audio, sample_rate, target_sr).mean(0, keepdim=True)
        if self.peak_db is not None:
            x = peak_normalize(x, self.peak_db)
        if self.quantize_int16:
            x = torch.trunc(x.clamp(-1.0, 1.0) * 32767.0) / 32767.0  # numpy astype(int16) truncates
        return x[0].numpy()

    def _embed_whole(self, model: Any, fe: Any, mono: list[np.ndarray], sr: int, trunc: str) -> np.ndarray:
        """One forward per file with the extractor's own long-audio handling (seeded crops)."""
        embs, state = [], np.random.get_state()
        try:
            for i, x in enumerate(mono):
                np.random.seed((self.seed + i) % 2**32)
                feats = fe([x], sampling_rate=sr, return_tensors="pt", truncation=trunc, padding="repeatpad")
                feats = {k: v.to(self.device) for k, v in feats.items()}
                embs.append(F.normalize(_pooled(model.get_audio_features(**feats)).float(), dim=-1).cpu())
        finally:
            np.random.set_state(state)
        if not embs:
            return np.zeros((0, model.config.projection_dim), np.float32)
        return torch.cat(embs).numpy().astype(np.float32)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings ``[N, D]`` from the CLAP text tower."""
        model, processor = self._load()
        out = []
        for s in range(0, len(texts), self.batch_size):
            tok = processor.tokenizer(list(texts[s:s + self.batch_size]), padding=True, truncation=True,
                                      max_length=self.text_max_length, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            out.append(F.normalize(_pooled(model.get_text_features(**tok)).float(), dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def classify(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Zero-shot label distributions: softmax over ``logit_scale * cos(audio, label text)``."""
        if not self.labels:
            raise ValueError("ClapEmbedder.classify needs `labels` (texts of the zero-shot classes)")
        model, _ = self._load()
        a = torch.from_numpy(self.embed_audio(audio, sample_rate)).double()
        t = torch.from_numpy(self.embed_text(self.labels)).double()
        scale = float(model.logit_scale_a.exp()) if hasattr(model, "logit_scale_a") else 1 / 0.07
        return torch.softmax(scale * a @ t.T, -1).numpy()
