"""A/B blind listening test: two clips in random order, the listener's preference appended to a JSONL file.

A pairwise forced-choice (A/B) preference test, the small listening study generative-audio papers run
next to their metrics: the listener hears clip 1 and clip 2 without knowing which system made which,
and picks one (or none). Each vote is one JSON line (time,
listener, both clips with their run, the order shown, the choice and the preferred run), appended
under an exclusive lock so concurrent listeners never interleave partial lines.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

CHOICES = ("1", "2", "none")


@dataclass(frozen=True)
class Clip:
    """One clip of a compared run."""

    run_id: str
    run_name: str
    path: str  # local file served to the page

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class Trial:
    """A blind pair: ``first`` is played as clip 1, ``second`` as clip 2."""

    first: Clip
    second: Clip


def make_trial(clips_a: list[Clip], clips_b: list[Clip], rng: random.Random | None = None) -> Trial:
    """Pick one clip of each run (the same file name in both when they share one, e.g. the same prompt
    index of two sweeps) and shuffle their order.

    Raises:
        ValueError: a run without audio, or two identical runs.
    """
    rng = rng or random.Random()
    if not clips_a or not clips_b:
        raise ValueError("both runs need audio clips for a blind comparison")
    if clips_a[0].run_id == clips_b[0].run_id:
        raise ValueError("pick two different runs for a blind comparison")
    shared = sorted({c.name for c in clips_a} & {c.name for c in clips_b})
    if shared:
        name = rng.choice(shared)
        a = next(c for c in clips_a if c.name == name)
        b = next(c for c in clips_b if c.name == name)
    else:
        a, b = rng.choice(clips_a), rng.choice(clips_b)
    return Trial(a, b) if rng.random() < 0.5 else Trial(b, a)


class ListeningLog:
    """The JSONL file of votes.

    Args:
        path: the file (created with its folder on the first vote; existing votes are kept).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def record(self, trial: Trial, choice: str, listener: str = "") -> dict:
        """Append one vote (``choice``: ``"1"``, ``"2"`` or ``"none"``) and return its record."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        preferred = {"1": trial.first, "2": trial.second}.get(choice)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "listener": listener.strip(),
                  "clip_1": asdict(trial.first), "clip_2": asdict(trial.second), "choice": choice,
                  "preferred_run": preferred.run_id if preferred else None}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                os.ftruncate(fd, size)  # never leave half a line
                raise OSError(f"cannot record the vote in {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return record

    def votes(self) -> list[dict]:
        """Every vote recorded so far (unparsable lines skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def tally(self, run_a: str, run_b: str) -> Counter:
        """Votes between runs ``run_a`` and ``run_b``: counts keyed by run id, plus ``"none"``."""
        counts: Counter = Counter({run_a: 0, run_b: 0, "none": 0})
        for v in self.votes():
            runs = {v.get("clip_1", {}).get("run_id"), v.get("clip_2", {}).get("run_id")}
            if runs == {run_a, run_b}:
                counts[v.get("preferred_run") or "none"] += 1
        return counts
