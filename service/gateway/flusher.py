"""Counters and logs the gateway keeps in memory and writes in batches, from a background thread."""

from __future__ import annotations

import threading


class PeriodicFlush:
    """Calls `tick()` (by default `flush()`) every `every_s` seconds, and `flush()` once more on stop."""

    def __init__(self, every_s: float, name: str):
        self._every_s, self._name = every_s, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Held from taking the waiting rows to their commit: a flush that returns has written everything
        # added before it was called, even if the background thread had taken those rows.
        self.flush_lock = threading.Lock()
        self.last_error: str | None = None

    def flush(self) -> None:
        raise NotImplementedError

    def tick(self, beat: int) -> None:
        self.flush()

    def start(self) -> None:
        def loop() -> None:
            beat = 0
            while not self._stop.wait(self._every_s):
                beat += 1
                try:
                    self.tick(beat)
                except Exception as e:  # noqa: BLE001 - the thread must outlive one failed write
                    self.last_error = repr(e)

        self._thread = threading.Thread(target=loop, daemon=True, name=self._name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
