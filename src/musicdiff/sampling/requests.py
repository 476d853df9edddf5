"""Generation requests from the command line or a prompts file (text, CSV, JSON, JSONL)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class GenerationRequest:
    """One clip to generate."""

    prompt: str
    duration: float | None = None  # seconds; None: the configured default
    seed: int | None = None  # None: base seed + index
    negative_prompt: str | None = None


def _from_record(rec: dict, where: str) -> GenerationRequest:
    prompt = rec.get("prompt", rec.get("caption", rec.get("text")))
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: missing 'prompt'")
    dur = rec.get("duration", rec.get("seconds_total"))
    seed = rec.get("seed")
    neg = rec.get("negative_prompt") or None
    try:
        return GenerationRequest(prompt.strip(), float(dur) if dur not in (None, "") else None,
                                 int(seed) if seed not in (None, "") else None, neg)
    except ValueError as exc:
        raise ValueError(f"{where}: bad duration/seed ({exc})") from exc


def read_prompts_file(path: str | Path) -> list[GenerationRequest]:
    """Parse a prompts file.

    Formats, by extension: ``.csv`` (header with ``prompt`` and optional ``duration``, ``seed``,
    ``negative_prompt``), ``.json`` (a list of such objects or of strings), ``.jsonl`` (one object
    per line), anything else: one prompt per non-empty line (``#`` starts a comment).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the line/record that is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = [_from_record(r, f"{path}:{i + 2}") for i, r in enumerate(rows)]
    elif suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of prompts or objects")
        out = [GenerationRequest(d) if isinstance(d, str) else _from_record(d, f"{path}[{i}]")
               for i, d in enumerate(data)]
    elif suffix == ".jsonl":
        out = [_from_record(json.loads(line), f"{path}:{i + 1}")
               for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
    else:
        out = [GenerationRequest(line.strip()) for line in path.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise ValueError(f"{path}: no prompts found")
    return out


SAMPLE_SEED_STRIDE = 1_000_003  # seed offset between the num_samples generations of one prompt


def expand_requests(requests: list[GenerationRequest], num_samples: int, seed: int, duration: float | None = None,
                    negative_prompt: str | None = None) -> list[GenerationRequest]:
    """``num_samples`` concrete requests per request, with every default filled in.

    Request ``i`` without its own seed gets ``seed + i``; its ``k``-th sample adds
    ``k · SAMPLE_SEED_STRIDE``, so samples never share noise and the same inputs always give the same
    seeds. ``duration`` and ``negative_prompt`` fill requests that do not set them.

    Returns:
        The requests in order, each repeated ``num_samples`` times consecutively.
    """
    out = []
    for i, r in enumerate(requests):
        base = r.seed if r.seed is not None else seed + i
        for k in range(num_samples):
            out.append(GenerationRequest(r.prompt, r.duration if r.duration is not None else duration,
                                         base + k * SAMPLE_SEED_STRIDE, r.negative_prompt or negative_prompt))
    return out
