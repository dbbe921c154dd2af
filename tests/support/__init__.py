"""Helpers the tests and benchmarks share (import as `tests.support.X`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository's root
