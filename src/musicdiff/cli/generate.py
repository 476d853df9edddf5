"""`musicdiff-generate`: text-to-music, audio-to-audio and inpainting with a trained model.

Examples:
    musicdiff-generate checkpoint=outputs/demo/dit/export prompt="sine C4 120 bpm left" duration=2
    musicdiff-generate checkpoint=... prompts_file=prompts.csv sampler=dpmpp_2m sampler.steps=50
    musicdiff-generate checkpoint=... prompt="..." init_audio=in.wav init_noise_level=2.0
    musicdiff-generate -m checkpoint=... prompt="..." sampler.cfg_scale=3,7
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from musicdiff.cli.common import pick_device, tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.config.validate import validate_targets
from musicdiff.pretrained.generator import build_generator
from musicdiff.sampling.outputs import FORMATS, GenerationWriter
from musicdiff.sampling.requests import (
    GenerationRequest, check_positive_int, expand_requests, read_prompts_file, validate_requests,
)

log = logging.getLogger("musicdiff")


def _requests(cfg: DictConfig) -> list[GenerationRequest]:
    if bool(cfg.prompt) == bool(cfg.prompts_file):
        raise ValueError("give exactly one of prompt=... or prompts_file=...")
    reqs = read_prompts_file(cfg.prompts_file) if cfg.prompts_file else [GenerationRequest(cfg.prompt)]
    validate_requests(reqs, f"prompts_file {cfg.prompts_file}" if cfg.prompts_file else "prompt")
    check_positive_int(cfg.batch_size, "batch_size")
    return expand_requests(reqs, cfg.num_samples, cfg.seed, cfg.duration, cfg.negative_prompt)


def _keep_ranges(cfg: DictConfig) -> list[tuple[float, float]] | None:
    """Checks the conditioning audio files and ``inpaint_keep`` before any model is built."""
    from musicdiff.data.audio_io import audio_info
    from musicdiff.sampling.inpaint import check_keep_ranges

    if cfg.init_audio:
        audio_info(cfg.init_audio)  # missing or unreadable: one line naming the file
    if not cfg.inpaint_audio:
        if cfg.inpaint_keep is not None:
            raise ValueError(f"inpaint_keep={cfg.inpaint_keep} needs inpaint_audio=<file> (the audio to keep)")
        return None
    return check_keep_ranges(cfg.inpaint_keep, audio_info(cfg.inpaint_audio).duration)


def _load_conditioning_audio(path: str, gen) -> torch.Tensor:
    from musicdiff.data.audio_io import load_audio

    return load_audio(path, gen.sample_rate, gen.autoencoder.io_channels)


def generate(cfg: DictConfig) -> list[Path]:
    """Generate every requested clip; returns the written audio paths (see module examples)."""
    validate_targets(cfg)
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be wav or flac, got {cfg.format!r}")
    requests = _requests(cfg)
    keep_ranges = _keep_ranges(cfg)
    device = pick_device(cfg.device)
    gen = build_generator(cfg, device)
    run_dir, digest = prepare_run(cfg)
    out_dir = Path(cfg.out_dir or run_dir / "audio")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if cfg.init_audio:
        extra["init_audio"] = _load_conditioning_audio(cfg.init_audio, gen)
        extra["init_noise_level"] = float(cfg.init_noise_level)
    if cfg.inpaint_audio:
        from musicdiff.sampling.inpaint import InpaintRequest, keep_mask

        audio = _load_conditioning_audio(cfg.inpaint_audio, gen)
        extra["inpaint"] = InpaintRequest(audio, keep_mask(keep_ranges, audio.shape[-1], gen.sample_rate),
                                          crossfade_seconds=float(cfg.inpaint_crossfade))
    written: list[Path] = []
    writer = GenerationWriter(out_dir, gen.sample_rate, cfg.format, digest, append=True)
    with tracked_run(cfg, run_dir, digest, "generate") as logger, writer:
        for lo in tqdm(range(0, len(requests), cfg.batch_size), desc="generate", unit="batch"):
            batch = requests[lo: lo + cfg.batch_size]
            audios = gen.generate([r.prompt for r in batch], durations=[r.duration or gen.max_duration for r in batch],
                                  seeds=[r.seed for r in batch], negative_prompts=[r.negative_prompt for r in batch]
                                  if any(r.negative_prompt for r in batch) else None,
                                  fields=[r.fields for r in batch], **extra)
            for j, (req, audio) in enumerate(zip(batch, audios)):
                path = writer.write(f"{lo + j:05d}_seed{req.seed}", audio, req)
                logger.log_audio(f"generate/{lo + j:05d}", audio, gen.sample_rate, 0)
                if cfg.spectrograms:
                    from musicdiff.tracking.plots import save_figure, spectrogram_figure

                    save_figure(spectrogram_figure(audio, gen.sample_rate, title=req.prompt[:80]),
                                path.with_suffix(".png"))
                written.append(path)
        logger.log_artifact(writer.manifest)
    log.info("wrote %d clips to %s", len(written), out_dir)
    return written


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    generate(cfg)


if __name__ == "__main__":
    main()
