"""Fixtures for the data tests: small audio files written on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.data.helpers import tone


@pytest.fixture()
def write_tone():
    """``write_tone(path, freq=440, sr=16000, seconds=1, channels=1, subtype=None)`` → path."""

    def _write(path: Path, freq: float = 440.0, sr: int = 16000, seconds: float = 1.0, channels: int = 1,
               subtype: str | None = None, amp: float = 0.5) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), tone(freq, sr, seconds, channels, amp), sr, subtype=subtype)
        return path

    return _write
