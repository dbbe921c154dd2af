"""How the `rankloop` command prints: aligned tables, and what a finished job did."""

from __future__ import annotations

from typing import Any

from service.core.enums import JobStatus
from service.core.errors import CommandFailed


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def report_job(job: dict[str, Any]) -> None:
    """What a finished job did; a failed or cancelled one raises with its reason."""
    if job["status"] == JobStatus.CANCELLED:
        raise CommandFailed(f"job {job['id']} was cancelled: {job['error']}", 1)
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(f"job {job['id']} failed: {job['error']}", 1)
    result = job["result"] or {}
    for name, r in result.get("per_model", {}).items():
        servers = r.get("requests_per_server") or []
        print(
            f"{name}: {r['generated']} new samples ({r['already_stored']} of {r['requested']} were already "
            f"stored), {r['completion_tokens']} tokens in {r['seconds']:.1f} s ({r['tokens_per_s']:.0f} tok/s)"
            + (
                f" from {len(servers)} servers ({', '.join(map(str, servers))} requests)"
                if len(servers) > 1
                else ""
            )
        )
    if "tasks" in result:
        print(f"built {result['tasks']} ranking tasks")
