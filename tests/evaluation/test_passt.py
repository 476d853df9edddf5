"""PaSST (KL_passt): the real ap476 architecture, parity with hear21passt's model code, the Kaldi mel
front end, stable-audio-metrics' windowing, and weight loading from local files only."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch

from musicdiff.evaluation.passt import (
    NUM_CLASSES, PaSST, PasstClassifier, analysis_windows, kaldi_mel_banks, load_passt, load_weights)


def _tiny(seed: int = 0) -> PaSST:
    torch.manual_seed(seed)
    return PaSST(dim=32, depth=2, heads=4).eval()


def test_real_architecture_matches_the_released_checkpoint_layout():
    net = PaSST()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sum(math.prod(s) for s in shapes.values()) == 86_153_758  # PaSST-S (DeiT-B/16 + 2 heads)
    assert shapes["patch_embed.proj.weight"] == (768, 1, 16, 16)
    assert shapes["freq_new_pos_embed"] == (1, 768, 12, 1) and shapes["time_new_pos_embed"] == (1, 768, 1, 99)
    assert shapes["new_pos_embed"] == (1, 2, 768) and shapes["dist_token"] == (1, 1, 768)
    assert shapes["blocks.11.attn.qkv.weight"] == (2304, 768) and shapes["blocks.11.mlp.fc1.weight"] == (3072, 768)
    assert shapes["head.0.weight"] == (768,) and shapes["head.1.weight"] == (NUM_CLASSES, 768)
    assert shapes["head_dist.weight"] == (NUM_CLASSES, 768)
    assert len(shapes) == 159


def _scalar_kaldi_weight(m: int, k: int, n_mels=128, n_fft=1024, sr=32000, f_max=15000.0) -> float:
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    delta = (mel(f_max) - mel(0.0)) / (n_mels + 1)
    left, center, right = m * delta, (m + 1) * delta, (m + 2) * delta
    x = mel(k * sr / n_fft)
    return max(0.0, min((x - left) / (center - left), (right - x) / (right - center)))


def test_kaldi_mel_banks_closed_form():
    banks = kaldi_mel_banks().double()
    assert banks.shape == (128, 513) and torch.all(banks[:, -1] == 0)
    for m, k in [(0, 1), (5, 7), (40, 60), (100, 250), (127, 470), (127, 480)]:
        assert banks[m, k].item() == pytest.approx(_scalar_kaldi_weight(m, k), abs=1e-6)
    assert torch.all(banks[:, 481:] == 0)  # nothing above f_max = 15 kHz (bin 480)
    assert torch.all(banks.sum(1) > 0)


@pytest.fixture()
def hear21passt_modules(monkeypatch):
    """hear21passt's model code without its heavy imports (timm/torchaudio are stubbed, never used)."""
    pytest.importorskip("hear21passt")
    if "timm" not in sys.modules:
        hub = types.ModuleType("timm.models.hub")
        hub.download_cached_file = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no downloads in tests"))
        timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
        monkeypatch.setitem(sys.modules, "timm", timm)
        monkeypatch.setitem(sys.modules, "timm.models", models)
        monkeypatch.setitem(sys.modules, "timm.models.hub", hub)
    if "torchaudio" not in sys.modules:
        ta = types.ModuleType("torchaudio")
        ta.compliance = types.SimpleNamespace(kaldi=types.SimpleNamespace(
            get_mel_banks=lambda n, nfft, sr, lo, hi, **k: (kaldi_mel_banks(n, nfft, sr, lo, hi)[:, :-1], None)))
        ta.transforms = types.SimpleNamespace()
        monkeypatch.setitem(sys.modules, "torchaudio", ta)
    for name in [m for m in sys.modules if m.startswith("hear21passt.models")]:
        monkeypatch.delitem(sys.modules, name)
    from hear21passt.models import passt as ref_passt
    from hear21passt.models import preprocess as ref_pre

    return ref_passt, ref_pre


def test_parity_with_hear21passt_model_and_front_end(hear21passt_modules, capsys):
    ref_passt, ref_pre = hear21passt_modules
    ours = _tiny(1)
    ref = ref_passt.PaSST(img_size=(128, 998), patch_size=16, stride=10, in_chans=1, num_classes=NUM_CLASSES,
                          embed_dim=32, depth=2, num_heads=4, distilled=True).eval()
    ref.load_state_dict({k: v for k, v in ours.state_dict().items()})
    mel = ref_pre.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=0, timem=0,
                                 htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10,
                                 fmax_aug_range=2000).eval()
    assert mel.fmax == 15000
    audio = 0.3 * torch.randn(2, 32000 * 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), pytest.warns(UserWarning):
        ref_mel = mel(audio)
        ref_logits, _ = ref(ref_mel.unsqueeze(1))
        ours_mel = ours.mel(audio)
        ours_logits = ours(audio)
    assert ours_mel.shape == ref_mel.shape == (2, 128, 1000)
    torch.testing.assert_close(ours_mel, ref_mel, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_logits, ref_logits, atol=1e-4, rtol=1e-4)
    capsys.readouterr()


def test_stable_audio_metrics_windowing():
    sr = 32000
    assert [len(w) for w in analysis_windows(torch.zeros(10 * sr))] == [10 * sr]
    assert len(analysis_windows(torch.zeros(285 * sr))) == 56  # a 4m45s SA2 generation
    w = analysis_windows(torch.arange(12 * sr, dtype=torch.float32))  # 2nd window: 7 s, zero-padded to 10 s
    assert [len(x) for x in w] == [10 * sr, 10 * sr] and w[1][0] == 5 * sr and torch.all(w[1][7 * sr:] == 0)
    short = analysis_windows(torch.ones(sr))  # 1 s <= 15% of 10 s: kept unpadded
    assert [len(x) for x in short] == [sr]


def test_classifier_softmax_of_mean_window_logits_and_gain_invariance():
    model = _tiny(2)
    clf = PasstClassifier(model=model)
    g = torch.Generator().manual_seed(3)
    audio = [0.2 * torch.randn(2, 48000 * 12, generator=g), 0.5 * torch.randn(1, 48000 * 3, generator=g)]
    probs = clf.classify(audio, 48000)
    assert probs.shape == (2, NUM_CLASSES) and np.allclose(probs.sum(1), 1.0)
    logits = clf.logits(audio, 48000)
    assert [len(lg) for lg in logits] == [2, 1]
    np.testing.assert_allclose(probs[0], torch.softmax(logits[0].mean(0).double(), -1).numpy(), atol=1e-12)
    np.testing.assert_allclose(clf.classify([0.01 * a for a in audio], 48000), probs, atol=1e-5)  # peak norm
    raw = PasstClassifier(model=model, peak_db=None)
    assert not np.allclose(raw.classify([0.01 * a for a in audio], 48000), probs, atol=1e-5)
    emb = clf.embed_audio(audio, 48000)  # as an embedder: mean window features
    assert emb.shape == (2, 32)
    with torch.no_grad():
        x = torch.nn.functional.pad(torch.ones(1, 32000 * 3), (0, 32000 * 7)) * 10 ** (-1 / 20)
        np.testing.assert_allclose(clf.embed_audio([torch.ones(1, 32000 * 3)], 32000)[0],
                                   model.features(model.mel(x))[0].numpy(), atol=1e-5)
    mx = PasstClassifier(model=model, collect="max").classify(audio[:1], 48000)
    np.testing.assert_allclose(mx[0], torch.softmax(logits[0].amax(0).double(), -1).numpy(), atol=1e-12)


def test_weights_load_from_local_files_only(tmp_path, monkeypatch):
    model = _tiny(4)
    wrapped = {"net." + k: v for k, v in model.state_dict().items()} | {"device_proxy": torch.zeros(1)}
    torch.save(wrapped, tmp_path / "passt.pt")  # as hear21passt's wrapper saves it
    state = load_weights(tmp_path / "passt.pt")
    assert set(state) == set(model.state_dict())
    monkeypatch.delenv("MUSICDIFF_PASST_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_PASST_PATH"):
        PasstClassifier(path=None).classify([torch.zeros(1, 100)])  # weights are read on first use
    with pytest.raises(FileNotFoundError, match="not found: .*missing.pt"):
        _ = PasstClassifier(path=str(tmp_path / "missing.pt")).model
    with pytest.raises(ValueError, match="wrong shapes .*blocks"):  # a tiny state dict is not the ap476 layout
        load_passt(str(tmp_path / "passt.pt"))
    with pytest.raises(ValueError, match="collect"):
        PasstClassifier(model=model, collect="median")
