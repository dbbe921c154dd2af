"""The queue's state in memory: what each task needs, who answered what, live leases, submits in flight.

Choosing a task and checking a submission used to cost several queries over every ranking
and a committed lease row per task handed out. The book keeps what those queries computed
in memory, one per open `Store` (DuckDB lets one process hold the database, so one book
sees every write):

* rankings enter the book only from the database (`sync` reads rows with a higher id),
  so a ranking stored by any path (a submit, an import) is counted once;
* tasks' order keys and gold flags are read again whenever someone other than the book
  committed a write (`Store.generation` moved), so an `UPDATE tasks SET priority` counts;
* leases live only here: a crash returns leased tasks to the queue, as expired leases would;
* a submit waits in `pending` (counted against R like the lease it replaces) until its group
  commit is durable; only then is it acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import duckdb

from annotator.overlap import extend
from annotator.ranking_store import insert_rankings
from service.core.enums import Role
from service.core.metrics import COMMIT_BATCH, COMMIT_LATENCY, LEASE_EXPIRIES, RANKINGS
from service.core.store import Store

RECENT = 20_000  # committed submission ids remembered, so a retry racing its own commit is a duplicate
VIEWS = 4_096  # task views cached (a task's candidates never change)


@dataclass
class TaskState:
    priority: float
    created_at: datetime
    required: int
    k: int
    gold: list[int] | None
    batch: str | None = None
    done_people: int = 0  # completed (not skipped) rankings by people and simulated annotators
    done_all: int = 0  # ... and by model judges


@dataclass(frozen=True)
class Lease:
    created: datetime
    expires: datetime


@dataclass
class Pending:
    """A validated submission waiting for its group commit."""

    row: dict
    task_id: int
    annotator_id: int
    done: threading.Event = field(default_factory=threading.Event)
    ranking_id: int | None = None
    error: BaseException | None = None
    overlap: tuple[float, int] | None = None  # (tau, cap) when adaptive overlap is on (annotator/overlap.py)


class QueueBook:
    def __init__(self, store: Store):
        self.store = store
        self.lock = threading.Lock()
        self.commit_lock = threading.Lock()  # one group commit at a time
        self.tasks: dict[int, TaskState] = {}
        self.unfinished: set[int] = set()  # regular tasks that people's rankings leave short of R
        self.answered: dict[int, set[int]] = {}  # annotator -> tasks ranked or skipped (pending included)
        self.today: dict[int, tuple[date, int]] = {}  # annotator -> (day, rankings that day)
        self.roles: dict[int, str] = {}
        self.leases: dict[int, dict[int, Lease]] = {}  # task -> annotator -> lease
        self.newest: dict[int, int] = {}  # annotator -> task of their newest lease
        self.pending: OrderedDict[str, Pending] = OrderedDict()  # submission id -> waiting submit
        self.recent: OrderedDict[str, tuple[int, int, int]] = (
            OrderedDict()
        )  # id -> (ranking, task, annotator)
        self.views: OrderedDict[tuple[int, bool], dict] = OrderedDict()
        self.last_task = self.last_ranking = 0
        self.synced_gen = self.fields_gen = -1

    # -- reading the database ----------------------------------------------

    def sync(self, wait: bool = True) -> None:
        """Bring the book up to the database's committed state (cheap when nothing changed). With
        `wait=False` a sync that would wait for a commit in progress is skipped: the book's own
        commits count themselves, and another writer's rows are read on the next call."""
        store = self.store
        if store.generation == self.synced_gen == self.fields_gen:
            return
        if not store.write_lock.acquire(blocking=wait):
            return
        try:  # writers wait while we read, so the rows below are one consistent state
            gen = store.generation
            if gen == self.synced_gen == self.fields_gen:
                return
            cur = store.cursor()
            new_tasks = cur.execute(
                "SELECT id, priority, created_at, required_rankings, len(sample_ids), gold_ranks, batch FROM tasks "
                "WHERE id > ? ORDER BY id",
                [self.last_task],
            ).fetchall()
            # Someone else wrote: order keys and gold may have changed.
            fields = (
                cur.execute("SELECT id, priority, required_rankings, gold_ranks FROM tasks").fetchall()
                if self.fields_gen != gen
                else []
            )
            rankings = cur.execute(
                """SELECT r.id, r.task_id, r.annotator_id, r.skipped, r.created_at, a.role FROM rankings r
                   JOIN annotators a ON a.id = r.annotator_id WHERE r.id > ? ORDER BY r.id""",
                [self.last_ranking],
            ).fetchall()
            with self.lock:
                for tid, prio, created, required, k, gold, batch in new_tasks:
                    self.tasks[tid] = TaskState(prio, created, required, k, gold, batch)
                    self._reopen(tid)
                    self.last_task = tid
                for tid, prio, required, gold in fields:
                    t = self.tasks[tid]
                    t.priority, t.required, t.gold = prio, required, gold
                    self._reopen(tid)
                for rid, tid, aid, skipped, created, role in rankings:
                    self._count(tid, aid, skipped, created.astimezone(UTC).date(), role)
                    self.last_ranking = rid
                self.synced_gen = self.fields_gen = gen
        finally:
            store.write_lock.release()

    def _reopen(self, tid: int) -> None:
        """Keep `unfinished` exact for one task: regular and short of R by people's rankings (judges'
        count too only where the setting says so, which can only make a task fuller)."""
        t = self.tasks[tid]
        if t.gold is None and t.done_people < t.required:
            self.unfinished.add(tid)
        else:
            self.unfinished.discard(tid)

    def _forget_counts(self) -> None:
        """Drop what was read from the database (leases and submits in flight stay): the next sync
        reads every task and ranking again."""
        with self.lock:
            self.tasks, self.unfinished, self.today = {}, set(), {}
            self.answered = {}
            for p in self.pending.values():
                self.answered.setdefault(p.annotator_id, set()).add(p.task_id)
            self.last_task = self.last_ranking = 0
            self.synced_gen = self.fields_gen = -1

    def _count(self, tid: int, aid: int, skipped: bool, day: date, role: str) -> None:
        self.answered.setdefault(aid, set()).add(tid)
        self.roles[aid] = role
        t = self.tasks.get(tid)
        if t is not None and not skipped:
            t.done_all += 1
            t.done_people += role != Role.JUDGE
            self._reopen(tid)
        last_day, n = self.today.get(aid, (day, 0))
        if day >= last_day:
            self.today[aid] = (day, n + 1 if day == last_day else 1)

    def role(self, annotator_id: int) -> str | None:
        role = self.roles.get(annotator_id)
        if role is None:
            role = self.store.scalar("SELECT role FROM annotators WHERE id = ?", [annotator_id])
            if role is not None:
                self.roles[annotator_id] = role
        return role

    # -- questions the queue asks (call with self.lock held) ----------------

    def holding(self, annotator_id: int, now: datetime, judges_count: bool) -> dict[int, int]:
        """Per task, the live leases and submits in flight of annotators other than this one (judges
        only where they count)."""
        counts: dict[int, int] = {}

        def counted(a: int) -> bool:
            return a != annotator_id and (judges_count or self.roles.get(a) != Role.JUDGE)

        for tid, leases in self.leases.items():
            n = sum(1 for a, lease in leases.items() if lease.expires > now and counted(a))
            if n:
                counts[tid] = n
        for p in self.pending.values():  # a submit keeps its lease until committed: count it once
            lease = self.leases.get(p.task_id, {}).get(p.annotator_id)
            if counted(p.annotator_id) and not (lease and lease.expires > now):
                counts[p.task_id] = counts.get(p.task_id, 0) + 1
        return counts

    def done(self, t: TaskState, judges_count: bool) -> int:
        return t.done_all if judges_count else t.done_people

    def open_tasks(self, annotator_id: int, now: datetime, judges_count: bool, for_judge: bool) -> list[int]:
        """Regular tasks this annotator may get: not answered by them and, unless they are a judge that
        does not count, with fewer rankings plus others' leases than they need."""
        mine = self.answered.get(annotator_id, set())
        if for_judge and not judges_count:  # a judge gets every task it has not answered
            return [tid for tid, t in self.tasks.items() if t.gold is None and tid not in mine]
        holding = self.holding(annotator_id, now, judges_count)
        tasks = self.tasks
        return [
            tid
            for tid in self.unfinished - mine
            if self.done(tasks[tid], judges_count) + holding.get(tid, 0) < tasks[tid].required
        ]

    def order_key(self, tid: int, judges_count: bool) -> tuple:
        t = self.tasks[tid]
        return (-t.priority, self.done(t, judges_count), t.created_at, tid)

    def held(self, annotator_id: int, now: datetime) -> tuple[int, Lease] | None:
        """The annotator's newest lease if it is live and its task not answered (they get no new lease
        while they hold one, so an older one has expired)."""
        tid = self.newest.get(annotator_id)
        lease = self.leases.get(tid, {}).get(annotator_id) if tid is not None else None
        if (
            tid is not None
            and lease
            and lease.expires > now
            and tid not in self.answered.get(annotator_id, set())
        ):
            return tid, lease
        return None

    def lease(self, tid: int, annotator_id: int, lease: Lease) -> None:
        """Hand out a lease. The annotator's previous one has expired or been answered (else they would
        have got it back): it is dropped, so the book holds about one lease per annotator."""
        before = self.newest.get(annotator_id)
        old = self.leases.get(before, {}).get(annotator_id) if before is not None else None
        if old and old.expires <= lease.created and before not in self.answered.get(annotator_id, ()):
            LEASE_EXPIRIES.inc()  # it ran out unanswered (counted when its annotator asks again)
        if before is not None and before != tid:
            self._unlease(before, annotator_id)
        self.leases.setdefault(tid, {})[annotator_id] = lease
        self.newest[annotator_id] = tid

    def _unlease(self, tid: int, annotator_id: int) -> None:
        leases = self.leases.get(tid)
        if leases is not None:
            leases.pop(annotator_id, None)
            if not leases:
                del self.leases[tid]

    def task_counts(self, now: datetime) -> dict[str, int]:
        """Regular tasks by state, for the metrics: open, leased (a live lease or a submit in flight),
        completed (R rankings by people)."""
        self.sync(wait=False)
        with self.lock:
            regular = sum(1 for t in self.tasks.values() if t.gold is None)
            busy = {t for t, ls in self.leases.items() if any(x.expires > now for x in ls.values())}
            busy |= {p.task_id for p in self.pending.values()}
            leased = len(busy & self.unfinished)
            return {
                "open": len(self.unfinished) - leased,
                "leased": leased,
                "completed": regular - len(self.unfinished),
            }

    # -- group commit ---------------------------------------------------------

    def commit(self, item: Pending) -> None:
        """Wait until `item` is stored durably; the first waiter commits everything queued by then."""
        with self.commit_lock:
            if item.done.is_set():
                return
            with self.lock:
                batch = [p for p in self.pending.values() if p.ranking_id is None and p.error is None]
            try:
                self._insert(batch)
            except Exception:  # noqa: BLE001 - one bad row must not fail the others: store them one by one
                for p in batch:
                    try:
                        self._insert([p])
                    except Exception as e:  # noqa: BLE001 - handed to the submit that sent it
                        p.error = e
            with self.lock:
                for p in batch:
                    sid = p.row["submission_id"]
                    self.pending.pop(sid, None)
                    if p.error is None and p.ranking_id is None:
                        p.error = RuntimeError(f"submission {sid!r} was not stored; send it again")
                    if p.error is None and p.ranking_id is not None:
                        self._unlease(p.task_id, p.annotator_id)
                        self.recent[sid] = (p.ranking_id, p.task_id, p.annotator_id)
                    else:
                        self.answered.get(p.annotator_id, set()).discard(p.task_id)
                while len(self.recent) > RECENT:
                    self.recent.popitem(last=False)
            for p in batch:
                p.done.set()

    def _insert(self, batch: list[Pending]) -> None:
        """Store a batch in one transaction and count it in the book."""
        if not batch:
            return
        store = self.store
        start = time.perf_counter()
        with store.write_lock:
            in_sync, fresh = self.synced_gen == store.generation, self.fields_gen == store.generation
            with store.write() as cur:
                stored = insert_rankings(cur, [p.row for p in batch])
                grown = self._overlap(cur, batch)
            # Committed: from here nothing may report these rankings as not stored.
            for p in batch:
                p.ranking_id = stored[p.row["submission_id"]]
                RANKINGS.labels(self.roles.get(p.annotator_id, Role.ANNOTATOR)).inc()
            COMMIT_BATCH.observe(len(batch))
            COMMIT_LATENCY.observe(time.perf_counter() - start)
            try:
                self._count_batch(batch, in_sync, fresh)
                with self.lock:
                    for tid, required in grown.items():
                        if required is not None:
                            self.tasks[tid].required = required
                            self._reopen(tid)
            except Exception:  # noqa: BLE001 - the book is unsure of its counts: it reads them all again
                self._forget_counts()

    def _overlap(self, cur: duckdb.DuckDBPyConnection, batch: list[Pending]) -> dict[int, int | None]:
        """Adaptive overlap for the regular tasks this batch of people's rankings may complete."""
        settings = next((p.overlap for p in batch if p.overlap is not None), None)
        if settings is None:
            return {}
        arriving: dict[int, int] = {}
        for p in batch:
            if p.overlap is not None and not p.row["skipped"]:
                arriving[p.task_id] = arriving.get(p.task_id, 0) + 1
        with self.lock:
            maybe = {
                tid: t.required
                for tid, n in arriving.items()
                if (t := self.tasks.get(tid)) is not None
                and t.gold is None
                and t.done_people + n >= t.required
            }
        return extend(cur, maybe, *settings)

    def _count_batch(self, batch: list[Pending], in_sync: bool, fresh: bool) -> None:
        store = self.store
        if not in_sync:  # someone else wrote since the last sync: read it all from the database
            self.sync()
            return
        # Nothing but this batch was written since the last sync: count it without reading it back.
        with self.lock:
            for p in batch:
                self._count(
                    p.task_id,
                    p.annotator_id,
                    p.row["skipped"],
                    p.row["created_at"].date(),
                    self.roles.get(p.annotator_id, Role.ANNOTATOR),
                )
            self.last_ranking = max([self.last_ranking, *(p.ranking_id for p in batch if p.ranking_id)])
            self.synced_gen = store.generation
            if fresh:  # and it changed no task
                self.fields_gen = store.generation


_BOOKS_LOCK = threading.Lock()


def book_for(store: Store) -> QueueBook:
    """The store's book, synced with the database (a new book waits for that; later calls do not)."""
    with _BOOKS_LOCK:
        book = store.caches.get("queue_book")
        if book is None:  # kept on the store, so both go together
            book = store.caches["queue_book"] = QueueBook(store)
    book.sync(wait=book.synced_gen < 0)
    return book
