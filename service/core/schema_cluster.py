"""Migration 19: where a job's trainer runs (service/core/schema.py lists every migration)."""

from __future__ import annotations

from service.core.schema_types import Migration

CLUSTER_JOBS = [
    Migration(
        19,
        "a job's launcher (local, accelerate, ray) and its handle on the cluster",
        # launch_ref names the trainer where it runs (`ray:<address>#<submission id>`), so that a service
        # that restarts follows a job still running on the cluster instead of losing it.
        """ALTER TABLE jobs ADD COLUMN launch JSON;
ALTER TABLE jobs ADD COLUMN launch_ref VARCHAR;
""",
    ),
]
