"""`rankloop backup` (through the running service, or on the database when none runs) and
`rankloop restore BACKUP` (into an empty --data directory; no service may run there)."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli.client import connect
from service.cli.tree import CommandTree, op_params
from service.core.settings import Settings
from service.data.backup import restore_backup


def cmd_backup(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("backup", **op_params(args, "backup"))
    print(
        f"backup written to {r['path']}: the database (schema {r['schema_version']}), {r['snapshots']} snapshots"
        f"{', the models kept in the data directory' if r['models'] else ''}; {r['files']} files, each "
        "with its SHA-256 in manifest.json"
    )


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    r = restore_backup(Path(args.backup), settings.data_dir)
    counts = ", ".join(f"{n} {t}" for t, n in r["counts"].items() if t != "open_tasks")
    print(f"restored the backup of {r['created_at']} into {r['path']}: {counts}")


def add_parsers(tree: CommandTree) -> None:
    tree.command(
        "backup",
        cmd_backup,
        "a consistent copy of the data directory, taken while the service runs (annotators go on)",
        op="backup",
    )
    p = tree.command(
        "restore", cmd_restore, "restore a backup into an empty --data directory (its files checked first)"
    )
    p.add_argument("backup", help="the backup's directory (what `rankloop backup` printed)")
