"""SA2-style text prompts built from metadata.

Stable Audio 2 (Evans et al. 2024, §3.3 "Training data") trains on prompts made from each
file's metadata: a random subset of the fields, in shuffled order, in a random case, and half
of the time with the field names ("Instruments: piano, strings | Moods: calm"). Where a free-text
caption exists it is used with some probability instead. :class:`PromptBuilder` does exactly that
with an RNG passed in by the dataset, so prompts are reproducible for a given seed.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

CAPTION_KEYS = ("caption", "prompt", "text", "description")
DEFAULT_FIELDS = ("genre", "genres", "subgenre", "style", "mood", "moods", "instrument", "instruments",
                  "tags", "key", "pitch", "bpm", "tempo", "pan")
CASES = ("lower", "upper", "title", "unchanged")


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value if v is not None and str(v).strip())
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def apply_case(text: str, case: str) -> str:
    """Return ``text`` in ``case`` (``lower``, ``upper``, ``title`` or ``unchanged``)."""
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "title":
        return text.title()
    if case == "unchanged":
        return text
    raise ValueError(f"unknown case {case!r}; expected one of {CASES}")


class PromptBuilder:
    """Build a prompt string from a metadata dict, SA2 style.

    Args:
        fields: metadata keys prompts may draw from, in no particular order; ``None`` uses every
            key of the item except captions and the excluded ones.
        caption_keys: keys holding free-text captions (the first non-empty one is used).
        caption_prob: probability of using the caption when one exists (1.0 = always).
        field_names_prob: probability of writing field names ("Mood: calm") rather than values only.
        min_fields: fewest fields in a metadata prompt (if that many exist).
        max_fields: most fields in a metadata prompt (``None`` = all available).
        separators: joiners of the fields; one is drawn per prompt.
        cases: cases to draw from, uniformly (``lower``, ``upper``, ``title``, ``unchanged``).
        labels: display names of fields (default: the key title-cased, ``bpm`` → ``BPM``).
        exclude: keys never used when ``fields`` is ``None`` (paths, timings, raw numbers).
    """

    def __init__(
        self,
        fields: Sequence[str] | None = DEFAULT_FIELDS,
        caption_keys: Sequence[str] = CAPTION_KEYS,
        caption_prob: float = 0.5,
        field_names_prob: float = 0.5,
        min_fields: int = 1,
        max_fields: int | None = None,
        separators: Sequence[str] = (" | ", ", "),
        cases: Sequence[str] = CASES,
        labels: Mapping[str, str] | None = None,
        exclude: Sequence[str] = ("path", "seconds_start", "seconds_total", "frequency", "seconds", "duration"),
    ) -> None:
        for name, p in (("caption_prob", caption_prob), ("field_names_prob", field_names_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if min_fields < 1 or (max_fields is not None and max_fields < min_fields):
            raise ValueError(f"need 1 <= min_fields <= max_fields, got {min_fields}, {max_fields}")
        if not separators:
            raise ValueError("separators must not be empty")
        for c in cases:
            apply_case("", c)  # validates
        if not cases:
            raise ValueError("cases must not be empty")
        self.fields = list(fields) if fields is not None else None
        self.caption_keys = list(caption_keys)
        self.caption_prob = float(caption_prob)
        self.field_names_prob = float(field_names_prob)
        self.min_fields, self.max_fields = int(min_fields), max_fields
        self.separators, self.cases = list(separators), list(cases)
        self.labels = {"bpm": "BPM", **(dict(labels) if labels else {})}
        self.exclude = set(exclude)

    def caption(self, metadata: Mapping[str, Any]) -> str | None:
        """The item's free-text caption, if any."""
        for key in self.caption_keys:
            value = metadata.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def available_fields(self, metadata: Mapping[str, Any]) -> list[str]:
        """Keys of ``metadata`` a prompt can use (non-empty values), in a fixed order."""
        keys = self.fields if self.fields is not None else sorted(
            k for k in metadata if k not in self.exclude and k not in self.caption_keys)
        return [k for k in keys if k in metadata and _format_value(metadata[k])]

    def label(self, key: str) -> str:
        """Display name of a field."""
        return self.labels.get(key, key.replace("_", " ").title())

    def __call__(self, metadata: Mapping[str, Any], rng: random.Random | None = None) -> str:
        """Draw a prompt for ``metadata`` (empty string if it has neither caption nor fields)."""
        rng = rng if rng is not None else random.Random()
        caption = self.caption(metadata)
        keys = self.available_fields(metadata)
        if caption is not None and (not keys or rng.random() < self.caption_prob):
            return caption
        if not keys:
            return ""
        hi = len(keys) if self.max_fields is None else min(self.max_fields, len(keys))
        lo = min(self.min_fields, hi)
        chosen = rng.sample(keys, rng.randint(lo, hi))  # random subset in random order
        with_names = rng.random() < self.field_names_prob
        parts = []
        for key in chosen:
            value = _format_value(metadata[key])
            if with_names:
                parts.append(f"{self.label(key)}: {value}")
            elif key in ("bpm", "tempo") and _is_number(metadata[key]):
                parts.append(f"{value} BPM")
            else:
                parts.append(value)
        text = rng.choice(self.separators).join(parts)
        return apply_case(text, rng.choice(self.cases))
