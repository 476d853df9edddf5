"""Configuration: structured root schemas, target validation, config hash, run set-up."""

from musicdiff.config.hashing import config_hash, flatten
from musicdiff.config.schema import register_configs
from musicdiff.config.validate import ConfigError, validate_targets

register_configs()

__all__ = ["ConfigError", "config_hash", "flatten", "register_configs", "validate_targets"]
