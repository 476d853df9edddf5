"""HTML report: self-contained and linked modes, escaping, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from musicdiff.evaluation import RandomConvEmbedder
from musicdiff.memorization import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, AudioItem, run_memorization_analysis

SR = 16000


def _items():
    t = torch.arange(SR // 2) / SR
    clips = [torch.stack([torch.sin(2 * torch.pi * f * t)] * 2) * 0.4 for f in (220, 330, 440, 550, 660)]
    train = [AudioItem(f"train_{i}", f"tone {i} <b>&amp;</b>", audio=c, sample_rate=SR) for i, c in enumerate(clips)]
    gens = [AudioItem("copy", "<script>alert(1)</script>", audio=clips[2].clone(), sample_rate=SR,
                      split=IN_DISTRIBUTION),
            AudioItem("other", "noise", audio=0.1 * torch.randn(2, SR // 2, generator=torch.Generator().manual_seed(0)),
                      sample_rate=SR, split=OUT_OF_DISTRIBUTION)]
    return train, gens


def _report(tmp_path, embed_media):
    train, gens = _items()
    res = run_memorization_analysis(RandomConvEmbedder(n_mels=32, dim=32), train, gens, tmp_path, k=2,
                                    embed_media=embed_media, report_sample_rate=SR, repeat_threshold=0.99)
    return res.report_path.read_text(encoding="utf-8"), res


def test_self_contained_report(tmp_path):
    page, res = _report(tmp_path / "r", embed_media=True)
    assert page.count("<audio") == 2 * (1 + 2) and page.count("<img") == 6
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # prompts are escaped
    assert not (tmp_path / "r" / "media").exists()
    uris = re.findall(r'src="data:audio/wav;base64,([^"]+)"', page)
    assert len(uris) == 6
    audio, sr = sf.read(io.BytesIO(base64.b64decode(uris[0])))
    assert sr == SR and audio.shape == (SR // 2, 2)  # decodable WAV, the full clip
    png = re.findall(r'src="data:image/png;base64,([^"]+)"', page)[0]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    first_row = page[page.index('id="rank-1"'):page.index('id="rank-2"')]
    assert "<b>copy</b>" in first_row and "1.0000" in first_row  # the planted copy is ranked first


def test_linked_media_report(tmp_path):
    page, _ = _report(tmp_path / "r", embed_media=False)
    srcs = re.findall(r'<audio[^>]* src="([^"]+)"', page)
    assert len(srcs) == 6 and "data:" not in page
    for s in srcs:
        assert not s.startswith("/") and (tmp_path / "r" / s).is_file()
        assert sf.info(str(tmp_path / "r" / s)).samplerate == SR


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={tmp_path / 'chrome-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium chromium-driver)")
@pytest.mark.parametrize("embed_media", [True, False], ids=["embedded", "linked"])
def test_report_renders_with_playable_audio_in_chromium(tmp_path, embed_media):
    _, res = _report(tmp_path / "r", embed_media=embed_media)
    url = res.report_path.resolve().as_uri()
    dom = _chromium(tmp_path, "--virtual-time-budget=15000", "--allow-file-access-from-files", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    total = int(re.search(r'data-audio-total="(\d+)"', body).group(1))
    ready = int(re.search(r'data-audio-ready="(\d+)"', body).group(1))
    errors = int(re.search(r'data-audio-errors="(\d+)"', body).group(1))
    assert total == 6 and ready == total and errors == 0
    durations = [float(d) for d in re.findall(r'data-duration="([0-9.]+)"', dom.stdout)]
    assert len(durations) == 6 and np.allclose(durations, 0.5, atol=0.01)  # the browser decoded the WAVs
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--virtual-time-budget=5000", "--window-size=1200,900", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 10_000  # something was painted
