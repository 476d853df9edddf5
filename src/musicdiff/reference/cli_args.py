"""``key=value`` command-line arguments for the small reference-import tools (Hydra-like syntax).

The import/export tools take a handful of paths, so they parse ``key=value`` tokens directly
instead of composing a Hydra config (no run directory, no logger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parse_key_values(argv: Sequence[str], usage: str, defaults: Mapping[str, str | None]) -> dict[str, str | None]:
    """Parse ``key=value`` tokens.

    Args:
        argv: the tokens (``sys.argv[1:]``).
        usage: shown with every error.
        defaults: allowed keys; a default of ``None`` with no value given means "not set".

    Returns:
        ``defaults`` updated with the given values.

    Raises:
        SystemExit: on ``-h``/``--help`` (status 0, usage printed), a token without ``=``, or an
            unknown key.
    """
    out = dict(defaults)
    for token in argv:
        if token in ("-h", "--help"):
            print(usage)
            raise SystemExit(0)
        key, sep, value = token.partition("=")
        key = key.lstrip("+")
        if not sep:
            raise SystemExit(f"expected key=value, got '{token}'\n{usage}")
        if key not in out:
            raise SystemExit(f"unknown argument '{key}' (known: {', '.join(sorted(out))})\n{usage}")
        out[key] = value
    return out


def parse_bool(value: str | None) -> bool:
    """``true/false/1/0/yes/no`` (case-insensitive) → bool; None → False."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SystemExit(f"expected a boolean, got '{value}'")
