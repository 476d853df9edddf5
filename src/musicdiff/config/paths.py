"""Where the ``conf/`` tree lives, for entry points and tests."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> str:
    """Absolute path of the Hydra config tree.

    ``$MUSICDIFF_CONFIG_DIR`` wins; otherwise the repository's top-level ``conf/`` (the package is
    installed editable from the repository, see the README).
    """
    env = os.environ.get("MUSICDIFF_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train.yaml").is_file():
            return str(parent / "conf")
    raise FileNotFoundError(
        "Cannot find the musicdiff config tree (conf/train.yaml). Install the package editable "
        "from the repository (`pip install -e .`) or set MUSICDIFF_CONFIG_DIR."
    )
