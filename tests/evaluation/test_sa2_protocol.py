"""The SA2 Table 2 protocol by config (conf/metrics/sa2_protocol.yaml): FD_openl3, KL_passt and the CLAP
score end to end on local random weights of the real architectures, CLAP's stable-audio-metrics
preprocessing, clear errors without weights, and the metric code against published closed forms."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.config.paths import config_dir
from musicdiff.evaluation import ClapEmbedder, FrechetDistance, KLDivergence, evaluate_folders, frechet_distance
from musicdiff.evaluation.frechet import _fd_symmetric
from musicdiff.evaluation.kl import kl_divergence
from musicdiff.evaluation.openl3 import OpenL3AudioNet
from musicdiff.evaluation.passt import PaSST

SR = 48000


def _suite_cfg():
    return OmegaConf.load(f"{config_dir()}/metrics/sa2_protocol.yaml")


def test_missing_weights_name_the_setting(tmp_path, monkeypatch):
    for var in ("MUSICDIFF_OPENL3_PATH", "MUSICDIFF_PASST_PATH"):
        monkeypatch.delenv(var, raising=False)
    gen = tmp_path / "gen"
    gen.mkdir()
    sf.write(gen / "a.wav", np.zeros(4800, np.float32), SR)
    suite = instantiate(_suite_cfg())  # builds without weights (every config option instantiates) ...
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_OPENL3_PATH"):  # ... and names the setting on use
        evaluate_folders(gen, gen, None, suite)
    monkeypatch.setenv("MUSICDIFF_OPENL3_PATH", str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_OPENL3_PATH.*"):
        evaluate_folders(gen, gen, None, instantiate(_suite_cfg()))
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_PASST_PATH"):
        evaluate_folders(gen, gen, None, instantiate(_suite_cfg()).metrics[1:2], sample_rate=SR)


@pytest.fixture()
def protocol_env(tmp_path, monkeypatch, tiny_clap_dir):
    """Local weights: the real OpenL3 network, a narrow PaSST (real front end and patch grid), a tiny CLAP."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    openl3 = {k: v.contiguous() for k, v in OpenL3AudioNet().state_dict().items() if "num_batches" not in k}
    save_file(openl3, str(tmp_path / "openl3.safetensors"))
    small_passt = functools.partial(PaSST, dim=32, depth=2, heads=4)
    torch.save(small_passt().state_dict(), tmp_path / "passt.pt")
    monkeypatch.setattr("musicdiff.evaluation.passt.PaSST", small_passt)
    monkeypatch.setenv("MUSICDIFF_OPENL3_PATH", str(tmp_path / "openl3.safetensors"))
    monkeypatch.setenv("MUSICDIFF_PASST_PATH", str(tmp_path / "passt.pt"))
    monkeypatch.setenv("MUSICDIFF_CLAP_PATH", tiny_clap_dir)
    return tmp_path


def test_protocol_end_to_end(protocol_env):
    gen, ref = protocol_env / "gen", protocol_env / "ref"
    gen.mkdir(), ref.mkdir()
    rng = np.random.default_rng(0)
    prompts = {"a": "a happy piano melody", "b": "a loud rock guitar riff"}
    for name in prompts:  # generated: stereo 0.5 s; reference: mono (duplicated to L = R when loaded)
        sf.write(gen / f"{name}.wav", (0.2 * rng.standard_normal((SR // 2, 2))).astype(np.float32), SR)
        sf.write(ref / f"{name}.wav", (0.3 * rng.standard_normal(SR // 2)).astype(np.float32), 44100)
    suite = instantiate(_suite_cfg())
    results = evaluate_folders(gen, ref, prompts, suite, strict=True)
    assert {"fd_openl3", "fd_openl3_diagonal", "kl_passt", "clap_score"} <= set(results)
    assert results["fd_openl3_diagonal"] == 1.0  # 2 windows per set in 1024 dimensions
    fd, kl, clap = suite.metrics
    assert fd.embedder.dim == 1024 and kl.direction == "gen_ref"
    from musicdiff.evaluation.folder_eval import load_folder

    g_set, _ = load_folder(gen, SR, 2)
    r_set, _ = load_folder(ref, SR, 2)
    p_gen, p_ref = kl.classifier.classify(g_set.audio, SR), kl.classifier.classify(r_set.audio, SR)
    assert p_gen.shape == (2, 527)
    manual = np.mean([np.sum(p_gen[i] * (np.log(p_gen[i]) - np.log(p_ref[i] + 1e-6))) for i in range(2)])
    # stable-audio-metrics smooths p_ref only (+1e-6): a bias of about -527e-6 against our symmetric smoothing
    assert abs(results["kl_passt"] - manual) < 527e-6 * 1.1
    assert results["kl_passt"] == pytest.approx(float(kl_divergence(p_gen, p_ref, 1e-6).mean()), rel=1e-9)
    a = clap.embedder.embed_audio(g_set.audio, SR)
    t = clap.embedder.embed_text([prompts["a"], prompts["b"]])
    assert results["clap_score"] == pytest.approx(float(np.mean(np.sum(a * t, 1))), abs=1e-5)


def test_clap_reference_preprocessing(tiny_clap_dir):
    sr = 16000  # the tiny CLAP's rate; its windows are 2 s
    g = torch.Generator().manual_seed(5)
    long, short = 0.3 * torch.randn(1, 5 * sr, generator=g), 0.3 * torch.randn(2, sr, generator=g)
    ref = functools.partial(ClapEmbedder, tiny_clap_dir, long_audio="reference", peak_db=-1.0, quantize_int16=True)
    np.random.seed(123)
    first = ref(seed=0).embed_audio([long, short], sr)
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)  # global RNG untouched
    np.testing.assert_array_equal(ref(seed=0).embed_audio([long, short], sr), first)  # seeded crops
    other = ref(seed=7).embed_audio([long, short], sr)
    assert not np.allclose(other[0], first[0])  # a 5 s file: one random 2 s crop (rand_trunc)
    np.testing.assert_allclose(other[1], first[1], atol=1e-6)  # short audio is repeat-padded, no randomness
    np.testing.assert_allclose(ref(seed=0).embed_audio([0.01 * short], sr)[0], first[1], atol=1e-3)  # peak norm
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    x = ref()._mono(short, sr, sr)
    assert np.allclose(x * 32767, np.trunc(x * 32767), atol=1e-3) and np.abs(x).max() == pytest.approx(
        10 ** (-1 / 20), abs=1e-4)
    short_tok = ClapEmbedder(tiny_clap_dir, text_max_length=6)  # LAION-CLAP keeps 77 tokens; here 6
    texts = ["a happy piano melody with drums", "a happy piano melody and sad violin"]
    same = short_tok.embed_text(texts)
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    full = ClapEmbedder(tiny_clap_dir).embed_text(texts)
    assert not np.allclose(full[0], full[1], atol=1e-4)
    with pytest.raises(ValueError, match="long_audio"):
        ClapEmbedder(tiny_clap_dir, long_audio="fusion")


def test_fd_closed_forms_and_invariances():
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 0.5]])  # does not commute with s1
    prod = s1 @ s2  # for 2x2 PSD: Tr sqrt(S1 S2) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2)))
    tr_sqrt = math.sqrt(np.trace(prod) + 2 * math.sqrt(np.linalg.det(prod)))
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.0])
    closed = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 6)), rng.normal(size=(300, 6)) @ np.diag([1, 2, 1, 0.5, 1, 3]) + 0.4
    fd = FrechetDistance(embedder=None).from_embeddings(x, y)
    assert _fd_symmetric(x, y) == pytest.approx(fd, rel=1e-8)  # the bootstrap's eigen form agrees
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    shift = rng.normal(size=6)
    assert FrechetDistance(None).from_embeddings(x @ q + shift, y @ q + shift) == pytest.approx(fd, rel=1e-8)
    assert FrechetDistance(None).from_embeddings(3 * x, 3 * y) == pytest.approx(9 * fd, rel=1e-8)
    # 1-D: FD of the Gaussian fits = W2^2, which the quantile coupling of large Gaussian samples estimates
    a, b = rng.normal(1.0, 2.0, 200_000), rng.normal(-0.5, 0.7, 200_000)
    w2 = float(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert FrechetDistance(None).from_embeddings(a[:, None], b[:, None]) == pytest.approx(w2, rel=0.02)
    assert w2 == pytest.approx(1.5**2 + 1.3**2, rel=0.02)


def test_kl_closed_form_and_stable_audio_metrics_direction():
    p, q = np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])
    assert kl_divergence(p, q, eps=0)[0] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0))
    rng = np.random.default_rng(1)
    gen, ref = rng.dirichlet(np.ones(527), 4), rng.dirichlet(np.ones(527), 4)
    ours = KLDivergence(None, direction="gen_ref", eps=1e-6).from_probs(gen, ref)
    torch_ref = np.mean([float(torch.nn.functional.kl_div((torch.from_numpy(ref[i]) + 1e-6).log(),
                                                         torch.from_numpy(gen[i]), reduction="sum"))
                         for i in range(4)])  # stable-audio-metrics' passt_kld
    assert ours == pytest.approx(torch_ref, rel=1e-3)
    assert KLDivergence(None).from_probs(gen, ref) == pytest.approx(
        KLDivergence(None, direction="gen_ref").from_probs(ref, gen), rel=1e-12)
    with pytest.raises(ValueError, match="direction"):
        KLDivergence(None, direction="both")
