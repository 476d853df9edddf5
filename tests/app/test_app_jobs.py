"""The app's jobs without a browser: inpaint keeps the upload, audio-to-audio starts from it, adapter scales
apply per request and are restored, bad requests name the value; the blind-test log and region parsing."""

from __future__ import annotations

import json
import random

import pytest
import soundfile as sf
import torch

from musicdiff.app.jobs import RequestError, Settings, Studio, parse_regions
from musicdiff.app.listening_test import Clip, ListeningLog, make_trial

SR = 16000


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A Studio on a tiny random-weight export carrying one LoRA adapter (non-zero update), loaded at scale 1."""
    from hydra.utils import instantiate

    from musicdiff.adapters import AdapterSpec, attach_adapter, remove_adapters, save_adapter
    from musicdiff.pretrained import write_export
    from musicdiff.pretrained.generator import build_generator
    from tests.conftest import compose_root

    root = tmp_path_factory.mktemp("app_jobs")
    cfg = compose_root("train", ["experiment=tiny", f"paths.output_dir={root / 'train'}",
                                 f"paths.log_dir={root / 'outputs'}"])
    torch.manual_seed(0)
    modules = {g: instantiate(cfg[g]).eval() for g in ("autoencoder", "dit", "conditioner")}
    export = write_export(root / "export", modules, config=cfg)
    dit = modules["dit"]
    adapter = attach_adapter(dit, AdapterSpec("lora", rank=2, alpha=2.0, targets=["cross_attn"]), "style")
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.5)  # a trained-looking update (LoRA's B starts at zero)
    save_adapter(root / "style.safetensors", dit, "style")
    remove_adapters(dit)
    app_cfg = compose_root("app", [f"checkpoint={export}", f"adapters=[{root / 'style.safetensors'}:1.0]",
                                   f"paths.log_dir={root / 'outputs'}", f"paths.output_dir={root / 'run'}",
                                   "sampler=dpmpp_2m", "sampler.steps=4"])
    gen = build_generator(app_cfg, torch.device("cpu"))
    return Studio(gen, app_cfg, root / "clips", default_sampler="dpmpp_2m", max_batch=2)


def _upload(tmp_path, seconds=1.0, name="in.wav"):
    t = torch.arange(int(seconds * SR)) / SR
    audio = 0.5 * torch.sin(2 * torch.pi * 330 * t).expand(2, -1)
    path = tmp_path / name
    sf.write(path, audio.T.numpy(), SR, subtype="PCM_16")
    return path, torch.from_numpy(sf.read(path, dtype="float32")[0].T.copy())


def _read(path):
    return torch.from_numpy(sf.read(path, dtype="float32")[0].T.copy())


def test_inpaint_keeps_the_kept_regions_and_writes_cli_metadata(studio, tmp_path):
    path, audio = _upload(tmp_path)
    (res,) = studio.inpaint(Settings("square playing E4", duration=1.0, seed=3), str(path), "0-0.25, 0.75-1")
    out = _read(res.path)
    assert out.shape == (2, SR) and res.spectrogram.is_file()
    q = 1 / 32768  # PCM16 step
    for a, b in ((0, int(0.25 * SR)), (int(0.75 * SR), SR)):
        assert torch.allclose(out[:, a:b], audio[:, a:b], atol=2 * q)  # kept: the upload, exactly
    assert (out[:, int(0.3 * SR): int(0.7 * SR)] - audio[:, int(0.3 * SR): int(0.7 * SR)]).abs().max() > 0.05
    with sf.SoundFile(res.path) as fh:
        meta, title = json.loads(fh.comment), fh.title
    assert title == "square playing E4" and meta["seed"] == 3 and meta["duration"] == 1.0
    record = json.loads((studio.out_dir / "generations.jsonl").read_text().splitlines()[-1])
    assert record["mode"] == "inpaint" and record["inpaint_keep"] == [[0.0, 0.25], [0.75, 1.0]]
    assert (studio.out_dir / "configs" / f"{meta['config_hash']}.yaml").is_file()


def test_audio_to_audio_starts_from_the_upload_deterministically(studio, tmp_path):
    path, _ = _upload(tmp_path)
    s = dict(prompt="saw playing G4", duration=0.5, seed=11, steps=4)
    a = _read(studio.audio_to_audio(Settings(**s), str(path), 1.0)[0].path)
    b = _read(studio.audio_to_audio(Settings(**s), str(path), 1.0)[0].path)
    silent, _ = _upload(tmp_path, name="silent.wav")
    sf.write(silent, torch.zeros(SR, 2).numpy(), SR, subtype="PCM_16")
    c = _read(studio.audio_to_audio(Settings(**s), str(silent), 1.0)[0].path)
    assert torch.equal(a, b) and a.shape == (2, SR // 2)
    assert (a - c).abs().max() > 1e-3  # the init audio changes the result


def test_adapter_scale_applies_per_request_and_is_restored(studio):
    assert studio.adapters == {"style": 1.0}
    s = dict(prompt="sine playing C4", duration=0.25, seed=5, steps=3)
    on = _read(studio.text_to_music(Settings(**s))[0].path)
    off = _read(studio.text_to_music(Settings(**s, adapter_scales={"style": 0.0}))[0].path)
    again = _read(studio.text_to_music(Settings(**s))[0].path)
    assert (on - off).abs().max() > 1e-3 and torch.equal(on, again)
    with pytest.raises(RequestError, match="not loaded"):
        studio.check(Settings("x", adapter_scales={"other": 1.0}))


@pytest.mark.parametrize("settings, message", [
    (Settings("  "), "prompt is empty"),
    (Settings("x", duration=1.5), "at most 1.00 s"),
    (Settings("x", duration=-1), "impossible"),
    (Settings("x", batch=3), "batch=3"),
    (Settings("x", steps=0), "steps=0"),
    (Settings("x", sampler="nope"), "sampler 'nope'"),
])
def test_bad_requests_name_the_value(studio, settings, message):
    with pytest.raises(RequestError, match=message):
        studio.text_to_music(settings)


def test_bad_uploads_and_regions(studio, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(RequestError, match="'noise.wav' cannot be used: unreadable"):
        studio.audio_to_audio(Settings("x", duration=0.5), str(bad), 1.0)
    with pytest.raises(RequestError, match="upload the init audio first"):
        studio.audio_to_audio(Settings("x", duration=0.5), None, 1.0)
    path, _ = _upload(tmp_path, seconds=0.5)
    with pytest.raises(RequestError, match="beyond the inpaint audio"):
        studio.inpaint(Settings("x", duration=1.0), str(path), "0-0.8")


def test_parse_regions():
    assert parse_regions("0-1.5, 3-4") == [(0.0, 1.5), (3.0, 4.0)]
    assert parse_regions(".5-1;2 - 2.25") == [(0.5, 1.0), (2.0, 2.25)]
    for text, message in (("", "empty"), ("1-0.5", "after the start"), ("a-b", "not 'start-end'"),
                          ("-1-2", "not 'start-end'")):
        with pytest.raises(RequestError, match=message):
            parse_regions(text)


def test_blind_trials_pair_same_clips_shuffle_and_votes_append(tmp_path):
    a = [Clip("ra", "run a", f"/c/a/{n}.wav") for n in ("x", "y")]
    b = [Clip("rb", "run b", f"/c/b/{n}.wav") for n in ("y", "z")]
    trials = [make_trial(a, b, random.Random(i)) for i in range(40)]
    assert all(t.first.name == t.second.name == "y.wav" for t in trials)  # the clip both runs share
    firsts = {t.first.run_id for t in trials}
    assert firsts == {"ra", "rb"}  # order shuffled
    with pytest.raises(ValueError, match="two different runs"):
        make_trial(a, a)
    log = ListeningLog(tmp_path / "ab" / "votes.jsonl")
    log.record(trials[0], "1", "me")
    log.record(trials[1], "none")
    log.record(trials[2], "2")
    votes = log.votes()
    assert [v["choice"] for v in votes] == ["1", "none", "2"] and votes[0]["listener"] == "me"
    assert votes[0]["preferred_run"] == trials[0].first.run_id and votes[1]["preferred_run"] is None
    tally = log.tally("ra", "rb")
    assert sum(tally.values()) == 3 and tally["none"] == 1
    with pytest.raises(ValueError, match="choice"):
        log.record(trials[0], "3")
