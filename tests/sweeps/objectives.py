"""A cheap ``kind=python`` trial runner for sweep-worker tests: a 2-D quadratic, with a pause.

Every call appends ``start``/``end`` events (pid, trial dir, x, y) to the JSON-lines file named by
``SWEEP_TEST_EVENTS``, so a test can see which worker runs which trial and kill it mid-trial.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence


def _event(**record) -> None:
    path = os.environ.get("SWEEP_TEST_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def quadratic(trial_dir: Path, overrides: Sequence[str], eval_overrides: Sequence[str]) -> dict[str, float]:  # noqa: ARG001
    """``loss = (x - 0.3)^2 + (y + 0.2)^2`` after ``SWEEP_TEST_TRIAL_S`` seconds."""
    params = dict(o.split("=", 1) for o in overrides)
    x, y = float(params["x"]), float(params["y"])
    _event(event="start", pid=os.getpid(), trial=Path(trial_dir).name, x=x, y=y)
    time.sleep(float(os.environ.get("SWEEP_TEST_TRIAL_S", "0.5")))
    _event(event="end", pid=os.getpid(), trial=Path(trial_dir).name, x=x, y=y)
    return {"loss": (x - 0.3) ** 2 + (y + 0.2) ** 2}
