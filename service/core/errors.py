"""Errors a user can act on. Their message says what was wrong and what would be valid.

Every command maps them the same way, in-process and through the service: a user error
(`UserError`, `ConfigError`, `ValueError`) is exit code 2 (HTTP 4xx); a failure of the
work itself (`RuntimeError`: a vLLM server that would not start, sampling stopped part-way)
is exit code 1.
"""

from __future__ import annotations

import duckdb


class UserError(Exception):
    """A problem a user can act on (bad input, a missing row, an unreadable data directory): the one type for
    every user error. The message names what was wrong and what would be valid."""


class DataDirBusy(UserError):
    """Another process holds the database file."""


class NotFound(UserError):
    """An id that names nothing (a model, a job, a task)."""


# Errors in what a client sent, wherever they surface: a value that does not fit the database
# (an id of 2**200: duckdb.DataError or InvalidInputException), a number too large to compute with, text that is not valid
# Unicode (a lone surrogate: UnicodeError is a ValueError).
CLIENT_ERRORS = (UserError, ValueError, OverflowError, duckdb.DataError, duckdb.InvalidInputException)


def describe(exc: BaseException) -> str:
    """The message a user sees: the error's own, made plain for the low-level kinds."""
    if isinstance(exc, UnicodeError):
        return "text must be valid Unicode (it holds a lone surrogate or an undecodable byte)"
    if isinstance(exc, duckdb.DataError | duckdb.InvalidInputException | OverflowError):
        return f"a value is out of range: {str(exc).splitlines()[0]} (integers must fit in 64 bits)"
    return str(exc)


def exit_code(exc: BaseException) -> int | None:
    """2 for an error the user can fix, 1 for a failure of the work itself, None for a bug."""
    if isinstance(exc, (*CLIENT_ERRORS, OSError)):
        return 2
    if isinstance(exc, RuntimeError):
        return 1
    return None


class CommandFailed(Exception):
    """An operation that failed in the service, carried back to the command with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
