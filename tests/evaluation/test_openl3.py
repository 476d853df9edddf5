"""OpenL3 (FD_openl3): the real mel256 network on random weights, the kapre front end, openl3's framing,
stable-audio-metrics' stereo handling and peak normalisation, and loading from local files only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicdiff.evaluation.openl3 import (
    N_FRAMES, SAMPLE_RATE, OpenL3AudioNet, OpenL3Embedder, frame_windows, load_openl3)

TORCHOPENL3_KEYS = {f"conv2d_{i}" for i in range(1, 8)} | {"audio_embedding_layer"} | {
    f"batch_normalization_{i}" for i in range(1, 9)}


@pytest.fixture(scope="module")
def net() -> OpenL3AudioNet:
    """The real architecture with seeded random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = OpenL3AudioNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def test_architecture_is_openl3_mel256_512(net):
    assert sum(p.numel() for p in net.parameters()) == 4_687_042  # openl3's mel256 audio network
    assert {k.rsplit(".", 1)[0] for k in net.state_dict() if not k.startswith("frontend")} == TORCHOPENL3_KEYS
    maps = {}
    hook = net.audio_embedding_layer.register_forward_hook(lambda m, i, o: maps.__setitem__("last", o.shape))
    with torch.no_grad():
        out = net(0.1 * torch.randn(2, SAMPLE_RATE, generator=torch.Generator().manual_seed(1)))
    hook.remove()
    assert out.shape == (2, 512) and maps["last"] == (2, 512, 32, 24) and torch.isfinite(out).all()


def test_kapre_front_end(net):
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = torch.sin(2 * math.pi * 3000.0 * t)[None]
    db = net.frontend(torch.cat([tone, 0.01 * tone]))
    assert db.shape == (2, 1, 256, N_FRAMES) and N_FRAMES == 199
    assert db.amax(dim=(1, 2, 3)).abs().max() < 1e-5 and db.min() >= -80.0
    loud = db[0] > -50.0  # dB re. the window maximum: gain-free above the 1e-10 floor
    torch.testing.assert_close(db[0][loud], db[1][loud], atol=0.02, rtol=0)  # float32 round-off
    fb = net.frontend.mel_fb
    centres = (fb * torch.linspace(0, SAMPLE_RATE / 2, fb.shape[1])).sum(1) / fb.sum(1)
    peak_band = int(db[0, 0, :, 100].argmax())
    assert abs(centres[peak_band] - 3000.0) < 60.0  # the band around 3 kHz is the loudest


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.6, 10.0])
def test_framing_follows_openl3(seconds):
    n = int(seconds * SAMPLE_RATE)
    frames = frame_windows(torch.zeros(n), 0.5)
    padded = n + SAMPLE_RATE // 2  # openl3 _get_num_windows with center=True
    expected = 1 if padded <= SAMPLE_RATE else 1 + math.ceil((padded - SAMPLE_RATE) / (SAMPLE_RATE // 2))
    assert frames.shape == (expected, SAMPLE_RATE)
    impulse = torch.zeros(n)
    impulse[n // 2] = 1.0
    w = frame_windows(impulse, 0.5)
    for k in range(len(w)):  # window k is centred at k * hop
        offset = n // 2 + SAMPLE_RATE // 2 - k * (SAMPLE_RATE // 2)
        assert (w[k, offset] == 1.0) if 0 <= offset < SAMPLE_RATE else (w[k].sum() == 0)


def test_stereo_mono_and_pooling_follow_stable_audio_metrics(net):
    g = torch.Generator().manual_seed(2)
    stereo = 0.3 * torch.randn(2, SAMPLE_RATE // 2, generator=g)
    mono = 0.3 * torch.randn(1, SAMPLE_RATE // 2, generator=g)
    emb = OpenL3Embedder(model=net, bandwidth_rate=SAMPLE_RATE, peak_db=None)
    f_st, f_mono = emb.embed_frames([stereo, mono], SAMPLE_RATE)
    with torch.no_grad():
        left_right_mix = net(torch.cat([frame_windows(stereo[0], 0.5), frame_windows(stereo[1], 0.5),
                                        frame_windows(stereo.mean(0), 0.5)])).numpy()
    assert f_st.shape == f_mono.shape == (1, 1024)  # a 0.5 s file: one centred window per channel
    np.testing.assert_allclose(f_st[:, :512], left_right_mix[:1], atol=1e-5)
    np.testing.assert_allclose(f_st[:, 512:], left_right_mix[1:2], atol=1e-5)
    np.testing.assert_array_equal(f_mono[:, :512], f_mono[:, 512:])  # mono "faked" to stereo
    mix = OpenL3Embedder(model=net, channels=1, pooling="mean", bandwidth_rate=SAMPLE_RATE)
    mixed = mix.embed_audio([stereo, 0.05 * stereo], SAMPLE_RATE)
    assert mixed.shape == (2, 512)
    np.testing.assert_allclose(mixed[0], left_right_mix[2], atol=1e-4)  # peak-normalised: same windows
    np.testing.assert_allclose(mixed[1], mixed[0], atol=1e-4)  # gain removed by the -1 dBFS peak norm
    long = torch.zeros(1, int(0.6 * SAMPLE_RATE))
    framed = OpenL3Embedder(model=net, bandwidth_rate=SAMPLE_RATE, channels=1).embed_audio([long], SAMPLE_RATE)
    assert framed.shape == (2, 512)  # pooling="frames": one row per window (0.6 s -> 2 windows)


def test_weights_load_from_local_files_only(net, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    state = {k: v for k, v in net.state_dict().items() if not k.startswith("frontend")}
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "openl3.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "openl3.safetensors"))
    x = 0.2 * torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = net(x)
        for name in ("openl3.pt", "openl3.safetensors"):
            torch.testing.assert_close(load_openl3(str(tmp_path / name))(x), want)
    monkeypatch.delenv("MUSICDIFF_OPENL3_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_OPENL3_PATH"):
        OpenL3Embedder(path=None).embed_audio([torch.zeros(1, 100)])  # weights are read on first use
    with pytest.raises(FileNotFoundError, match="not found: .*nowhere.pt"):
        _ = OpenL3Embedder(path=str(tmp_path / "nowhere.pt")).model
    torch.save({"conv2d_1.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="missing .*wrong shapes"):
        load_openl3(str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="pooling"):
        OpenL3Embedder(model=net, pooling="max")
