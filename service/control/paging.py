"""Pages of a listing operation: `limit` and `offset` on every row of the command table that lists
(jobs, models, accounts, keys, ...), so a client reads a long list a page at a time (the SDK's
`pages()`, the CLI's --limit/--offset). Rows come in the operation's own stable order."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, Field, create_model

from service.control.context import Context

MAX_PAGE = 10_000


def paged(command: Any) -> Any:
    """The command-table row with `limit` and `offset` added to its parameters and applied to its rows."""
    params: type[BaseModel] = create_model(
        command.params.__name__ + "Page",
        __base__=command.params,
        limit=(int | None, Field(None, ge=1, le=MAX_PAGE, description="at most this many rows (a page)")),
        offset=(int, Field(0, ge=0, description="rows to skip first (the pages before this one)")),
    )
    run = command.run

    def page(ctx: Context, p: Any) -> list:
        rows = list(run(ctx, p))
        end = None if p.limit is None else p.offset + p.limit
        return rows[p.offset : end]

    return replace(command, params=params, run=page)
