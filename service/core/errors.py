"""Errors a user can act on. Their message says what was wrong and what would be valid.

Every command maps them the same way, in-process and through the service: a user error
(`StoreError`, `ConfigError`, `ValueError`) is exit code 2 (HTTP 4xx); a failure of the
work itself (`RuntimeError`: a vLLM server that would not start, sampling stopped part-way)
is exit code 1.
"""

from __future__ import annotations


class StoreError(RuntimeError):
    """A problem a user can act on (bad input, missing row); the message says what to do."""


class DataDirBusy(StoreError):
    """Another process holds the database file."""


class NotFound(StoreError):
    """An id that names nothing (a model, a job, a task)."""


def exit_code(exc: BaseException) -> int | None:
    """2 for an error the user can fix, 1 for a failure of the work itself, None for a bug."""
    if isinstance(exc, StoreError | ValueError | OSError):
        return 2
    if isinstance(exc, RuntimeError):
        return 1
    return None


class CommandFailed(Exception):
    """An operation that failed in the service, carried back to the command with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
