"""Annotation guidelines, versioned like system prompts: one for the whole project and, where a batch
needs its own, one per batch (a batch's wins for its tasks). Each version is kept; the newest is shown
above every task (the app, the annotation API) and every ranking stores the id of the one it was made
under, so exports and snapshots say which instructions a ranking followed.

    rankloop guidelines set guidelines.md [--batch NAME]
    rankloop guidelines list [--batch NAME]
"""

from __future__ import annotations

import threading

from service.core.errors import UserError
from service.core.store import Store

MAX_CHARS = 50_000
MAX_CACHED = 1024
_LOCK = threading.Lock()
_CACHE = "guidelines"  # store.caches key: batch ('' = project) -> newest row or None; cleared on a write


def add_guideline(store: Store, text: str, batch: str | None = None) -> dict:
    """Store a new version of the project's (or the batch's) guideline and return it."""
    text = text.strip()
    if not text:
        raise UserError("the guideline is empty; write what annotators should prefer, and why")
    if len(text) > MAX_CHARS:
        raise UserError(f"the guideline has {len(text)} characters; the most is {MAX_CHARS}")
    scope = batch or ""
    with store.write() as cur:
        row = cur.execute(
            """INSERT INTO guidelines (batch, version, text)
               SELECT ?, coalesce(max(version), 0) + 1, ? FROM guidelines WHERE batch = ?
               RETURNING id, batch, version, text, created_at""",
            [scope, text, scope],
        ).fetchone()
    with _LOCK:
        store.caches.pop(_CACHE, None)
    assert row is not None
    return _as_dict(row)


def _as_dict(row: tuple) -> dict:
    gid, batch, version, text, created = row
    return {"id": gid, "batch": batch or None, "version": version, "text": text, "created_at": created}


def current(store: Store, batch: str | None) -> dict | None:
    """The guideline a task of this batch is ranked under: the batch's newest, else the project's."""
    with _LOCK:
        cache = store.caches.setdefault(_CACHE, {})
        if len(cache) > MAX_CACHED:  # batch names come from requests too: keep the cache bounded
            cache.clear()
        for scope in (batch or "", ""):
            if scope not in cache:
                row = (
                    store.cursor()
                    .execute(
                        "SELECT id, batch, version, text, created_at FROM guidelines WHERE batch = ? "
                        "ORDER BY version DESC LIMIT 1",
                        [scope],
                    )
                    .fetchone()
                )
                cache[scope] = _as_dict(row) if row else None
            if cache[scope] is not None:
                return cache[scope]
    return None


def list_guidelines(store: Store, batch: str | None = None) -> list[dict]:
    """Every version, newest first (one batch's, or all)."""
    rows = (
        store.cursor()
        .execute(
            "SELECT id, batch, version, text, created_at FROM guidelines "
            "WHERE ? IS NULL OR batch = ? ORDER BY batch, version DESC",
            [batch, batch],
        )
        .fetchall()
    )
    return [_as_dict(r) for r in rows]
