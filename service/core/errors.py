"""Errors a user can act on. Their message says what was wrong and what would be valid.

Every command maps them the same way, in-process and through the service: a user error is
`UserError` (and its kinds: NotFound, DataDirBusy, StorageError, the queue's NotLeased, the ranking
checks' RankingError), exit code 2 (HTTP 4xx; 503 for a damaged database). Two more are treated
alike where they surface: reward/'s `ConfigError` (the trainers run on machines without the service,
so they cannot import this module) and the low-level kinds in CLIENT_ERRORS (a value DuckDB cannot
store, text that is not Unicode). A failure of the work itself (`RuntimeError`: a vLLM server that
would not start, sampling stopped part-way) is exit code 1.
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


class StorageError(UserError):
    """The database file cannot be read or written: cut short, overwritten, not a DuckDB file, or on a
    full disk. The message names the file, what is wrong and what to do."""


# DuckDB's words for a file it cannot trust (raised as a plain duckdb.Error, an IOException or a
# FatalException, depending on where the read failed).
_DAMAGE = (
    "corrupt database file",
    "could not read enough bytes",
    "database has been invalidated",
    "deserialize",
)


def is_storage_error(exc: BaseException) -> bool:
    """A DuckDB error about the file itself rather than the query (a lock held elsewhere is not one:
    that is DataDirBusy)."""
    low = str(exc).lower()
    if not isinstance(exc, duckdb.Error) or "could not set lock" in low or "extension" in low:
        return False  # held by another process (DataDirBusy), or an extension DuckDB could not load
    return isinstance(exc, duckdb.IOException | duckdb.FatalException) or any(w in low for w in _DAMAGE)


def storage_problem(path: object, exc: BaseException | None = None, what: str | None = None) -> StorageError:
    """The user's message for a storage error on the database `path`: DuckDB's own words (`exc`) or
    what a check found (`what`)."""
    first = what or (str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__)
    low = first.lower()
    if "no space left" in low or "disk is full" in low:
        return StorageError(
            f"cannot write the database {path}: the disk is full ({first}); nothing was written. "
            "Free space on that disk and run the command again"
        )
    if "permission denied" in low:
        return StorageError(
            f"cannot use the database {path}: permission denied ({first}); run rankloop as the user "
            "that owns it, or use another --data directory"
        )
    return StorageError(
        f"the database {path} is damaged: {first}"
        + ("" if what else " (a file cut short by an interrupted copy or a full disk, or overwritten)")
        + ". rankloop changed nothing. Restore a backup into a new data directory (`rankloop --data NEW "
        "restore BACKUP`), or use another --data directory; the rankings of every snapshot are also kept as "
        "Parquet files in the data directory's snapshots/ folder"
    )


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
    if is_storage_error(exc):  # one that escaped the store's own translation
        return str(storage_problem("rankloop.duckdb", exc))
    return str(exc)


def exit_code(exc: BaseException) -> int | None:
    """2 for an error the user can fix, 1 for a failure of the work itself, None for a bug."""
    if isinstance(exc, (*CLIENT_ERRORS, OSError)) or is_storage_error(exc):
        return 2
    if isinstance(exc, RuntimeError):
        return 1
    return None


class CommandFailed(Exception):
    """An operation that failed in the service, carried back to the command with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
