"""`musicdiff-app`: a web page to generate, transform, inpaint, browse MLflow runs and run blind A/B tests.

Examples:
    musicdiff-app checkpoint=outputs/demo/dit/export
    musicdiff-app checkpoint=model.safetensors adapters=[lora.safetensors:0.8] sampler=dpmpp_2m
    musicdiff-app checkpoint=... server_name=0.0.0.0 server_port=7861   # reachable from the network
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from musicdiff.config.paths import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="app")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: load the model, then serve until interrupted."""
    from musicdiff.app.server import serve

    serve(cfg)


if __name__ == "__main__":
    main()
