"""A gateway replica's traffic, on disk until the service has stored it.

Every logged request is a JSON line appended to `<spool>/traffic.jsonl` with one `write` (the page
cache keeps it if the process is killed; the sender fsyncs each batch before it sends it):

    {"begun": TOKEN, "row": {...}}            a request went to a model
    {"seq": N, "begun": TOKEN, "row": {...}}  it ended: its whole row, numbered 1, 2, 3...
    {"cancel": TOKEN}                         it never reached a model (not logged)

The service stores a row only if its number is above the last it stored for this replica, in the
transaction that records the new last one, so a resend after a lost answer or a restart stores
nothing twice (service/gateway/hub.py). At start a request that began and never ended (the process
died mid-answer) is numbered as a row of its own with status 502, so it is logged once too.
`acked` holds the last number the service stored; the file is rewritten without what it acknowledged
once that is most of it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from service.core.errors import UserError
from service.core.paths import write_atomic

DIED = 502  # the status a request gets when its gateway died before the answer ended
COMPACT_BYTES = 4 << 20


class Spool:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(root / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise UserError(
                f"another gateway is using the spool {root}; give each gateway its own --spool"
            ) from None
        ident = root / "replica.id"
        if not ident.exists():
            write_atomic(ident, uuid.uuid4().hex.encode())
        self.replica = ident.read_text().strip()
        self.path, self._acked_path = root / "traffic.jsonl", root / "acked"
        self.acked = int(self._acked_path.read_text()) if self._acked_path.exists() else 0
        self._lock = threading.Lock()
        self._open: dict[str, dict] = {}  # begun and not ended: token -> row so far
        self._rows: list[dict] = []  # ended, numbered, not yet acknowledged
        self._seq = self.acked
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        for token, row in list(self._open.items()):  # died mid-answer: logged as such
            self.add({**row, "status": DIED, "prompt_tokens": 0, "completion_tokens": 0}, token)

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("r+b") as f:
            whole = 0  # bytes up to the end of the last whole line
            for line in f:
                if not line.endswith(b"\n"):
                    break
                whole += len(line)
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if "seq" in rec:
                    self._open.pop(rec.get("begun"), None)
                    self._seq = max(self._seq, rec["seq"])
                    if rec["seq"] > self.acked:
                        self._rows.append({**rec["row"], "seq": rec["seq"]})
                elif "cancel" in rec:
                    self._open.pop(rec["cancel"], None)
                else:
                    self._open[rec["begun"]] = rec["row"]
            f.truncate(whole)  # a last line cut short when the process died: what follows starts anew

    def _append(self, rec: dict) -> None:
        os.write(self._fd, (json.dumps(rec, default=str) + "\n").encode())

    def begin(self, row: dict) -> str:
        token = uuid.uuid4().hex
        with self._lock:
            self._open[token] = row
            self._append({"begun": token, "row": row})
        return token

    def cancel(self, token: str | None) -> None:
        with self._lock:
            if self._open.pop(token or "", None) is not None:
                self._append({"cancel": token})

    def add(self, row: dict, token: str | None) -> None:
        """An ended request's row (`created_at` and JSON columns already prepared)."""
        row = {**row, "created_at": _iso(row.get("created_at"))}
        with self._lock:
            self._open.pop(token or "", None)
            self._seq += 1
            self._append({"seq": self._seq, "begun": token, "row": row})
            self._rows.append({**row, "seq": self._seq})

    @property
    def last(self) -> int:
        """The number of the newest row."""
        return self._seq

    def pending(self, limit: int, max_bytes: int) -> list[dict]:
        """The oldest rows the service has not acknowledged (at most `limit`, and `max_bytes` of JSON but
        at least one), on disk for good first."""
        os.fsync(self._fd)
        with self._lock:
            rows = self._rows[:limit]
        size = 0
        for i, row in enumerate(rows):
            size += len(json.dumps(row, default=str))
            if size > max_bytes and i:
                return rows[:i]
        return rows

    def ack(self, seq: int) -> None:
        """The service has stored every row up to `seq`."""
        if seq <= self.acked:
            return
        write_atomic(self._acked_path, str(seq).encode())  # its fsync outside the lock requests take
        with self._lock:
            self.acked = max(self.acked, seq)
            self._rows = [r for r in self._rows if r["seq"] > seq]
            # Rewritten only when little is still needed: the rewrite holds up requests meanwhile.
            if os.fstat(self._fd).st_size > COMPACT_BYTES and len(self._rows) + len(self._open) <= 100:
                self._compact()

    def _compact(self) -> None:
        """Rewrite the file with only what is still needed: open requests and unacknowledged rows."""
        lines = [{"begun": t, "row": r} for t, r in self._open.items()]
        lines += [{"seq": r["seq"], "row": {k: v for k, v in r.items() if k != "seq"}} for r in self._rows]
        write_atomic(self.path, "".join(json.dumps(rec, default=str) + "\n" for rec in lines).encode())
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        os.close(self._lock_fd)


def _iso(when: object) -> str:
    return when.isoformat() if isinstance(when, datetime) else str(when or datetime.now(UTC).isoformat())
