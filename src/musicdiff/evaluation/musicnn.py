"""musicnn (Pons & Serra 2019) in PyTorch, with the released MTT/MSD weights read offline.

musicnn is a music auto-tagger trained on MagnaTagATune (``MTT_musicnn``, 50 instrument/
genre/mood tags) or the Million Song Dataset (``MSD_musicnn``, 50 genre/era/mood tags). It is
the real pretrained music model available without downloads (the ``musicnn==0.1.0`` wheel
ships its TensorFlow 1 checkpoints): its penultimate features give ``FD_musicnn`` and its
tag likelihoods give ``KL_musicnn`` -- offline stand-ins for FD_openl3 / KL_passt of SA2
Table 2 (same metrics, a smaller and older embedding model, so the numbers are not
comparable with the paper's).

Architecture (musicnn ``models.build_musicnn``; input a ``[T=187, F=96]`` log-mel patch):

* front end: batch-norm, then musically motivated filters with ReLU -> batch-norm -> max
  over frequency: timbral ``7 x 38`` and ``7 x 67`` (204 filters each, time padded by 3) and
  temporal ``128 x 1``, ``64 x 1``, ``32 x 1`` (51 filters each, TF ``same`` padding);
  concatenated to 561 channels per frame.
* mid end: three ``7 x 561/64`` convolutions (64 filters, ReLU -> batch-norm), the 2nd and 3rd
  residual; dense connection: front end + all three outputs = 753 channels per frame.
* back end: max- and mean-pool over time, interleaved per channel (TF ``flatten`` of
  ``[753, 2]``) -> batch-norm -> dense 200 + ReLU -> batch-norm (the *penultimate* features)
  -> dense 50 (tag logits; sigmoid gives the tag likelihoods).

Preprocessing (musicnn ``extractor.batch_data``): mono, 16 kHz; librosa mel spectrogram
(``n_fft=512``, hop 256, Hann, centred frames with reflect padding as in librosa 0.7, the
version musicnn 0.1.0 was released with; power 2; 96 Slaney mel bands with Slaney area
normalisation); cast to float16; ``log10(10000 x + 1)``; non-overlapping 3 s patches of 187
frames (a trailing partial patch is dropped, as musicnn does; clips shorter than one patch
are repeat-padded, the ``pad_short`` rule of its training config).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.evaluation.embedders import _check_audio, resample
from musicdiff.evaluation.tf_checkpoint import load_tf_checkpoint

SAMPLE_RATE = 16000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3 s) + 1
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
_CACHE_ITEMS = 4096  # memoised clips (1 KB per 3 s of audio)
_OUTPUT_CACHE: OrderedDict = OrderedDict()
MODELS = ("MTT_musicnn", "MSD_musicnn")
MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral")
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy")


def slaney_mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa's default mel filterbank ``[n_mels, n_fft // 2 + 1]`` (Slaney scale and area norm)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_freqs[None]
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)


class MusicnnFrontEndAudio(nn.Module):
    """16 kHz mono waveform ``[T]`` -> musicnn log-mel ``[frames, 96]`` (``log10(10000 x + 1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("fb", torch.from_numpy(slaney_mel_filterbank()), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.shape[-1] <= N_FFT // 2:  # reflect padding needs more samples than the pad
            wave = F.pad(wave, (0, N_FFT // 2 + 1 - wave.shape[-1]))
        spec = torch.stft(wave.double(), N_FFT, HOP, window=self.window.double(), center=True, pad_mode="reflect",
                          return_complex=True).abs().pow(2)
        mel = (self.fb.double() @ spec).T  # [frames, mels]
        mel = mel.clamp(max=65504.0).half().float()  # musicnn stores the spectrogram as float16
        return torch.log10(10000.0 * mel + 1.0)


def patches(logmel: torch.Tensor, frames: int = PATCH_FRAMES) -> torch.Tensor:
    """Non-overlapping ``[N, frames, mels]`` patches; short inputs are repeat-padded to one patch."""
    if logmel.shape[0] < frames:
        logmel = logmel.repeat(math.ceil(frames / logmel.shape[0]), 1)[:frames]
    n = logmel.shape[0] // frames
    return logmel[:n * frames].reshape(n, frames, logmel.shape[1])


def _conv_max_over_frequency(conv: nn.Conv2d, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``max_f BN(ReLU(conv(x)))`` ``[B, C, T]`` without materialising BN/ReLU on the big map.

    Eval-mode batch-norm is a per-channel affine ``a y + b`` and ReLU is monotone, so the max
    over frequency is ``a ReLU(max_f y) + b`` where ``a >= 0`` and ``a ReLU(min_f y) + b`` where
    ``a < 0``. The filters of the ``a < 0`` channels are negated (``min_f y = -max_f (-y)``), so
    one ``amax`` serves every channel (exact; about 1.4x faster on CPU than the literal order of
    operations, see experiments/bench/musicnn_embedding.py).
    """
    if bn.training:
        return bn(F.relu(conv(x))).amax(-1)
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    sign = torch.where(a >= 0, 1.0, -1.0).to(a.dtype)
    extreme = sign[:, None] * F.conv2d(x, conv.weight * sign[:, None, None, None], conv.bias * sign).amax(-1)
    return a[:, None] * F.relu(extreme) + b[:, None]


class Musicnn(nn.Module):
    """The musicnn network (``build_musicnn`` with 64 mid-end filters and 200 back-end units).

    Args:
        num_classes: tag outputs (50 for both released models).
        n_mels: mel bands of the input (96).
    """

    def __init__(self, num_classes: int = 50, n_mels: int = N_MELS) -> None:
        super().__init__()
        self.bn_input = nn.BatchNorm2d(1, eps=BN_EPS)
        self.timbral = nn.ModuleList([nn.Conv2d(1, 204, (7, int(r * n_mels))) for r in (0.4, 0.7)])
        self.timbral_bn = nn.ModuleList([nn.BatchNorm2d(204, eps=BN_EPS) for _ in range(2)])
        self.temporal = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32)])
        self.temporal_bn = nn.ModuleList([nn.BatchNorm2d(51, eps=BN_EPS) for _ in range(3)])
        self.mid = nn.ModuleList([nn.Conv1d(c, 64, 7, padding=3) for c in (561, 64, 64)])
        self.mid_bn = nn.ModuleList([nn.BatchNorm1d(64, eps=BN_EPS) for _ in range(3)])
        self.bn_pool = nn.BatchNorm1d(2 * 753, eps=BN_EPS)
        self.dense = nn.Linear(2 * 753, 200)
        self.bn_dense = nn.BatchNorm1d(200, eps=BN_EPS)
        self.out = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: log-mel patches ``[B, 187, 96]``. Returns ``logits [B, K]``, ``penultimate [B, 200]``."""
        x = self.bn_input(x[:, None])  # [B, 1, T, F]
        front = []
        for conv, bn in zip(self.timbral, self.timbral_bn):
            front.append(_conv_max_over_frequency(conv, F.pad(x, (0, 0, 3, 3)), bn))  # [B, 204, T]
        for conv, bn in zip(self.temporal, self.temporal_bn):
            k = conv.kernel_size[0]  # TF 'same': the extra padding row goes at the end
            front.append(_conv_max_over_frequency(conv, F.pad(x, (0, 0, (k - 1) // 2, k // 2)), bn))  # [B, 51, T]
        h = torch.cat(front, 1)  # [B, 561, T]
        dense = [h]
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn)):
            y = bn(F.relu(conv(h)))
            h = y if i == 0 else y + h  # the 2nd and 3rd layers are residual
            dense.append(h)
        feats = torch.cat(dense, 1)  # [B, 753, T]
        pooled = torch.stack([feats.amax(-1), feats.mean(-1)], -1).flatten(1)  # [max_0, mean_0, max_1, ...]
        penultimate = self.bn_dense(F.relu(self.dense(self.bn_pool(pooled))))
        return {"logits": self.out(penultimate), "penultimate": penultimate}

    def load_tf_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy the variables of a musicnn TF checkpoint (layer names in creation order)."""
        bn_names = ["batch_normalization", *(f"batch_normalization_{i}" for i in range(1, 11))]
        missing = [f"{name}/{v}" for name in bn_names for v in ("gamma", "beta", "moving_mean", "moving_variance")]
        missing += [f"{name}/{v}" for name in ["conv2d", *(f"conv2d_{i}" for i in range(1, 8)), "dense", "dense_1"]
                    for v in ("kernel", "bias")]
        missing = [k for k in missing if k not in tensors]
        if missing:
            raise ValueError(f"musicnn checkpoint: not a musicnn model, missing variables {missing[:4]} "
                             f"({len(missing)} in all)")
        t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in tensors.items()}
        # creation order: bn_input, (conv, bn) x 5 front-end blocks, (conv, bn) x 3 mid-end, bn, dense, bn, dense
        bn_order = [self.bn_input, self.timbral_bn[0], self.timbral_bn[1], *self.temporal_bn, *self.mid_bn,
                    self.bn_pool, self.bn_dense]
        convs = [*self.timbral, *self.temporal]
        with torch.no_grad():
            for i, bn in enumerate(bn_order):
                p = f"batch_normalization{'' if i == 0 else f'_{i}'}/"
                bn.weight.copy_(t[p + "gamma"]), bn.bias.copy_(t[p + "beta"])
                bn.running_mean.copy_(t[p + "moving_mean"]), bn.running_var.copy_(t[p + "moving_variance"])
            for i, conv in enumerate([*convs, *self.mid]):
                p = f"conv2d{'' if i == 0 else f'_{i}'}/"
                k = t[p + "kernel"]  # [kh, kw, in, out]
                w = k.permute(3, 2, 0, 1) if i < len(convs) else k[:, :, 0, :].permute(2, 1, 0)
                if w.shape != conv.weight.shape:
                    raise ValueError(f"musicnn checkpoint: {p}kernel has shape {tuple(k.shape)}, "
                                     f"expected weights {tuple(conv.weight.shape)}")
                conv.weight.copy_(w), conv.bias.copy_(t[p + "bias"])
            for name, lin in (("dense", self.dense), ("dense_1", self.out)):
                lin.weight.copy_(t[f"{name}/kernel"].T), lin.bias.copy_(t[f"{name}/bias"])


def default_weights_dir(model: str) -> Path:
    """Checkpoint directory of ``model`` inside the installed ``musicnn`` wheel (not imported)."""
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"musicnn weights: the `musicnn` package is not installed (pip install --no-deps "
                                f"musicnn==0.1.0), and no `path` to a {model} checkpoint directory was given")
    return Path(list(spec.submodule_search_locations)[0]) / model


@functools.lru_cache(maxsize=4)
def load_musicnn(model: str = "MTT_musicnn", path: str | None = None) -> Musicnn:
    """A :class:`Musicnn` in eval mode with the weights of ``model`` (from ``path`` or the wheel).

    Raises:
        ValueError: for an unknown model name.
        FileNotFoundError: if the checkpoint files are missing.
    """
    if model not in MODELS:
        raise ValueError(f"musicnn: unknown model {model!r}; expected one of {MODELS}")
    folder = Path(path) if path else default_weights_dir(model)
    net = Musicnn()
    net.load_tf_weights(load_tf_checkpoint(f"{folder}/"))  # the wheel saves with an empty file prefix
    return net.eval().requires_grad_(False)


class MusicnnEmbedder:
    """FD/KL embedder on musicnn: penultimate features and tag likelihoods, averaged over 3 s patches.

    ``embed_audio`` returns the mean penultimate (200-d) feature of a clip's patches (the
    ``FD_musicnn`` embedding); ``classify`` returns the mean sigmoid tag likelihoods (musicnn's
    ``top_tags`` ranking) renormalised to a distribution over the 50 tags (``KL_musicnn``).

    Args:
        model: ``MTT_musicnn`` (MagnaTagATune tags, default) or ``MSD_musicnn``.
        path: checkpoint directory; default the installed wheel's ``musicnn/<model>/``.
        device: torch device for inference.
        batch_size: patches per forward pass.
    """

    sample_rate = SAMPLE_RATE
    dim = 200

    def __init__(self, model: str = "MTT_musicnn", path: str | None = None, device: str = "cpu",
                 batch_size: int = 64) -> None:
        if model not in MODELS:
            raise ValueError(f"MusicnnEmbedder: unknown model {model!r}; expected one of {MODELS}")
        self.model, self.path, self.device, self.batch_size = model, path, device, int(batch_size)
        self.labels = MTT_LABELS if model.startswith("MTT") else MSD_LABELS
        self.cache_key = ("musicnn", model, path)
        self._front = MusicnnFrontEndAudio()

    @torch.inference_mode()
    def _outputs(self, audio: Sequence[torch.Tensor], sample_rate: int | None) -> list[dict[str, torch.Tensor]]:
        """Per-clip patch outputs; patches of all clips share forward passes of ``batch_size``.

        Outputs are memoised per clip content (model, rate, waveform digest), so ``embed_audio``
        and ``classify`` on the same audio (FD and KL of one suite) run the network once.
        """
        items = _check_audio(audio)
        sr = int(sample_rate or SAMPLE_RATE)
        keys = [(self.model, self.path, sr, tuple(a.shape),
                 hashlib.blake2b(a.numpy().tobytes(), digest_size=16).digest()) for a in items]
        todo = [i for i, k in enumerate(keys) if k not in _OUTPUT_CACHE]
        if todo:
            net = load_musicnn(self.model, self.path).to(self.device)
            clips = [patches(self._front(resample(items[i], sr, SAMPLE_RATE).mean(0)).float()) for i in todo]
            flat = torch.cat(clips)
            res = [net(flat[s:s + self.batch_size].to(self.device)) for s in range(0, len(flat), self.batch_size)]
            out = {k: torch.cat([r[k] for r in res]).cpu().split([len(c) for c in clips])
                   for k in ("logits", "penultimate")}
            for j, i in enumerate(todo):
                _OUTPUT_CACHE[keys[i]] = {k: v[j].clone() for k, v in out.items()}
                while len(_OUTPUT_CACHE) > _CACHE_ITEMS:
                    _OUTPUT_CACHE.popitem(last=False)
        return [_OUTPUT_CACHE[k] for k in keys]

    def patch_outputs(self, audio: Sequence[torch.Tensor],
                      sample_rate: int | None = None) -> list[dict[str, np.ndarray]]:
        """Per-patch ``taggram`` (sigmoid, ``[P, 50]``) and ``penultimate`` (``[P, 200]``) of each clip."""
        return [{"taggram": torch.sigmoid(o["logits"]).numpy(), "penultimate": o["penultimate"].numpy()}
                for o in self._outputs(audio, sample_rate)]

    def embed_audio(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        outs = self._outputs(audio, sample_rate)
        if not outs:
            return np.zeros((0, self.dim), np.float32)
        return torch.stack([o["penultimate"].mean(0) for o in outs]).numpy().astype(np.float32)

    def classify(self, audio: Sequence[torch.Tensor], sample_rate: int | None = None) -> np.ndarray:
        """Per-clip tag distributions ``[N, 50]``: mean patch likelihoods, normalised to sum to 1."""
        outs = self._outputs(audio, sample_rate)
        if not outs:
            return np.zeros((0, len(self.labels)))
        probs = torch.stack([torch.sigmoid(o["logits"].double()).mean(0) for o in outs])
        return (probs / probs.sum(1, keepdim=True)).numpy()
