"""The app's generation jobs: one model in memory, requests checked, clips written like ``musicdiff-generate``.

:class:`Studio` wraps the :class:`~musicdiff.sampling.pipeline.Generator` built by
:func:`musicdiff.pretrained.generator.build_generator` (the loading code of ``musicdiff-generate``)
and runs the three modes of the page: text-to-music (SA2, Evans et al. 2024, Sec. 3), audio-to-audio
(Sec. 4.6: start from the encoded upload noised to ``init_noise_level``) and inpainting /
continuation (latent replacement, :mod:`musicdiff.sampling.inpaint`). Every clip is written by
:class:`~musicdiff.sampling.outputs.GenerationWriter` (same file tags and ``generations.jsonl``
record as the CLI) with a spectrogram PNG next to it. A request the model cannot serve (blank
prompt, duration past the window, unreadable upload, bad regions) raises :class:`RequestError`
with one line for the page; nothing is generated or written then.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from musicdiff.config.hashing import config_hash
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import atomic_write_text
from musicdiff.sampling.outputs import FORMATS, GenerationWriter
from musicdiff.sampling.requests import MAX_SEED, GenerationRequest
from musicdiff.sampling.noise import random_seed

log = logging.getLogger("musicdiff")

_RANGE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*-\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


class RequestError(ValueError):
    """A request the app cannot serve; its message is shown in the page as is."""


def sampler_names() -> list[str]:
    """The options of the ``sampler`` config group (``conf/sampler/*.yaml``)."""
    return sorted(p.stem for p in (Path(config_dir()) / "sampler").glob("*.yaml"))


def parse_regions(text: str) -> list[tuple[float, float]]:
    """``"0-1.5, 3-4"`` -> ``[(0.0, 1.5), (3.0, 4.0)]`` (seconds; order and overlap are free).

    Raises:
        RequestError: an empty text or a part that is not ``start-end`` with ``start < end``.
    """
    parts = [p for p in re.split(r"[,;]", text or "") if p.strip()]
    if not parts:
        raise RequestError("kept regions are empty: give seconds like '0-1.5, 3-4'")
    out = []
    for part in parts:
        m = _RANGE.match(part)
        if m is None:
            raise RequestError(f"kept region {part.strip()!r} is not 'start-end' in seconds (e.g. '0-1.5')")
        start, end = float(m.group(1)), float(m.group(2))
        if end <= start:
            raise RequestError(f"kept region {part.strip()!r}: the end must be after the start")
        out.append((start, end))
    return out


@dataclass
class Settings:
    """One request from the page (the controls shared by the three tabs)."""

    prompt: str
    negative_prompt: str = ""
    duration: float | None = None  # seconds; None: the model window
    sampler: str | None = None  # a conf/sampler option; None: the app's configured sampler
    steps: int | None = None  # None: the sampler's own
    cfg_scale: float | None = None  # None: the sampler's own
    seed: int | None = None  # None: a random seed; items of a batch get seed, seed+1, ...
    batch: int = 1
    fmt: str = "wav"
    adapter_scales: dict[str, float] = field(default_factory=dict)  # loaded adapter name -> scale


@dataclass
class Result:
    """One generated clip on disk."""

    path: Path  # the WAV/FLAC written (tags as musicdiff-generate writes them)
    spectrogram: Path  # PNG next to it
    seed: int
    duration: float  # seconds


class Studio:
    """The loaded model and the jobs the page runs on it (one at a time, under a lock).

    Args:
        generator: the Generator (from :func:`musicdiff.pretrained.generator.build_generator`).
        cfg: the app's root config (model source, generator node, sampler group) for the clips' config hash.
        out_dir: folder of the written clips, their ``generations.jsonl`` and the configs they hash to.
        default_sampler: name of the configured ``sampler`` option (its node is ``cfg.sampler``).
        max_batch: most clips per request.
    """

    def __init__(self, generator: Any, cfg: DictConfig, out_dir: str | Path, default_sampler: str = "default",
                 max_batch: int = 4) -> None:
        self.gen = generator
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.default_sampler = default_sampler
        self.max_batch = int(max_batch)
        self._sampler_cfgs: dict[str, DictConfig] = {default_sampler: cfg.sampler}
        self._samplers: dict[str, Any] = {default_sampler: generator.sampler}
        self._lock = threading.Lock()
        from musicdiff.adapters import stack_of  # adapters loaded with the model (load_pretrained(adapters=...))

        stack = stack_of(generator.dit)
        self.adapters: dict[str, float] = {k: float(s.scale) for k, s in stack.sets.items()} if stack else {}

    # --------------------------------------------------------------- facts
    @property
    def max_duration(self) -> float:
        """Longest clip in seconds (the model window)."""
        return float(self.gen.max_duration)

    @property
    def sample_rate(self) -> int:
        return int(self.gen.sample_rate)

    def sampler_options(self) -> list[str]:
        """The configured sampler first, then the other ``conf/sampler`` options."""
        return [self.default_sampler] + [n for n in sampler_names() if n != self.default_sampler]

    def sampler_cfg(self, name: str) -> DictConfig:
        if name not in self._sampler_cfgs:
            if name not in sampler_names():
                raise RequestError(f"sampler {name!r} is not one of {', '.join(self.sampler_options())}")
            self._sampler_cfgs[name] = OmegaConf.load(Path(config_dir()) / "sampler" / f"{name}.yaml")
        return self._sampler_cfgs[name]

    def sampler(self, name: str | None) -> Any:
        name = name or self.default_sampler
        if name not in self._samplers:
            self._samplers[name] = instantiate(self.sampler_cfg(name))
        return self._samplers[name]

    def sampler_defaults(self, name: str | None) -> tuple[int, float]:
        """``(steps, cfg_scale)`` of a sampler option."""
        spec = self.sampler(name)
        return int(spec.steps), float(spec.cfg_scale)

    # ---------------------------------------------------------- validation
    def check(self, s: Settings) -> Settings:
        """Fills defaults and checks every value against the model; :class:`RequestError` names the bad one."""
        if not isinstance(s.prompt, str) or not s.prompt.strip():
            raise RequestError("the prompt is empty: describe the music to generate")
        if s.duration is None:
            s.duration = self.max_duration
        try:
            s.duration = float(s.duration)
        except (TypeError, ValueError):
            raise RequestError(f"duration {s.duration!r} is not a number of seconds") from None
        if not 0 < s.duration <= self.max_duration + 1e-6:
            raise RequestError(f"duration {s.duration:g} s is impossible: this model generates at most "
                               f"{self.max_duration:.2f} s (its window)")
        steps_default, cfg_default = self.sampler_defaults(s.sampler)
        s.steps = steps_default if s.steps is None else int(s.steps)
        s.cfg_scale = cfg_default if s.cfg_scale is None else float(s.cfg_scale)
        if s.steps < 1:
            raise RequestError(f"steps={s.steps}: need at least 1")
        if not 1 <= int(s.batch) <= self.max_batch:
            raise RequestError(f"batch={s.batch}: between 1 and {self.max_batch} clips per request")
        s.batch = int(s.batch)
        if s.seed is None:
            s.seed = random_seed()
        s.seed = int(s.seed)
        if not 0 <= s.seed <= MAX_SEED - s.batch:
            raise RequestError(f"seed={s.seed} is out of range: seeds are integers in [0, 2**63 - 1]")
        if s.fmt not in FORMATS:
            raise RequestError(f"format {s.fmt!r}: choose one of {', '.join(FORMATS)}")
        unknown = sorted(set(s.adapter_scales) - set(self.adapters))
        if unknown:
            raise RequestError(f"adapters {unknown} are not loaded (loaded: {sorted(self.adapters) or 'none'})")
        return s

    def load_upload(self, path: str | None, what: str) -> torch.Tensor:
        """Reads an uploaded file at the model's rate and channels; :class:`RequestError` if unusable."""
        from musicdiff.data.audio_io import AudioLoadError, audio_info, load_audio

        if not path:
            raise RequestError(f"upload the {what} first")
        try:
            audio_info(path)
            return load_audio(path, self.sample_rate, int(self.gen.autoencoder.io_channels))
        except AudioLoadError as exc:
            detail = str(exc).split(": ", 1)[-1]  # "<reason> (<libsndfile's words>)" without the temp path
            detail = re.sub(r"Error opening .*?: ", "", detail)
            raise RequestError(f"the uploaded {what} '{Path(path).name}' cannot be used: {detail}") from None

    # ---------------------------------------------------------------- jobs
    def text_to_music(self, s: Settings, progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """Text-to-music (SA2 Sec. 3): ``s.batch`` clips of ``s.duration`` seconds."""
        return self._run(self.check(s), "text", {}, {}, progress)

    def audio_to_audio(self, s: Settings, upload: str | None, init_noise_level: float,
                       progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """Style transfer (SA2 Sec. 4.6): sample from ``encode(upload)`` noised to ``init_noise_level``."""
        s = self.check(s)
        if init_noise_level is None:
            raise RequestError("the init noise level is empty")
        level = float(init_noise_level)
        flow = getattr(self.sampler(s.sampler), "space", "ve") == "flow"
        if not level > 0 or (flow and level > 1):
            raise RequestError(f"init noise level {level:g}: must be > 0" + (" and <= 1 for flow samplers" if flow else ""))
        audio = self.load_upload(upload, "init audio")
        return self._run(s, "audio_to_audio", {"init_audio": audio, "init_noise_level": level},
                         {"init_audio": Path(upload).name, "init_noise_level": level}, progress)

    def inpaint(self, s: Settings, upload: str | None, keep: str,
                progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """Inpainting / continuation: keep ``keep`` (e.g. ``"0-1.5, 3-4"`` s) of the upload, regenerate the rest."""
        from musicdiff.sampling.inpaint import InpaintRequest, check_keep_ranges, keep_mask

        s = self.check(s)
        ranges = parse_regions(keep)
        audio = self.load_upload(upload, "audio to inpaint")
        audio = audio[..., : self.gen.window_samples]
        try:
            ranges = check_keep_ranges([list(r) for r in ranges], audio.shape[-1] / self.sample_rate)
        except ValueError as exc:
            raise RequestError(str(exc).replace("inpaint_keep", "kept")) from None
        request = InpaintRequest(audio, keep_mask(ranges, audio.shape[-1], self.sample_rate))
        return self._run(s, "inpaint", {"inpaint": request},
                         {"inpaint_audio": Path(upload).name, "inpaint_keep": [list(r) for r in ranges]}, progress)

    # ------------------------------------------------------------ internals
    def settings_config(self, s: Settings, mode: str, extra: dict) -> DictConfig:
        """Everything a clip depends on besides prompt/seed/duration: what its config hash is computed from."""
        sampler = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg(s.sampler or self.default_sampler),
                                                          resolve=True))
        sampler.steps, sampler.cfg_scale = s.steps, s.cfg_scale
        model = {k: self.cfg.get(k) for k in ("checkpoint", "autoencoder_from", "autoencoder", "dit", "conditioner")}
        return OmegaConf.create({
            "entry_point": "app", "mode": mode, **OmegaConf.to_container(OmegaConf.create(model), resolve=True),
            "adapters": {k: s.adapter_scales.get(k, v) for k, v in self.adapters.items()},
            "generator": OmegaConf.to_container(self.cfg.generator, resolve=True),
            "sampler_name": s.sampler or self.default_sampler, "sampler": sampler,
            **{k: v for k, v in extra.items() if k == "init_noise_level"},
        })

    def _run(self, s: Settings, mode: str, kwargs: dict, fields: dict,
             progress: Callable[[int, int], None] | None) -> list[Result]:
        from musicdiff.adapters import set_scale
        from musicdiff.tracking.plots import save_figure, spectrogram_figure

        settings = self.settings_config(s, mode, fields)
        digest = config_hash(settings)
        configs = self.out_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        if not (configs / f"{digest}.yaml").exists():
            atomic_write_text(configs / f"{digest}.yaml", OmegaConf.to_yaml(settings))

        def callback(info: dict) -> None:
            if progress is not None:
                progress(int(info["i"]) + 1, int(s.steps))

        with self._lock:
            self.gen.sampler = self.sampler(s.sampler)
            for name, scale in s.adapter_scales.items():
                set_scale(self.gen.dit, float(scale), name)
            try:
                t0 = time.perf_counter()
                audios = self.gen.generate([s.prompt] * s.batch, durations=s.duration, seeds=s.seed,
                                           negative_prompts=s.negative_prompt or None, steps=s.steps,
                                           cfg_scale=s.cfg_scale, callback=callback, **kwargs)
                seeds = list(self.gen.last_seeds)
            finally:
                for name, scale in self.adapters.items():
                    set_scale(self.gen.dit, scale, name)
        log.info("app: %s, %d clip(s) of %.2f s in %.1f s", mode, len(audios), s.duration, time.perf_counter() - t0)
        results = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with GenerationWriter(self.out_dir, self.sample_rate, s.fmt, digest, append=True) as writer:
            for seed, audio in zip(seeds, audios):
                req = GenerationRequest(s.prompt, s.duration, seed, s.negative_prompt or None)
                path = writer.write(f"{stamp}_{mode}_seed{seed}", audio, req, mode=mode,
                                    sampler=s.sampler or self.default_sampler, steps=s.steps, cfg_scale=s.cfg_scale,
                                    adapters=OmegaConf.to_container(settings.adapters), **fields)
                png = path.with_suffix(".png")
                save_figure(spectrogram_figure(audio, self.sample_rate, title=s.prompt[:80]), png)
                results.append(Result(path, png, seed, audio.shape[-1] / self.sample_rate))
        return results
