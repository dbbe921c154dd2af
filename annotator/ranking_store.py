"""The one INSERT of rankings, shared by every path that stores them (the queue's group commit, imports,
clients' votes): small batches as one statement, large ones through Arrow."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from service.core.store import registered

ARROW_ROWS = 64  # from this many rows on, an insert goes through Arrow: binding every value costs more

RANKING_COLUMNS = pa.schema(
    [
        ("task_id", pa.int64()),
        ("annotator_id", pa.int64()),
        ("ranks", pa.list_(pa.int32())),
        ("skipped", pa.bool_()),
        ("skip_reason", pa.string()),
        ("flags", pa.string()),
        ("rationale", pa.string()),
        ("time_spent_s", pa.float64()),
        ("submission_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("gold_agreement", pa.float64()),
        ("strengths", pa.list_(pa.string())),
        ("attributes", pa.string()),
        ("guideline_id", pa.int64()),
    ]
)


def insert_rankings(cur: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """The one INSERT of rankings, in the caller's transaction: rows as `annotator.ranking.ranking_row`
    makes them. Returns submission id -> ranking id. A submission id stored before breaks the unique
    key (duckdb.ConstraintException)."""
    if not rows:
        return {}
    cols = RANKING_COLUMNS.names
    if len(rows) < ARROW_ROWS:  # one statement for the batch: a statement costs more than a row
        values = ", ".join(f"({', '.join('?' for _ in cols)})" for _ in rows)
        found = cur.execute(
            f"INSERT INTO rankings ({', '.join(cols)}) VALUES {values} RETURNING submission_id, id",
            [r[c] for r in rows for c in cols],
        ).fetchall()
        return dict(found)
    with registered(cur, "_rankloop_rankings", pa.Table.from_pylist(rows, schema=RANKING_COLUMNS)):
        found = cur.execute(
            f"INSERT INTO rankings ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _rankloop_rankings "
            "RETURNING submission_id, id"
        ).fetchall()
    return dict(found)
