"""Audio file I/O: decode with soundfile, resample with soxr, convert channels, check silence.

Every audio file musicdiff reads goes through :func:`load_audio`, so the training data, the
pre-encoder and the evaluation all see the same samples. Decoding is libsndfile (wav, flac, ogg,
mp3, aiff ...); resampling is soxr's high-quality polyphase resampler. Crops are read without
decoding the whole file: the window is mapped to input frames, read with a margin on both sides
(so the resampler's filter has its context), resampled and trimmed, which matches resampling the
whole file and slicing it (stable-audio-tools decodes and resamples whole files instead).

Bad files raise :class:`AudioLoadError`, whose ``reason`` (``unreadable``, ``empty``,
``non_finite`` ...) is what the datasets count in their ``skipped`` dictionaries.

Paths are handed to libsndfile as bytes (``os.fsencode``), so file names that are not valid UTF-8
are read like any other; messages show such names with ``\\xNN`` escapes (:func:`display_path`).

Audio above full scale (float files, lossy decoders' overshoot) follows one rule, shared by the
training dataset and ``musicdiff-encode``: see :func:`full_scale_gain`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch


AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
MULTICHANNEL_MODES = ("first", "downmix")
_RESAMPLE_MARGIN = 2048  # input frames of context read on each side of a resampled crop
_ITU_51 = np.array(  # ITU-R BS.775 5.1 -> stereo (L R C LFE Ls Rs), LFE dropped
    [[1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0], [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071]], dtype=np.float32
)


_INT_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ALAC_16", "ALAC_20", "ALAC_24", "ALAC_32")


def display_path(path: str | Path) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN`` (never breaks a log handler)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class AudioLoadError(ValueError):
    """An audio file cannot be used; ``reason`` is a short key for skip counters."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{display_path(path)}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    frames: int  # frames at the file's own sample rate
    sample_rate: int
    channels: int
    format: str
    subtype: str = ""  # libsndfile subtype (PCM_16, FLOAT, VORBIS ...)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    @property
    def may_exceed_full_scale(self) -> bool:
        """False for integer PCM, which decodes into [-1, 1); True for float and lossy encodings."""
        return self.subtype.upper() not in _INT_SUBTYPES


def full_scale_gain(peak: float) -> float:
    """The gain musicdiff applies to a file whose samples peak at ``peak`` (full scale = 1.0).

    The rule, shared by the training dataset and ``musicdiff-encode`` so that latents and audio
    training see the same samples: a file whose peak exceeds full scale is scaled down as a whole
    by ``1 / peak`` (peak-normalised to 0 dBFS); every other file is left as it is (gain 1).
    Scaling rather than clamping keeps the waveform: clamping a float file stored at, say, 16-bit
    integer scale would turn music into a square wave, and even mild overs would add clipping
    harmonics the model would learn. The peak is that of the whole file (not of a crop), so every
    training crop of a file gets the same gain as its encoding. Callers log and count it.

    Raises:
        ValueError: for a non-finite or negative ``peak``.
    """
    if not math.isfinite(peak) or peak < 0:
        raise ValueError(f"peak must be finite and non-negative, got {peak}")
    return 1.0 if peak <= 1.0 else 1.0 / peak


def file_peak(path: str | Path, info: AudioInfo | None = None, block_frames: int = 1 << 18) -> float:
    """Max absolute sample of the whole file at its own rate, read in blocks (bounded memory).

    Raises:
        AudioLoadError: unreadable or non-finite (NaN/Inf) audio.
    """
    info = info or audio_info(path)
    peak = 0.0
    try:
        for block in sf.blocks(os.fsencode(path), blocksize=block_frames, dtype="float32", always_2d=True):
            if block.size:
                if not np.isfinite(block).all():
                    raise AudioLoadError(path, "non_finite", "NaN or Inf samples")
                peak = max(peak, float(np.abs(block).max()))
    except AudioLoadError:
        raise
    except Exception as e:  # libsndfile raises several types
        raise AudioLoadError(path, "unreadable", str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    return peak


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Frames of ``frames`` input frames once resampled from ``sr_in`` to ``sr_out`` (rounded)."""
    return frames if sr_in == sr_out else int(round(frames * sr_out / sr_in))


def audio_info(path: str | Path) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioLoadError: ``missing`` (no such file), ``unreadable`` (not audio libsndfile can open)
            or ``empty`` (zero frames).
    """
    p = Path(path)
    if not p.is_file():
        raise AudioLoadError(p, "missing", "no such file")
    try:
        info = sf.info(os.fsencode(p))
    except Exception as e:  # libsndfile raises several types for garbage bytes
        raise AudioLoadError(p, "unreadable", str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise AudioLoadError(p, "empty", f"{info.frames} frames")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels), str(info.format),
                     str(info.subtype))


def convert_channels(audio: np.ndarray, channels: int, multichannel: str = "first") -> np.ndarray:
    """Convert ``[T, C_in]`` audio to ``channels`` channels.

    Rules: same count → unchanged; mono → duplicated; to mono → mean of all channels; more
    channels than asked → the first ``channels`` (``multichannel="first"``, stable-audio-tools'
    rule) or a downmix (``"downmix"``: ITU 5.1→stereo, otherwise channel ``j`` goes to output
    ``j % channels`` and each output is averaged); fewer (but not mono) → repeated cyclically.
    """
    if multichannel not in MULTICHANNEL_MODES:
        raise ValueError(f"multichannel must be one of {MULTICHANNEL_MODES}, got {multichannel!r}")
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    c_in = audio.shape[1]
    if c_in == channels:
        return audio
    if c_in == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    if c_in > channels:
        if multichannel == "first":
            return audio[:, :channels]
        if c_in == 6 and channels == 2:
            return audio @ (_ITU_51 / _ITU_51.sum(axis=1, keepdims=True)).T
        groups = [audio[:, j::channels].mean(axis=1) for j in range(channels)]
        return np.stack(groups, axis=1)
    return audio[:, [j % c_in for j in range(channels)]]


def _read(path: Path, start: int, stop: int) -> np.ndarray:
    """Frames ``[start, stop)`` as float32 ``[T, C]`` (falls back to a full read if seeking fails)."""
    try:
        return sf.read(os.fsencode(path), start=start, stop=stop, dtype="float32", always_2d=True)[0]
    except Exception as first:
        try:  # some decoders cannot seek: read everything and slice
            return sf.read(os.fsencode(path), dtype="float32", always_2d=True)[0][start:stop]
        except Exception as e:
            raise AudioLoadError(path, "unreadable", str(first).splitlines()[0] if str(first) else "") from e


def load_audio(
    path: str | Path,
    sample_rate: int,
    channels: int,
    offset: int = 0,
    num_frames: int | None = None,
    multichannel: str = "first",
    info: AudioInfo | None = None,
) -> torch.Tensor:
    """Load (a crop of) an audio file as float32 ``[channels, T]`` at ``sample_rate``.

    Args:
        path: audio file (any format libsndfile reads).
        sample_rate: output rate; other rates are resampled with soxr (HQ).
        channels: output channel count (see :func:`convert_channels`).
        offset: first output frame, counted at ``sample_rate``.
        num_frames: output frames wanted; ``None`` reads to the end. Fewer come back at the end
            of the file (the caller pads).
        multichannel: ``"first"`` or ``"downmix"`` for files with more channels than wanted.
        info: the file's header if already read (saves one open).

    Returns:
        float32 tensor ``[channels, T]``; for whole-file reads ``T = round(frames·sr/sr_in)``.

    Raises:
        AudioLoadError: missing, unreadable, empty or non-finite (NaN/Inf) audio.
    """
    path = Path(path)
    info = info or audio_info(path)
    if offset < 0 or (num_frames is not None and num_frames < 0):
        raise ValueError(f"offset and num_frames must be non-negative, got {offset}, {num_frames}")
    sr_in = info.sample_rate
    total_out = resampled_length(info.frames, sr_in, sample_rate)
    want = total_out - offset if num_frames is None else min(num_frames, total_out - offset)
    if want <= 0:
        if offset == 0:
            raise AudioLoadError(path, "empty", "no frames after resampling")
        return torch.zeros(channels, 0)
    if sr_in == sample_rate:
        data = _read(path, offset, offset + want)
    else:
        # Read aligned to a common-period boundary so the crop's samples sit exactly where the
        # whole-file resampling puts them; add margins for the filter's context.
        g = math.gcd(sr_in, sample_rate)
        step_in, step_out = sr_in // g, sample_rate // g
        block = offset // step_out
        margin_blocks = min(block, -(-_RESAMPLE_MARGIN // step_in))
        src_start = (block - margin_blocks) * step_in
        skip = offset - (block - margin_blocks) * step_out
        src_stop = min(info.frames, src_start + -(-(skip + want) * step_in // step_out) + _RESAMPLE_MARGIN)
        raw = _read(path, src_start, src_stop)
        if raw.shape[0] == 0:
            data = raw
        else:
            data = soxr.resample(raw, sr_in, sample_rate, quality="HQ")[skip: skip + want]
            if src_stop == info.frames and 0 < want - data.shape[0] <= 2:  # soxr end rounding
                data = np.pad(data, ((0, want - data.shape[0]), (0, 0)))
    if data.shape[0] == 0 and offset == 0:
        raise AudioLoadError(path, "empty", "decoder returned no frames")
    if not np.isfinite(data).all():
        raise AudioLoadError(path, "non_finite", "NaN or Inf samples")
    data = convert_channels(np.ascontiguousarray(data, dtype=np.float32), channels, multichannel)
    return torch.from_numpy(np.ascontiguousarray(data.T))


def peak_db(audio: torch.Tensor | np.ndarray) -> float:
    """Peak level in dBFS (``-inf`` for digital silence)."""
    peak = float(np.abs(np.asarray(audio)).max()) if np.asarray(audio).size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def is_silent(audio: torch.Tensor | np.ndarray, threshold_db: float = -60.0) -> bool:
    """True if the peak level is below ``threshold_db`` (stable-audio-tools' ``is_silence``)."""
    return peak_db(audio) < threshold_db


def save_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, subtype: str | None = None) -> None:
    """Write ``[C, T]`` audio (format from the extension; PCM_16 for wav unless ``subtype``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio.detach().cpu().float().numpy().T
    if subtype is None and path.suffix.lower() == ".wav":
        subtype = "PCM_16"
    sf.write(str(path), np.clip(data, -1.0, 1.0), int(sample_rate), subtype=subtype)
