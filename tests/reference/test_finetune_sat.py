"""Fine-tuning a stable-audio-tools checkpoint: ``musicdiff-train init_from=<model.safetensors>`` builds
the task from the SAT release, and one training step equals SAT's own ``DiffusionCondTrainingWrapper``
step (loss and every DiT gradient) on the same batch, timesteps and noise."""

from __future__ import annotations

from hydra.utils import instantiate

from musicdiff.reference.sat_reference import load_sat_training
from tests.reference.sat_training import assert_training_step_matches_sat

METADATA = [{"prompt": "orchestral film score", "seconds_start": 0.0, "seconds_total": 30.0},
            {"prompt": "lofi drums", "seconds_start": 2.0, "seconds_total": 10.0}]


def test_init_from_sat_checkpoint_trains_like_stable_audio_tools(sat_release, small_pair, t5_768, compose_cfg,
                                                                  monkeypatch):
    from musicdiff.cli.train import pretrained_parts

    sat = load_sat_training("training.diffusion")
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    cfg = compose_cfg("train", [f"init_from={sat_release / 'model.safetensors'}", "task.cfg_dropout_prob=0.0",
                                "logger=none"])
    parts = pretrained_parts(cfg)
    assert sorted(parts) == ["autoencoder", "conditioner", "dit"]
    assert cfg.dit.io_channels == 16 and cfg.conditioner.conditioners.prompt.model_name == t5_768
    task = instantiate(cfg.task, **parts).train()

    assert_training_step_matches_sat(task, sat, small_pair[0], METADATA, monkeypatch)
