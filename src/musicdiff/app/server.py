"""Load the model once and serve the page: ``musicdiff-app checkpoint=<export | SAT checkpoint>``.

The model is loaded by :func:`musicdiff.pretrained.generator.build_generator`, the code path of
``musicdiff-generate`` (same ``checkpoint``/``autoencoder_from``/``adapters``/``generator``/``sampler``
keys). Gradio's queue runs one generation at a time on it (``concurrency_limit=1``; other requests
wait in the queue, at most ``max_queue`` of them) and the server binds ``server_name``
(127.0.0.1 by default: this machine only; ``server_name=0.0.0.0`` exposes it on the network,
``share=true`` asks Gradio for a public link).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("musicdiff")


def _sampler_choice(cfg: DictConfig) -> str:
    """Name of the configured ``sampler`` option (Hydra's choice; ``default`` outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get("sampler") or "default")
    except ValueError:  # not inside a Hydra app
        return "default"


def build(cfg: DictConfig):
    """Load the model and build the page (not launched).

    Args:
        cfg: the composed ``app`` root config.

    Returns:
        ``(demo, studio)``: the queued :class:`gradio.Blocks` and the :class:`~musicdiff.app.jobs.Studio`.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    from musicdiff.app.gallery import RunStore
    from musicdiff.app.jobs import Studio
    from musicdiff.app.listening_test import ListeningLog
    from musicdiff.app.ui import build_ui
    from musicdiff.cli.common import pick_device
    from musicdiff.config.runtime import prepare_run
    from musicdiff.config.validate import validate_targets
    from musicdiff.pretrained.generator import build_generator

    validate_targets(cfg)
    if int(cfg.max_batch) < 1 or int(cfg.max_queue) < 1:
        raise ValueError(f"max_batch={cfg.max_batch} and max_queue={cfg.max_queue} must be >= 1")
    gen = build_generator(cfg, pick_device(cfg.device))
    prepare_run(cfg)  # the run dir records the resolved config (with the model groups really loaded)
    studio = Studio(gen, cfg, cfg.out_dir, default_sampler=_sampler_choice(cfg), max_batch=int(cfg.max_batch))
    store = RunStore(cfg.tracking_uri, cfg.gallery_cache_dir, max_runs=int(cfg.gallery_max_runs))
    demo = build_ui(studio, store, ListeningLog(cfg.listening_file))
    demo.queue(default_concurrency_limit=1, max_size=int(cfg.max_queue))
    return demo, studio


def serve(cfg: DictConfig, block: bool = True):
    """Build the page and launch the server (blocks until interrupted unless ``block=False``).

    Returns:
        The launched :class:`gradio.Blocks` (call ``.close()`` to stop it when ``block=False``).
    """
    demo, studio = build(cfg)
    for folder in (cfg.out_dir, cfg.gallery_cache_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    log.info("app: model window %.2f s at %d Hz; serving on http://%s:%s", studio.max_duration, studio.sample_rate,
             cfg.server_name, cfg.server_port)
    try:
        demo.launch(server_name=str(cfg.server_name), server_port=int(cfg.server_port), share=bool(cfg.share),
                    inbrowser=False, prevent_thread_lock=not block, show_error=True, ssr_mode=False, mcp_server=False,
                    allowed_paths=[str(Path(cfg.out_dir).resolve()), str(Path(cfg.gallery_cache_dir).resolve())])
    except OSError as exc:
        if "port" not in str(exc).lower():
            raise
        raise OSError(f"cannot serve on {cfg.server_name}:{cfg.server_port} (in use?): pass server_port=<a free port>"
                      ) from exc
    return demo
