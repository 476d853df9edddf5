"""Generation requests from the command line or a prompts file (text, CSV, JSON, JSONL)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys of a prompts-file record that GenerationRequest reads itself; every other key is a conditioning field.
REQUEST_KEYS = ("prompt", "caption", "text", "duration", "seconds_total", "seed", "negative_prompt", "path",
                "config_hash")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed overflows at 2**64; torchsde's BrownianTree needs seeds >= 0


@dataclass
class GenerationRequest:
    """One clip to generate.

    ``fields`` holds further metadata fields for the conditioners, by name (e.g. ``{"bpm": 120}`` for a
    conditioner ``bpm``): the generation-time counterpart of the metadata fields a dataset item carries
    (:func:`musicdiff.data.base.item_fields`). A prompts file fills it from its other columns / keys.
    """

    prompt: str
    duration: float | None = None  # seconds; None: the configured default
    seed: int | None = None  # None: base seed + index
    negative_prompt: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # conditioning fields beyond prompt and timing


def _from_record(rec: dict, where: str) -> GenerationRequest:
    prompt = rec.get("prompt", rec.get("caption", rec.get("text")))
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: missing 'prompt'")
    dur = rec.get("duration", rec.get("seconds_total"))
    seed = rec.get("seed")
    neg = rec.get("negative_prompt") or None
    fields = {k: v for k, v in rec.items() if k not in REQUEST_KEYS and v not in (None, "")}
    try:
        return GenerationRequest(prompt.strip(), float(dur) if dur not in (None, "") else None,
                                 int(seed) if seed not in (None, "") else None, neg, fields)
    except ValueError as exc:
        raise ValueError(f"{where}: bad duration/seed ({exc})") from exc


def read_prompts_file(path: str | Path) -> list[GenerationRequest]:
    """Parse a prompts file.

    Formats, by extension: ``.csv`` (header with ``prompt`` and optional ``duration``, ``seed``,
    ``negative_prompt``), ``.json`` (a list of such objects or of strings), ``.jsonl`` (one object
    per line), anything else: one prompt per non-empty line (``#`` starts a comment). Any other
    column or key (``bpm`` ...) goes to :attr:`GenerationRequest.fields` for the conditioners of
    that name (CSV values stay strings; the conditioner converts them).

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


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int in ``[0, MAX_SEED]`` (= 2**63 - 1); anything else is a ValueError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{what}={seed!r} is not an integer")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what}={seed} is out of range: seeds are integers in [0, 2**63 - 1]")
    return seed


def check_positive_int(value: Any, what: str) -> int:
    """``value`` as an int >= 1; anything else is a ValueError naming it (``num_samples``, ``batch_size``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}={value!r}: must be an integer >= 1")
    return value


def check_duration(duration: Any, what: str = "duration") -> float | None:
    """``duration`` in seconds as a finite float > 0 (None passes: the model's window)."""
    if duration is None:
        return None
    try:
        value = float(duration)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={duration!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what}={duration!r}: must be a positive number of seconds (null: the model window)")
    return value


def validate_requests(requests: list[GenerationRequest], where: str = "prompt") -> None:
    """Refuses blank prompts, non-positive durations and out-of-range seeds, naming the request.

    Called by ``musicdiff-generate`` before any model is built. (An empty prompt is legitimate
    for a model trained with caption dropout, so the request type itself does not forbid it.)
    """
    for i, r in enumerate(requests):
        name = where if len(requests) == 1 else f"{where} #{i + 1}"
        if not isinstance(r.prompt, str) or not r.prompt.strip():
            raise ValueError(f"{name}: {r.prompt!r} is empty or blank")
        check_duration(r.duration, f"{name}: duration")
        if r.seed is not None:
            check_seed(r.seed, f"{name}: seed")


def expand_requests(requests: list[GenerationRequest], num_samples: int, seed: int, duration: float | None = None,
                    negative_prompt: str | None = None) -> list[GenerationRequest]:
    """``num_samples`` concrete requests per request, with every default filled in.

    Request ``i`` without its own seed gets ``seed + i``; its ``k``-th sample adds
    ``k · SAMPLE_SEED_STRIDE``, so samples never share noise and the same inputs always give the same
    seeds. ``duration`` and ``negative_prompt`` fill requests that do not set them.

    Returns:
        The requests in order, each repeated ``num_samples`` times consecutively.

    Raises:
        ValueError: ``num_samples`` < 1, a seed outside ``[0, 2**63 - 1]`` (also once the sample
            offsets are added) or a duration that is not a positive number of seconds.
    """
    check_positive_int(num_samples, "num_samples")
    check_seed(seed)
    check_duration(duration)
    out = []
    for i, r in enumerate(requests):
        base = check_seed(r.seed if r.seed is not None else seed + i, f"seed of prompt #{i + 1}")
        last = base + (num_samples - 1) * SAMPLE_SEED_STRIDE
        if last > MAX_SEED:
            raise ValueError(f"seed {base} of prompt #{i + 1} with num_samples={num_samples} reaches seed {last} "
                             f"(samples are {SAMPLE_SEED_STRIDE} apart), beyond the largest seed 2**63 - 1")
        for k in range(num_samples):
            out.append(GenerationRequest(r.prompt, r.duration if r.duration is not None else duration,
                                         base + k * SAMPLE_SEED_STRIDE, r.negative_prompt or negative_prompt,
                                         dict(r.fields)))
    return out
