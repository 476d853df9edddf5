"""``musicdiff-app``: a Gradio page for listening and comparing (issue 18).

Modules: :mod:`~musicdiff.app.jobs` (generation on the one loaded model), :mod:`~musicdiff.app.ui`
(the page), :mod:`~musicdiff.app.gallery` (MLflow store browsing), :mod:`~musicdiff.app.listening_test`
(blind A/B votes to JSONL), :mod:`~musicdiff.app.server` (load, queue, launch). Gradio is imported
only by ``ui`` and ``server``.
"""

from musicdiff.app.jobs import RequestError, Result, Settings, Studio, parse_regions

__all__ = ["RequestError", "Result", "Settings", "Studio", "parse_regions"]
