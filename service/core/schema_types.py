"""What a migration is, and the shape every table shares (service/core/schema.py lists the migrations)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def table_sql(name: str, columns: str) -> str:
    """Every table: a sequence-backed id, its columns, and created_at."""
    return (
        f"CREATE SEQUENCE IF NOT EXISTS seq_{name} START 1;\n"
        f"CREATE TABLE {name} (\n"
        f"  id BIGINT PRIMARY KEY DEFAULT nextval('seq_{name}'),\n"
        f"  {columns},\n"
        f"  created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp\n);\n"
    )
