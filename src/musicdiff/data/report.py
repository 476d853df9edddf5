"""Data report: look at an audio folder before training on it.

Real music breaks VAE training in ways synthetic tones never do (issue 14): clipped masters feed
the STFT loss hard-clipped spectra, a DC offset is a 0 Hz component the decoder must reproduce,
near-silent files make the spectral-convergence term a ratio of near-zero energies, and a mono
file in a stereo model has an all-zero side channel. This report reads every file of a folder
once and tabulates what the training will see:

* duration, sample rate, channels, sample format;
* integrated loudness (ITU-R BS.1770-4, via ``pyloudnorm``) and peak level;
* clipping share (samples at full scale in runs of >= 3), silence share (50 ms blocks below
  -60 dBFS RMS), DC offset (largest per-channel mean);
* caption coverage and example prompts built by the dataset's :class:`~musicdiff.data.prompts.PromptBuilder`.

It warns, one line per file and problem, about the cases above and about files below the model's
sample rate, and writes ``report.md`` (table) and ``report.json``, optionally logged to MLflow::

    python -m musicdiff.data.report outputs/data/real_music --sample-rate 44100 --channels 2 --mlflow
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import soundfile as sf

from musicdiff.data.audio_io import AUDIO_EXTENSIONS, display_path
from musicdiff.data.manifest import MANIFEST_NAMES, normalize_relpath, read_manifest
from musicdiff.data.prompts import PromptBuilder

log = logging.getLogger("musicdiff.data.report")

CLIP_LEVEL = 0.999          # |x| at or above this counts as full scale
CLIP_RUN = 3                # consecutive full-scale samples that count as clipping
CLIP_WARN_SHARE = 1e-4      # clipped samples share that earns a warning (0.01 %)
SILENCE_DB = -60.0          # block RMS below this is silence
SILENCE_BLOCK_S = 0.05      # block length of the silence share
SILENCE_WARN_SHARE = 0.5    # warn when more than half of a file is silent
NEAR_SILENT_LUFS = -45.0    # integrated loudness below this: near-silent file
DC_WARN = 0.01              # |mean| above this (1 % of full scale): DC offset


@dataclass
class FileReport:
    """What the report measured for one file (``None`` where not measurable)."""

    path: str
    seconds: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    subtype: str = ""
    lufs: float | None = None
    peak_db: float | None = None
    clip_share: float = 0.0
    silence_share: float = 0.0
    dc_offset: float = 0.0
    caption: bool = False
    prompts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _clip_share(audio: np.ndarray) -> float:
    """Share of samples that sit at full scale in runs of at least ``CLIP_RUN`` (any channel)."""
    hot = np.abs(audio) >= CLIP_LEVEL  # [T, C]
    if not hot.any():
        return 0.0
    clipped = 0
    for ch in hot.T:
        padded = np.concatenate([[0], ch.astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        runs = edges[1::2] - edges[::2]
        clipped += int(runs[runs >= CLIP_RUN].sum())
    return clipped / hot.size


def _silence_share(audio: np.ndarray, sample_rate: int) -> float:
    block = max(1, int(SILENCE_BLOCK_S * sample_rate))
    n = len(audio) // block
    if n == 0:
        return 1.0 if float(np.abs(audio).max(initial=0.0)) < 10 ** (SILENCE_DB / 20) else 0.0
    rms = np.sqrt(np.mean(audio[: n * block].reshape(n, block, -1) ** 2, axis=(1, 2)) + 1e-20)
    return float(np.mean(20 * np.log10(rms) < SILENCE_DB))


def _loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    import pyloudnorm

    if len(audio) < int(0.4 * sample_rate):  # BS.1770 gating needs one 400 ms block
        return None
    value = float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio))
    return value if np.isfinite(value) else -120.0


def analyse_file(path: Path, model_sample_rate: int | None = None, model_channels: int | None = None) -> FileReport:
    """Measure one file and attach its warnings (unreadable files get a warning, not an exception)."""
    rep = FileReport(path=display_path(path))
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types
        rep.warnings.append(f"unreadable: {' '.join(str(e).split())[:160]}")
        return rep
    rep.seconds, rep.sample_rate, rep.channels, rep.subtype = len(audio) / sr, sr, audio.shape[1], info.subtype
    if len(audio) == 0:
        rep.warnings.append("empty file")
        return rep
    if not np.isfinite(audio).all():
        rep.warnings.append("non-finite samples (NaN/inf)")
        audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    peak = float(np.abs(audio).max())
    rep.peak_db = 20 * np.log10(peak) if peak > 0 else -120.0
    rep.lufs = _loudness(audio, sr)
    rep.clip_share = _clip_share(audio)
    rep.silence_share = _silence_share(audio, sr)
    rep.dc_offset = float(np.abs(audio.mean(axis=0)).max())
    if rep.clip_share > CLIP_WARN_SHARE:
        rep.warnings.append(f"clipped master: {100 * rep.clip_share:.3f}% of samples at full scale")
    if peak > 1.0:
        rep.warnings.append(f"peak {rep.peak_db:+.1f} dBFS above full scale (the dataset scales the file down)")
    if rep.dc_offset > DC_WARN:
        rep.warnings.append(f"DC offset {rep.dc_offset:.3f} (high-pass the file)")
    if peak == 0.0 or (rep.lufs is not None and rep.lufs < NEAR_SILENT_LUFS):
        rep.warnings.append("near-silent file" + (f" ({rep.lufs:.1f} LUFS)" if rep.lufs is not None else ""))
    elif rep.silence_share > SILENCE_WARN_SHARE:
        rep.warnings.append(f"mostly silent: {100 * rep.silence_share:.0f}% of 50 ms blocks below "
                            f"{SILENCE_DB:.0f} dBFS")
    if model_channels == 2 and rep.channels == 1:
        rep.warnings.append("mono file in a stereo model (side channel is zero)")
    elif model_channels is not None and rep.channels > model_channels:
        rep.warnings.append(f"{rep.channels} channels for a {model_channels}-channel model (see dataset.multichannel)")
    if model_sample_rate is not None and sr < model_sample_rate:
        rep.warnings.append(f"{sr} Hz below the model's {model_sample_rate} Hz "
                            f"(upsampled: no content above {sr // 2} Hz)")
    return rep


def data_report(root: str | Path, manifest: str | Path | None = None, sample_rate: int | None = None,
                channels: int | None = None, prompt_builder: PromptBuilder | None = None, prompts_per_file: int = 2,
                extensions: tuple[str, ...] = AUDIO_EXTENSIONS, seed: int = 0) -> dict[str, Any]:
    """Analyse every audio file under ``root``.

    Args:
        root: audio folder (recursive).
        manifest: metadata file (default: ``metadata.{json,jsonl,csv}`` in ``root`` if present).
        sample_rate: the model's sample rate (warns about files below it).
        channels: the model's channel count (warns about mono files for a stereo model).
        prompt_builder: builds the example prompts (default: the dataset's SA2 builder).
        prompts_per_file: example prompts drawn per file.
        extensions: audio suffixes scanned.
        seed: seed of the example prompts.

    Returns:
        ``{"files": [FileReport as dict], "summary": {...}, "warnings": ["<file>: <problem>", ...]}``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data report: {root} is not a folder")
    if manifest is None:
        manifest = next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
    meta = read_manifest(manifest) if manifest else {}
    builder = prompt_builder or PromptBuilder()
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    reports = []
    for path in files:
        rep = analyse_file(path, sample_rate, channels)
        rel = normalize_relpath(path.relative_to(root))
        rep.path = display_path(rel)
        fields = dict(meta.get(rel, {}))
        sidecar = path.with_suffix(".json")
        if not fields and sidecar.is_file():
            try:
                fields = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                rep.warnings.append(f"unreadable metadata sidecar {sidecar.name}")
        rep.caption = builder.caption(fields) is not None
        rep.prompts = [builder(fields, rng) for _ in range(prompts_per_file)]
        if not any(rep.prompts):
            rep.warnings.append("no caption or metadata fields: trains with an empty prompt")
        reports.append(rep)
    warnings = [f"{r.path}: {w}" for r in reports for w in r.warnings]
    return {"files": [asdict(r) for r in reports], "summary": summarise(reports), "warnings": warnings}


def summarise(reports: list[FileReport]) -> dict[str, float]:
    """Folder-level numbers (the ones logged to MLflow)."""
    n = len(reports)
    lufs = [r.lufs for r in reports if r.lufs is not None]
    return {
        "files": float(n), "hours": sum(r.seconds for r in reports) / 3600,
        "min_seconds": min((r.seconds for r in reports), default=0.0),
        "max_seconds": max((r.seconds for r in reports), default=0.0),
        "caption_coverage": sum(r.caption for r in reports) / n if n else 0.0,
        "prompt_coverage": sum(bool(any(r.prompts)) for r in reports) / n if n else 0.0,
        "lufs_median": float(np.median(lufs)) if lufs else float("nan"),
        "lufs_min": min(lufs, default=float("nan")), "lufs_max": max(lufs, default=float("nan")),
        "clipped_files": float(sum(r.clip_share > CLIP_WARN_SHARE for r in reports)),
        "mono_files": float(sum(r.channels == 1 for r in reports)),
        "files_with_warnings": float(sum(bool(r.warnings) for r in reports)),
        "silence_share_mean": float(np.mean([r.silence_share for r in reports])) if n else 0.0,
    }


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown table of the files, then the summary, the warnings and the example prompts."""
    head = "| file | s | Hz | ch | LUFS | peak dBFS | clip % | silence % | DC | caption |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    for r in report["files"]:
        lines.append(f"| {r['path']} | {r['seconds']:.1f} | {r['sample_rate']} | {r['channels']} | "
                     f"{fmt(r['lufs'], '.1f')} | {fmt(r['peak_db'], '.1f')} | {100 * r['clip_share']:.3f} | "
                     f"{100 * r['silence_share']:.0f} | {r['dc_offset']:.3f} | {'yes' if r['caption'] else 'no'} |")
    lines += ["", "Summary: " + ", ".join(f"{k} {v:.3g}" for k, v in report["summary"].items()), ""]
    lines += (["Warnings:"] + [f"- {w}" for w in report["warnings"]]) if report["warnings"] else ["No warnings."]
    lines += ["", "Example prompts:"] + [f"- {r['path']}: " + " / ".join(repr(p) for p in r["prompts"])
                                           for r in report["files"]]
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | Path, logger: Any = None) -> Path:
    """Write ``report.md`` and ``report.json`` into ``out_dir``; log the summary and both files to ``logger``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.md", format_table(report)), ("report.json", json.dumps(report, indent=1))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
    if logger is not None:
        logger.log_metrics({f"data/{k}": v for k, v in report["summary"].items() if np.isfinite(v)}, 0)
        logger.log_artifact(out / "report.md", "data_report")
        logger.log_artifact(out / "report.json", "data_report")
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    """``python -m musicdiff.data.report ROOT [--sample-rate HZ] [--channels N] [--out DIR] [--mlflow]``."""
    parser = argparse.ArgumentParser(description="Report durations, loudness, clipping, silence and prompts "
                                                 "of an audio folder before training on it.")
    parser.add_argument("root", help="audio folder")
    parser.add_argument("--manifest", default=None, help="metadata file (default: metadata.* in the folder)")
    parser.add_argument("--sample-rate", type=int, default=None, help="the model's sample rate")
    parser.add_argument("--channels", type=int, default=None, help="the model's channel count")
    parser.add_argument("--out", default=None, help="output folder (default: outputs/data_report/<folder name>)")
    parser.add_argument("--mlflow", action="store_true",
                        help="log the summary and the tables to MLflow (outputs/mlflow.db)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = data_report(args.root, args.manifest, args.sample_rate, args.channels)
    out = Path(args.out or Path("outputs/data_report") / Path(args.root).resolve().name)
    logger = None
    if args.mlflow:
        from musicdiff.tracking import MLflowLogger

        logger = MLflowLogger(store_dir="outputs")
        logger.start(out, {"root": str(args.root), "sample_rate": args.sample_rate, "channels": args.channels},
                     {"entry_point": "data_report"})
    try:
        path = write_report(report, out, logger)
    finally:
        if logger is not None:
            logger.finish()
    for w in report["warnings"]:
        log.warning("%s", w)
    print(format_table(report))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
