"""File-level safety shared by checkpoints and exports: checksums and finiteness checks."""

from musicdiff.files.checksums import (
    NonFiniteWeightsError,
    assert_finite,
    describe_problems,
    file_records,
    has_checksums,
    sha256_file,
    verify_records,
)

__all__ = ["NonFiniteWeightsError", "assert_finite", "describe_problems", "file_records", "has_checksums",
           "sha256_file", "verify_records"]
