"""Shard lists, sample counts, fsspec URLs and sample decoding for WebDataset tar shards.

A shard is a POSIX tar whose files are grouped into samples by key (``<key>.<ext>``, the
WebDataset / stable-audio-tools / LAION layout). musicdiff reads two kinds:

* audio shards: ``<key>.flac`` (any extension libsndfile decodes) with ``<key>.json`` (metadata:
  ``caption``/``prompt``/``text`` and tag fields) and/or ``<key>.txt`` (a caption), written by
  :mod:`musicdiff.data.make_shards` or by other tools;
* latent shards, written by ``musicdiff-encode format=webdataset``: ``<key>.latents.npy``
  (float ``[D, L]``, loaded with ``allow_pickle=False``), ``<key>.mask.npy`` (bool ``[L]``, True =
  real audio) and ``<key>.json`` (path, timing, metadata).

URLs are opened by WebDataset's ``gopen``: local paths, ``file:``, ``pipe:<command>`` (e.g.
``pipe:aws s3 cp s3://bucket/shard-000.tar -``), http(s), ``gs:``, ``hf:``. Any other scheme
that fsspec knows (``s3://``, ``gcs://``, ``az://``, ``memory://`` ...) is registered in
``webdataset.gopen.gopen_schemes`` (the library's extension point) as an fsspec open.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
import soundfile as sf
import soxr
import torch
import webdataset as wds
from webdataset.tariterators import base_plus_ext

from musicdiff.data.audio_io import AUDIO_EXTENSIONS, AudioInfo, convert_channels, full_scale_gain

log = logging.getLogger("musicdiff.data")
wds_gopen = importlib.import_module("webdataset.gopen")  # the module (webdataset.gopen is also a function)

SHARDS_INDEX = "shards.json"  # written by make_shards: {"format", "kind", "shards": [{"url", "num_samples"}]}
LATENT_INDEX = "index.json"  # written by musicdiff-encode (format=webdataset shards listed by name)
FORMAT = "musicdiff-webdataset"
AUDIO_EXTS = tuple(e.lstrip(".") for e in AUDIO_EXTENSIONS)


# ---------------------------------------------------------------------------------------------- URLs
def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any):  # noqa: ARG001
    import fsspec

    return fsspec.open(url, mode).open()


def register_fsspec(urls: Sequence[str]) -> None:
    """Route the schemes of ``urls`` that WebDataset has no handler for through fsspec."""
    for url in urls:
        scheme = urlparse(url).scheme
        if len(scheme) > 1 and scheme not in wds_gopen.gopen_schemes and scheme != "file":
            try:
                import fsspec

                fsspec.get_filesystem_class(scheme)
            except (ImportError, ValueError) as e:
                raise ValueError(f"{url}: no WebDataset or fsspec handler for {scheme}:// ({e})") from e
            wds_gopen.gopen_schemes[scheme] = _gopen_fsspec


def _is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _local_path(url: str) -> Path:
    return Path(urlparse(url).path if url.startswith("file:") else url)


def count_samples(url: str) -> int:
    """Number of samples (distinct keys) in one shard; local shards read only the tar headers."""
    if _is_local(url):
        with tarfile.open(_local_path(url)) as tar:
            keys = {base_plus_ext(m.name)[0] for m in tar.getmembers() if m.isreg()}
        return len(keys - {None})
    register_fsspec([url])
    return sum(1 for _ in wds.tarfile_samples(iter([{"url": url}])))


def _index_entries(path: Path) -> tuple[list[str], list[int]] | None:
    """(urls, counts) from a make_shards ``shards.json`` or a musicdiff-encode ``index.json``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    base = path.parent
    if data.get("format") == FORMAT:
        shards = data["shards"]
        return ([s["url"] if "://" in s["url"] or s["url"].startswith(("/", "pipe:")) else str(base / s["url"])
                 for s in shards], [int(s["num_samples"]) for s in shards])
    if data.get("shard_format") == "webdataset":
        return [str(base / f"{s['name']}.tar") for s in data["shards"]], [int(s["num_items"]) for s in data["shards"]]
    if isinstance(data, dict) and all(isinstance(v, int) for v in data.values()):  # {url: count}
        return [u if "://" in u or u.startswith(("/", "pipe:")) else str(base / u) for u in data], list(data.values())
    return None


def _directory_entries(root: Path) -> tuple[list[str], list[int | None]]:
    """Shards of a directory: from its ``shards.json`` / ``index.json``, else its ``*.tar`` (counts unknown)."""
    for name in (SHARDS_INDEX, LATENT_INDEX):
        if (root / name).is_file() and (found := _index_entries(root / name)) is not None:
            return found[0], list(found[1])
    tars = [str(p) for p in sorted(root.glob("*.tar"))]
    if not tars:
        raise FileNotFoundError(f"no *.tar shards and no {SHARDS_INDEX} / {LATENT_INDEX} in {root}")
    return tars, [None] * len(tars)


def resolve_shards(urls: str | Sequence[str], index: str | None = None) -> tuple[list[str], list[int]]:
    """Expand ``urls`` and find each shard's sample count.

    Args:
        urls: shard URLs: a brace pattern (``/data/shard-{000000..000099}.tar``, several joined by
            ``::``) or a list; a local directory among them stands for its shards (listed with
            counts by its ``shards.json`` / ``index.json``, else its ``*.tar``), so
            ``/data/latents/part_{000..063}`` names the outputs of a 64-task encode array.
        index: a JSON file with counts (``shards.json`` layout or ``{url: count}``) for shards
            not listed by a directory index; the rest are counted once at start.

    Returns:
        ``(urls, counts)``, both in shard-list order.

    Raises:
        FileNotFoundError: a directory without shards, or a local shard that does not exist.
        ValueError: empty list, or an index that does not cover a listed shard.
    """
    expanded = wds.shardlists.expand_urls(urls) if isinstance(urls, str) else [str(u) for u in urls]
    out_urls: list[str] = []
    counts: list[int | None] = []
    for url in expanded:
        if _is_local(url) and _local_path(url).is_dir():
            found = _directory_entries(_local_path(url))
            out_urls += found[0]
            counts += found[1]
        else:
            out_urls.append(url)
            counts.append(None)
    if not out_urls:
        raise ValueError(f"no shards in {urls!r}")
    missing = [u for u in out_urls if _is_local(u) and not _local_path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    register_fsspec(out_urls)
    if index is not None:
        found = _index_entries(Path(index))
        if found is None:
            raise ValueError(f"{index}: not a shard index (shards.json, index.json or {{url: count}})")
        table = dict(zip(found[0], found[1]))
        names = {Path(u).name: c for u, c in table.items()}
        counts = [c if c is not None else table.get(u, names.get(Path(u).name)) for u, c in zip(out_urls, counts)]
        if None in counts:
            raise ValueError(f"{index} has no sample count for {out_urls[counts.index(None)]}")
    unknown = [i for i, c in enumerate(counts) if c is None]
    if unknown:
        log.info("counting the samples of %d shards (give dataset.index to skip this)", len(unknown))
        for i in unknown:
            counts[i] = count_samples(out_urls[i])
    return out_urls, [int(c) for c in counts]  # type: ignore[arg-type]


def read_shard(url: str, skip: int = 0) -> Iterator[dict[str, Any]]:
    """The raw samples (``{"__key__", ext: bytes}``) of shard ``url`` from sample ``skip`` on.

    Raises:
        tarfile.ReadError / OSError: a truncated or corrupt tar (after the samples before the damage).
    """
    for i, sample in enumerate(wds.tarfile_samples(iter([{"url": url}]))):
        if i >= skip:
            yield sample


# ---------------------------------------------------------------------------------------------- decoding
class SampleError(ValueError):
    """A sample inside a shard cannot be used; ``reason`` is its skip-counter key."""

    def __init__(self, where: str, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))


def sample_metadata(sample: dict[str, Any], where: str) -> dict[str, Any]:
    """Metadata of a raw sample: its ``json`` object (``metadata`` field for latent shards), plus ``txt`` as caption."""
    meta: dict[str, Any] = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as e:
            raise SampleError(where, "bad_metadata", f"invalid JSON: {e}") from e
        if not isinstance(meta, dict):
            raise SampleError(where, "bad_metadata", f"JSON must be an object, got {type(meta).__name__}")
    if "txt" in sample:
        text = sample["txt"].decode("utf-8", "replace").strip()
        if text and not any(isinstance(meta.get(k), str) and meta[k].strip() for k in ("caption", "prompt", "text")):
            meta = {**meta, "caption": text}
    return meta


def decode_audio(sample: dict[str, Any], sample_rate: int, channels: int, multichannel: str, where: str,
                 window: int | None = None, pick_offset: Callable[[int], int] | None = None,
                 ) -> tuple[torch.Tensor, int, int, float]:
    """Decode the audio of a raw sample (or only a window of it) at ``sample_rate``, ``channels``.

    Decoded with libsndfile from the stored bytes, resampled with soxr (HQ) and channel-converted
    like :func:`~musicdiff.data.audio_io.load_audio`. The gain is
    :func:`~musicdiff.data.audio_io.full_scale_gain` of the file's peak at its own rate and
    channels, as the folder dataset measures it. Integer PCM at the model rate (gain 1, no
    resampling) is read from ``pick_offset(total_frames)`` for ``window`` frames only; anything
    else is decoded whole and sliced.

    Returns:
        ``(audio [channels, T] from the offset, offset, total frames at sample_rate, gain)``.

    Raises:
        SampleError: no audio member, unreadable, empty or non-finite audio.
    """
    ext = next((k for k in sample if k.split(".")[-1].lower() in AUDIO_EXTS), None)
    if ext is None:
        raise SampleError(where, "missing_audio", f"no audio file among {sorted(k for k in sample if k[0] != '_')}")
    try:
        with sf.SoundFile(io.BytesIO(sample[ext])) as f:
            info = AudioInfo(f.frames, f.samplerate, f.channels, f.format, f.subtype)
            if info.frames <= 0:
                raise SampleError(where, "empty", "no frames")
            if window is not None and info.sample_rate == sample_rate and not info.may_exceed_full_scale:
                offset = pick_offset(info.frames) if pick_offset else 0
                f.seek(offset)
                data, gain, total = f.read(window, dtype="float32", always_2d=True), 1.0, info.frames
            else:
                data = f.read(dtype="float32", always_2d=True)
                offset, gain, total = None, 1.0, 0
    except SampleError:
        raise
    except Exception as e:  # libsndfile raises several types for garbage bytes
        raise SampleError(where, "unreadable", str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    if data.shape[0] == 0:
        raise SampleError(where, "empty", "no frames")
    if not np.isfinite(data).all():
        raise SampleError(where, "non_finite", "NaN or Inf samples")
    if offset is None:  # whole file: gain from its peak, resample, then the window
        gain = full_scale_gain(float(np.abs(data).max()))
        if info.sample_rate != sample_rate:
            data = soxr.resample(data, info.sample_rate, sample_rate, quality="HQ")
        total = data.shape[0]
        offset = pick_offset(total) if pick_offset else 0
        data = data[offset: None if window is None else offset + window]
    data = convert_channels(np.ascontiguousarray(data, dtype=np.float32), channels, multichannel)
    return torch.from_numpy(np.ascontiguousarray(data.T)), offset, total, gain


def decode_latents(sample: dict[str, Any], where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``latents [D, L]`` (float32) and the stored ``mask [L]`` (or None) of a raw latent sample."""
    if "latents.npy" not in sample:
        raise SampleError(where, "missing_latents", f"no latents.npy among {sorted(k for k in sample if k[0] != '_')}")
    try:
        latents = np.load(io.BytesIO(sample["latents.npy"]), allow_pickle=False)
        mask = np.load(io.BytesIO(sample["mask.npy"]), allow_pickle=False) if "mask.npy" in sample else None
    except Exception as e:  # truncated / not an npy file
        raise SampleError(where, "unreadable_latents", str(e)) from e
    if latents.ndim != 2 or (mask is not None and mask.shape != (latents.shape[1],)):
        raise SampleError(where, "unreadable_latents", f"latents {latents.shape}, mask "
                                                       f"{None if mask is None else mask.shape}")
    latents_t = torch.from_numpy(latents.astype(np.float32))
    if not torch.isfinite(latents_t).all():
        raise SampleError(where, "non_finite_latents", "NaN or Inf latents")
    return latents_t, None if mask is None else torch.from_numpy(mask.astype(bool))


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as ``.npy`` bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_tar(path: Path, samples: Sequence[dict[str, Any]]) -> None:
    """Write ``samples`` (``{"__key__": k, ext: bytes|str|dict}``) as a tar shard, atomically (temp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh, wds.TarWriter(fh, mtime=0.0) as writer:
        for sample in samples:
            writer.write(sample)
    os.replace(tmp, path)


__all__ = ["SampleError", "count_samples", "decode_audio", "decode_latents", "encode_npy",
           "read_shard", "register_fsspec", "resolve_shards", "sample_metadata", "write_tar"]
