"""Conditioning fields beyond prompt and timing (e.g. ``bpm``) travel from a prompts file to the conditioners
and into generations.jsonl, with no code naming the field."""

from __future__ import annotations

import json

import torch

from musicdiff.sampling import Generator, SamplerSpec, samplers
from musicdiff.sampling.outputs import GenerationWriter
from musicdiff.sampling.requests import expand_requests, read_prompts_file
from tests.sampling.stubs import ShuffleAutoencoder, StubConditioner, StubDiT, StubVDenoiser


class RecordingConditioner(StubConditioner):
    """The stub conditioner, remembering the metadata of its last call."""

    def forward(self, metadata, device):
        self.seen = [dict(m) for m in metadata]
        return super().forward(metadata, device)


def test_prompts_file_fields_reach_the_conditioner_and_the_manifest(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,duration,seed,bpm,key\nfast drums,0.1,3,140,\nslow pad,,,72,Dm\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "fast drums", "bpm": 140, "seed": 3}) + "\n")
    csv_reqs, jsonl_reqs = read_prompts_file(tmp_path / "p.csv"), read_prompts_file(tmp_path / "p.jsonl")
    assert [r.fields for r in csv_reqs] == [{"bpm": "140"}, {"bpm": "72", "key": "Dm"}]  # empty cells: absent
    assert jsonl_reqs[0].fields == {"bpm": 140} and jsonl_reqs[0].seed == 3
    reqs = expand_requests(csv_reqs, 2, seed=0, duration=0.2)
    assert [r.fields.get("key") for r in reqs] == [None, None, "Dm", "Dm"]

    ae = ShuffleAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    cond = RecordingConditioner()
    gen = Generator(ae, StubDiT(ae.latent_dim), cond, SamplerSpec(samplers.sample_euler, steps=2, sigma_min=0.1,
                                                                   sigma_max=10.0, cfg_scale=1.0),
                    window_latents=64, decode_chunk_latents=None, denoiser_wrapper=StubVDenoiser)
    audios = gen.generate([r.prompt for r in reqs], durations=[r.duration for r in reqs], seeds=[r.seed for r in reqs],
                          fields=[r.fields for r in reqs])
    assert [m.get("bpm") for m in cond.seen] == ["140", "140", "72", "72"]
    assert cond.seen[2] == {"bpm": "72", "key": "Dm", "prompt": "slow pad", "seconds_start": 0.0,
                            "seconds_total": 0.2}
    gen.generate("one", durations=0.1, seeds=0, fields={"bpm": 90})  # one mapping for the whole batch
    assert cond.seen[0]["bpm"] == 90
    with GenerationWriter(tmp_path / "out", ae.sample_rate, "wav", "hash") as writer:
        writer.write("clip", audios[2], reqs[2])
    record = json.loads((tmp_path / "out" / "generations.jsonl").read_text())
    assert (record["bpm"], record["key"], record["prompt"]) == ("72", "Dm", "slow pad")
    assert torch.isfinite(audios[0]).all()
