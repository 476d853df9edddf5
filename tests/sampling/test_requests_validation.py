"""Issue 13: bad generation inputs fail with one line naming the value, before any model is built."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from musicdiff.sampling.inpaint import check_keep_ranges, keep_mask
from musicdiff.sampling.requests import (
    MAX_SEED, SAMPLE_SEED_STRIDE, GenerationRequest, expand_requests, validate_requests,
)


@pytest.fixture(scope="module")
def _base_generate_cfg():
    from tests.conftest import compose_root

    return compose_root("generate", ["logger=none"])


@pytest.fixture()
def generate_cfg(_base_generate_cfg, monkeypatch, tmp_path):
    """The generate config with some keys set; building a model fails the test (validation must come first)."""
    import musicdiff.cli.generate as cli

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was built before the inputs were validated")

    monkeypatch.setattr(cli, "build_generator", no_model)
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros((16000, 1), dtype=np.float32), 8000)  # 2.0 s

    def make(**values):
        cfg = _base_generate_cfg.copy()
        for key, value in {"out_dir": str(tmp_path / "out"), "paths.log_dir": str(tmp_path),
                           "paths.output_dir": str(tmp_path / "run"), **values}.items():
            OmegaConf.update(cfg, key, value.format(wav=wav, dir=tmp_path) if isinstance(value, str) else value)
        return cfg

    return make


@pytest.mark.parametrize("values, message", [
    ({"prompt": "   "}, r"prompt: '   ' is empty or blank"),
    ({"prompt": "x", "duration": 0}, r"duration=0.0: must be a positive number of seconds"),
    ({"prompt": "x", "duration": -2}, r"duration=-2.0: must be a positive"),
    ({"prompt": "x", "num_samples": 0}, r"num_samples=0: must be an integer >= 1"),
    ({"prompt": "x", "batch_size": 0}, r"batch_size=0: must be an integer >= 1"),
    ({"prompt": "x", "seed": -1}, r"seed=-1 is out of range: seeds are integers in \[0, 2\*\*63 - 1\]"),
    ({"prompt": "x", "seed": 2**63}, r"seed=9223372036854775808 is out of range"),
    ({"prompt": "x", "seed": MAX_SEED, "num_samples": 2}, r"reaches seed .* beyond the largest seed"),
    ({"prompt": "x", "inpaint_keep": [[0, 1]]}, r"inpaint_keep=\[\[0, 1\]\] needs inpaint_audio"),
    ({"prompt": "x", "inpaint_audio": "{wav}", "inpaint_keep": [[-1, 1]]}, r"range \[-1, 1\]: need 0 <= start < end"),
    ({"prompt": "x", "inpaint_audio": "{wav}", "inpaint_keep": [[1.5, 0.5]]}, r"range \[1.5, 0.5\]: need 0 <= start"),
    ({"prompt": "x", "inpaint_audio": "{wav}", "inpaint_keep": [[1, 5]]}, r"range \[1, 5\] goes beyond .* 2.000 s"),
    ({"prompt": "x", "inpaint_audio": "{wav}", "inpaint_keep": []}, r"inpaint_keep=\[\] keeps nothing"),
    ({"prompt": "x", "inpaint_audio": "{wav}", "inpaint_keep": [[0, 1, 2]]}, r"range \[0, 1, 2\] is not a pair"),
    ({"prompt": "x", "inpaint_audio": "{dir}/missing.wav"}, r"missing\.wav: missing"),
])
def test_bad_inputs_fail_before_the_model_is_built(generate_cfg, values, message):
    from musicdiff.cli.generate import generate

    with pytest.raises(ValueError, match=message) as info:
        generate(generate_cfg(**values))
    assert len(str(info.value).splitlines()) == 1


def test_flat_pair_is_one_range_and_ranges_map_to_samples():
    """`inpaint_keep=[1,2]` (a flat pair) used to crash; it is accepted as the single range [1, 2]."""
    assert check_keep_ranges(OmegaConf.create([1, 2]), 3.0) == [(1.0, 2.0)]
    assert check_keep_ranges(OmegaConf.create([[0, 0.5], [2, 3.0004]]), 3.0) == [(0.0, 0.5), (2.0, 3.0004)]
    assert check_keep_ranges(None, 3.0) == [(0.0, 3.0)]
    with pytest.raises(ValueError, match=r"expected \[\[start_s, end_s\], ...\]"):
        check_keep_ranges("0-1", 3.0)
    with pytest.raises(ValueError, match="not a pair"):
        check_keep_ranges([1, 2, 3], 3.0)
    mask = keep_mask([(0.0, 0.5), (2.0, 3.0)], 30, 10)
    assert mask.tolist() == [True] * 5 + [False] * 15 + [True] * 10


def test_prompts_file_requests_are_validated(tmp_path):
    validate_requests([GenerationRequest("ok", 1.0, 0), GenerationRequest("fine", None, MAX_SEED)])
    for req, message in ((GenerationRequest("a", 0.0), r"#2: duration=0.0"),
                         (GenerationRequest("a", None, -3), r"#2: seed=-3 is out of range"),
                         (GenerationRequest(" \t"), r"#2: ' \\t' is empty or blank")):
        with pytest.raises(ValueError, match=message):
            validate_requests([GenerationRequest("ok"), req], "prompts.txt")


def test_expand_requests_rules():
    out = expand_requests([GenerationRequest("a"), GenerationRequest("b", seed=5)], 2, 10, 1.5)
    assert [r.seed for r in out] == [10, 10 + SAMPLE_SEED_STRIDE, 5, 5 + SAMPLE_SEED_STRIDE]
    assert {r.duration for r in out} == {1.5}
    with pytest.raises(ValueError, match="seed=True is not an integer"):
        expand_requests([GenerationRequest("a")], 1, True)
    with pytest.raises(ValueError, match=r"duration=nan"):
        expand_requests([GenerationRequest("a")], 1, 0, float("nan"))
