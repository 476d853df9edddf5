"""``python -m musicdiff.reference.import_sat`` → ``musicdiff-generate``, and ``export_sat`` back.

A reduced-size Stable Audio Open checkpoint in SAT's release layout (``model.safetensors`` +
``model_config.json``) is imported; ``musicdiff-generate checkpoint=<dir>`` then produces the
same latents as SAT's ``generate_diffusion_cond`` from the same seed, and the export round
trip gives back SAT's state dict bit for bit.
"""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from tests.reference.conftest import WINDOW_LATENTS


def test_import_then_generate_matches_reference(sat_release, small_pair, t5_768, tmp_path, compose_cfg):
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    from musicdiff.cli.generate import build_generator, generate
    from musicdiff.reference.import_sat import main as import_main

    sat_model = small_pair[0]
    out = import_main([f"in={sat_release / 'model.safetensors'}", f"out={tmp_path / 'export'}", f"t5={t5_768}"])
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["autoencoder.safetensors", "conditioner.safetensors",
                                                                 "dit.safetensors"]
    overrides = [f"checkpoint={out}", "prompt=orchestral film score", "sampler=dpmpp_2m", "sampler.steps=4",
                 "logger=none", "generator.decode_chunk_latents=null", "seed=11"]
    cfg = compose_cfg("generate", overrides)
    gen = build_generator(cfg, torch.device("cpu"))
    assert gen.window_latents == WINDOW_LATENTS
    seconds = gen.max_duration
    latents = gen.generate("orchestral film score", seeds=11, return_latents=True)[0]
    with torch.no_grad():
        ref = generate_diffusion_cond(
            sat_model, steps=4, cfg_scale=7.0, seed=11, device="cpu", sample_size=WINDOW_LATENTS * 2048,
            conditioning=[{"prompt": "orchestral film score", "seconds_start": 0, "seconds_total": seconds}],
            sampler_type="dpmpp-2m", sigma_min=0.3, sigma_max=500.0, rho=1.0, return_latents=True)
    torch.testing.assert_close(latents, ref[0], rtol=1e-4, atol=1e-5 * float(ref.abs().max()))

    written = generate(compose_cfg("generate", overrides + ["duration=0.5"]))
    audio, rate = sf.read(written[0])
    assert rate == 44100 and audio.shape == (22050, 2)


def test_t5_comes_from_the_environment_without_t5_argument(sat_release, t5_768, tmp_path, compose_cfg, monkeypatch):
    from musicdiff.cli.generate import build_generator
    from musicdiff.reference.import_sat import import_sat

    out = import_sat(sat_release / "model.safetensors", tmp_path / "export_env")
    assert "oc.env:MUSICDIFF_T5_PATH" in (out / "config.yaml").read_text()
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    gen = build_generator(compose_cfg("generate", [f"checkpoint={out}", "logger=none"]), torch.device("cpu"))
    assert gen.conditioner.conditioners["prompt"].model_name == t5_768


def test_export_back_is_bit_exact(sat_release, small_pair, t5_768, tmp_path):
    from musicdiff.reference.export_sat import main as export_main
    from musicdiff.reference.import_sat import import_sat
    from musicdiff.reference.sat_reference import build_sat_model

    sat_model = small_pair[0]
    out = import_sat(sat_release / "model.safetensors", tmp_path / "export", t5_path=t5_768)
    back = export_main([f"in={out}", f"out={tmp_path / 'sat'}", "t5_name=t5-base"])
    state = load_file(str(back / "model.safetensors"))
    original = sat_model.state_dict()
    assert set(state) == set(original) and all(torch.equal(state[k], original[k]) for k in original)
    rebuilt = build_sat_model(json.loads((back / "model_config.json").read_text()), t5_path=t5_768)
    rebuilt.load_state_dict(state, strict=True)


def test_cli_errors_are_clear(tmp_path):
    from musicdiff.reference.import_sat import main as import_main

    with pytest.raises(SystemExit, match="usage"):
        import_main(["out=x"])
    with pytest.raises(SystemExit, match="unknown argument 'bogus'"):
        import_main(["in=a", "out=b", "bogus=1"])
    with pytest.raises(FileNotFoundError):
        import_main([f"in={tmp_path / 'missing.safetensors'}", f"out={tmp_path / 'o'}"])
