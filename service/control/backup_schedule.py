"""Scheduled backups while the service runs (`backup.every_h`, `backup.keep`, `backup.dir`)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from service.core.paths import DataPaths
from service.core.store import Store
from service.data.backup import SCHEDULED, backup_name, make_backup, prune


class BackupSchedule:
    """`backup.every_h`: a backup into `backup.dir` every so many hours while the service runs, keeping
    the newest `backup.keep`. A failed one is logged and tried again at the next time."""

    def __init__(self, store: Store, paths: DataPaths, every_h: float, folder: Path, keep: int):
        self.store, self.paths, self.every_s, self.folder, self.keep = (
            store,
            paths,
            every_h * 3600,
            folder,
            keep,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backups")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        log = logging.getLogger("rankloop.backup")
        while not self._stop.wait(self.every_s):
            try:
                made = make_backup(self.store, self.paths, self.folder / (SCHEDULED + backup_name()))
                log.info(
                    "backup made: %s; removed: %s", made["path"], prune(self.folder, self.keep) or "none"
                )
            except Exception as e:  # noqa: BLE001 - the schedule outlives one failure, which it reports
                log.error("scheduled backup failed: %s", e)
