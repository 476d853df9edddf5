"""Writing generated clips: audio files with their request in the metadata, plus a JSONL manifest.

Both ``musicdiff-generate`` and ``musicdiff-memorization`` write through :class:`GenerationWriter`,
so every generated folder has the same layout: ``<stem>.wav|flac`` files (16-bit PCM; title = the
prompt, comment = JSON of prompt, seed, duration, negative prompt and config hash) and
``generations.jsonl`` with one record per file (``path``, ``prompt``, ``seed``, ``duration``,
``config_hash`` and any extra fields such as the memorization ``split``). Each audio file is
written to a hidden temporary name and renamed, so a killed run never leaves a truncated clip.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import soundfile as sf
import torch

from musicdiff.sampling.requests import GenerationRequest

__all__ = ["GENERATIONS_MANIFEST", "GenerationWriter", "write_clip"]

GENERATIONS_MANIFEST = "generations.jsonl"
FORMATS = ("wav", "flac")


def write_clip(path: Path, audio: torch.Tensor, sample_rate: int, req: GenerationRequest, digest: str) -> None:
    """Atomically writes ``[C, T]`` audio to ``path`` (format from its suffix) with the request as metadata."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    tmp = path.with_name(f".{path.name}.tmp")
    data = audio.detach().float().cpu().clamp(-1, 1).T.numpy()
    with sf.SoundFile(tmp, "w", sample_rate, data.shape[1], format=fmt.upper(), subtype="PCM_16") as fh:
        fh.title = req.prompt[:250]
        fh.software = "musicdiff"
        fh.comment = json.dumps({"prompt": req.prompt, "seed": req.seed, "duration": req.duration,
                                 "negative_prompt": req.negative_prompt, "config_hash": digest})[:1000]
        fh.write(data)
    tmp.replace(path)


class GenerationWriter:
    """Writes clips into ``out_dir`` and records each in its ``generations.jsonl`` (a context manager).

    Args:
        out_dir: folder of the clips (created).
        sample_rate: the clips' sample rate.
        fmt: ``wav`` or ``flac``.
        digest: config hash recorded with every clip.
        append: add to an existing manifest (True) or start a new one (False).
    """

    def __init__(self, out_dir: str | Path, sample_rate: int, fmt: str = "wav", digest: str = "",
                 append: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.out_dir, self.sample_rate, self.fmt, self.digest = Path(out_dir), int(sample_rate), fmt, digest
        self.manifest = self.out_dir / GENERATIONS_MANIFEST
        self._mode = "a" if append else "w"
        self._fh: IO[str] | None = None

    def __enter__(self) -> GenerationWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.manifest, self._mode, encoding="utf-8")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write(self, stem: str, audio: torch.Tensor, req: GenerationRequest, **fields: Any) -> Path:
        """Writes one clip as ``<stem>.<fmt>`` and its manifest record; returns the file's path."""
        if self._fh is None:
            raise RuntimeError("GenerationWriter.write outside its `with` block")
        path = self.out_dir / f"{stem}.{self.fmt}"
        write_clip(path, audio, self.sample_rate, req, self.digest)
        record = {"path": path.name, "prompt": req.prompt, "seed": req.seed,
                  "duration": audio.shape[-1] / self.sample_rate, **fields, "config_hash": self.digest}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        return path
