"""Writing generated clips: audio files with their request in the metadata, plus a JSONL manifest.

Both ``musicdiff-generate`` and ``musicdiff-memorization`` write through :class:`GenerationWriter`,
so every generated folder has the same layout: ``<stem>.wav|flac`` files (16-bit PCM; title = the
prompt, comment = JSON of prompt, seed, duration, negative prompt and config hash) and
``generations.jsonl`` with one record per file (``path``, ``prompt``, ``seed``, ``duration``,
``config_hash`` and any extra fields such as the memorization ``split``).

Nothing is ever overwritten or half-written, also with several runs writing into one folder at once:

* each clip is written to a hidden temporary file unique to the process, then published under its
  name with ``os.link``, which fails if the name exists (no overwrite, no window where a clip is
  visible half-written); a taken name gets a ``-1``, ``-2`` ... suffix (logged);
* only then is its record appended to the manifest, as one ``write`` under an exclusive ``flock``,
  so records of concurrent writers never interleave and every record points at the clip it describes;
* a failed write (disk full, quota) removes the temporary file and raises one :class:`OSError`
  naming the file; a failed record append is rolled back and its clip removed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import soundfile as sf
import torch

from musicdiff.sampling.requests import GenerationRequest

__all__ = ["GENERATIONS_MANIFEST", "GenerationWriter", "clip_metadata", "write_clip"]

log = logging.getLogger("musicdiff")

GENERATIONS_MANIFEST = "generations.jsonl"
FORMATS = ("wav", "flac")
COMMENT_LIMIT = 1000  # characters of the JSON comment; WAV INFO strings past ~4 kB in total are dropped
TITLE_LIMIT = 250  # characters of the prompt kept in the title tag
_MAX_SUFFIX = 10_000  # name collisions tried before giving up


def clip_metadata(req: GenerationRequest, digest: str, limit: int = COMMENT_LIMIT) -> str:
    """JSON of the request for the file's comment tag, always valid and at most ``limit`` characters.

    Seed, duration and config hash are always kept; a prompt (or negative prompt) too long for the tag
    is shortened and ``"truncated": true`` is added (the full prompt is in the manifest record).
    """
    meta: dict[str, Any] = {"prompt": req.prompt, "seed": req.seed, "duration": req.duration,
                            "negative_prompt": req.negative_prompt, "config_hash": digest}
    text = json.dumps(meta)
    while len(text) > limit:
        key = max(("prompt", "negative_prompt"), key=lambda k: len(meta[k] or ""))
        value = meta[key] or ""
        if not value:
            raise ValueError(f"clip metadata does not fit in {limit} characters even without prompts: {text}")
        meta[key] = value[: max(0, len(value) - max(1, (len(text) - limit) // 2))]
        meta["truncated"] = True
        text = json.dumps(meta)
    return text


def _disk_hint(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return ""
    return f" (disk full or over quota? {free / 2**20:.1f} MiB free on {path.parent})"


def write_clip(path: Path, audio: torch.Tensor, sample_rate: int, req: GenerationRequest, digest: str,
               overwrite: bool = True) -> Path:
    """Atomically writes ``[C, T]`` audio to ``path`` (format from its suffix) with the request as metadata.

    Args:
        path: destination; its suffix (``.wav``/``.flac``) picks the format.
        audio: ``[C, T]`` in [-1, 1] (clamped).
        sample_rate: the clip's rate.
        req: the request, written into the title and comment tags.
        digest: config hash written into the comment.
        overwrite: replace an existing ``path`` (True) or publish under the first free name
            ``<stem>-<n><suffix>`` (False; safe against concurrent writers).

    Returns:
        The path written.

    Raises:
        OSError: naming the file, if it cannot be written (e.g. disk full); no temporary file is left.
    """
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    data = audio.detach().float().cpu().clamp(-1, 1).T.numpy()
    try:
        with sf.SoundFile(tmp, "w", sample_rate, data.shape[1], format=fmt.upper(), subtype="PCM_16") as fh:
            fh.title = req.prompt[:TITLE_LIMIT]
            fh.software = "musicdiff"
            fh.comment = clip_metadata(req, digest)
            fh.write(data)
        if overwrite:
            os.replace(tmp, path)
            return path
        return _publish(tmp, path)
    except (OSError, sf.SoundFileError) as exc:  # libsndfile reports ENOSPC/EFBIG as "System error"
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).strip().rstrip(".") or type(exc).__name__
        raise OSError(f"cannot write generated clip {path}: {reason}{_disk_hint(path)}") from exc


def _publish(tmp: Path, path: Path) -> Path:
    """Give the finished ``tmp`` the first free name of ``path``, ``<stem>-1``, ... and remove ``tmp``."""
    for n in range(_MAX_SUFFIX):
        dest = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.link(tmp, dest)  # atomic, fails if dest exists
        except FileExistsError:
            continue
        except OSError as exc:  # a filesystem without hard links: claim the name, then replace it
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue
            os.replace(tmp, dest)
            return dest
        tmp.unlink()
        if n:
            log.info("%s exists: wrote %s instead", path.name, dest.name)
        return dest
    raise FileExistsError(errno.EEXIST, f"no free name for {path} after {_MAX_SUFFIX} tries")


class GenerationWriter:
    """Writes clips into ``out_dir`` and records each in its ``generations.jsonl`` (a context manager).

    Existing clips are never overwritten: a stem already taken (by an earlier run or a concurrent
    writer) gets a numeric suffix, and the manifest record names the file actually written.

    Args:
        out_dir: folder of the clips (created).
        sample_rate: the clips' sample rate.
        fmt: ``wav`` or ``flac``.
        digest: config hash recorded with every clip.
        append: add to an existing manifest (True) or start a new one (False; for a fresh folder).
    """

    def __init__(self, out_dir: str | Path, sample_rate: int, fmt: str = "wav", digest: str = "",
                 append: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.out_dir, self.sample_rate, self.fmt, self.digest = Path(out_dir), int(sample_rate), fmt, digest
        self.manifest = self.out_dir / GENERATIONS_MANIFEST
        self._append = append
        self._fd: int | None = None

    def __enter__(self) -> GenerationWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self._append else os.O_TRUNC)
        self._fd = os.open(self.manifest, flags, 0o644)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append_record(self, record: dict[str, Any]) -> None:
        """Appends one line under an exclusive lock; a partial line (disk full) is truncated away."""
        assert self._fd is not None
        line = (json.dumps(record) + "\n").encode("utf-8")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                os.ftruncate(self._fd, size)
                raise OSError(f"cannot append to {self.manifest}: {exc.strerror}{_disk_hint(self.manifest)}") from exc
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def write(self, stem: str, audio: torch.Tensor, req: GenerationRequest, **fields: Any) -> Path:
        """Writes one clip as ``<stem>.<fmt>`` (or ``<stem>-<n>.<fmt>`` if taken) and its manifest record.

        Returns:
            The path of the file written.

        Raises:
            OSError: naming the clip or the manifest if either cannot be written; the folder is left
                consistent (no temporary file, no record without its clip).
        """
        if self._fd is None:
            raise RuntimeError("GenerationWriter.write outside its `with` block")
        path = write_clip(self.out_dir / f"{stem}.{self.fmt}", audio, self.sample_rate, req, self.digest,
                          overwrite=False)
        record = {**req.fields, "path": path.name, "prompt": req.prompt, "seed": req.seed,
                  "duration": audio.shape[-1] / self.sample_rate, **fields, "config_hash": self.digest}
        try:
            self._append_record(record)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
