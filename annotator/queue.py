"""The ranking queue: which task an annotator gets next, leases, and storing a submission.

Every path that ranks ends here, so they obey the same rules: the Gradio app, the JSON API,
simulated annotators and model judges in `submit()` (leased tasks); imports and clients' votes
in `record_rankings()` (tasks made for the ranking, in the caller's transaction). Both build
the row with `annotator.ranking.ranking_row` and store it with `ranking_store.insert_rankings`.
Accounts that rank without a person (the `import` account, a key's votes) come from
`account_id()`, which makes them through `annotator.accounts`.

* a task needs `required_rankings` (R) rankings; skips do not count;
* an annotator never gets the same task twice (ranked or skipped);
* a handed-out task is leased to its annotator for `lease_s`; live leases count
  against R, so no more than R people work on a task at once; an expired lease
  returns the task to the queue; leases live in memory (`queue_book`), so a restart
  returns every leased task too;
* order: higher `priority` first, then fewest rankings, then oldest;
* gold tasks (known correct ranking) are mixed in at `gold_rate` and each answer's
  agreement with gold is stored;
* a ranking is checked (every candidate ranked, 1..K, an order) and stored dense; flags
  are checked; a skip carries its reason;
* a repeated `submission_id` stores nothing new and answers as the first time; one used for
  another task or annotator is refused;
* a submit is acknowledged only once its ranking is committed; submits that arrive
  together share one commit.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from annotator import quiz
from annotator.accounts import add_annotator, get_annotator
from annotator.guidelines import current
from annotator.queue_book import Lease, Pending, QueueBook, book_for
from annotator.ranking import RankingError, Submission, normalize_ranks, ranking_row
from annotator.ranking_store import insert_rankings
from annotator.task_views import task_views
from service.core.enums import Role
from service.core.errors import UserError
from service.core.metrics import SUBMIT_LATENCY
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.core.tracing import TRACER

PREFETCH = 64  # task views read together when the next task's is not cached
_RNG = random.Random()


class NotLeased(UserError):
    """The task is not (or no longer) the annotator's to rank; nothing was stored."""


@dataclass(frozen=True)
class SubmitResult:
    ranking_id: int | None  # None for a quiz answer (stored apart: annotator/quiz.py)
    task_id: int
    duplicate: bool  # True when this submission_id had already been stored
    quiz: dict | None = None  # a quiz answer's progress, and the attempt's result once it is complete


def _now() -> datetime:
    return datetime.now(UTC)


def _reused(sid: str) -> RankingError:
    return RankingError(
        f"submission id {sid!r} was already used for another task; make a new id for each task"
    )


def next_task(
    store: Store, annotator_id: int, settings: AnnotationOptions, rng: random.Random | None = None
) -> dict | None:
    """Lease the annotator's next task (or return the one they already hold); None when none is left.
    An annotator who must still pass the qualification quiz gets its next question instead."""
    if quiz.required(store, annotator_id, settings):
        return quiz.next_question(store, annotator_id, settings)
    now = _now()
    rng = rng or _RNG
    book = book_for(store)
    role = book.role(annotator_id)
    # Gold tasks met in the quiz are not quality checks for this account any more.
    quizzed = quiz.answered_tasks(store, annotator_id) if settings.quiz_size and settings.gold_rate else set()
    upcoming: list[int] = []
    with book.lock:
        held = book.held(annotator_id, now)
        if held:
            task_id, lease = held
        else:
            mine = book.answered.get(annotator_id, set())
            gold_id = None
            if settings.gold_rate > 0 and rng.random() < settings.gold_rate:
                gold = [
                    tid
                    for tid, t in book.tasks.items()
                    if t.gold is not None and tid not in mine and tid not in quizzed
                ]
                gold_id = rng.choice(gold) if gold else None
            if gold_id is not None:
                task_id = gold_id
            else:
                open_ids = book.open_tasks(annotator_id, now, settings.judges_count, role == Role.JUDGE)
                if not open_ids:
                    return None
                # The next tasks in order go to the next annotators: their views are read with this one's.
                upcoming = heapq.nsmallest(
                    PREFETCH, open_ids, key=lambda t: book.order_key(t, settings.judges_count)
                )
                task_id = upcoming[0]
            lease = Lease(now, now + timedelta(seconds=settings.lease_s))
            book.lease(task_id, annotator_id, lease)
    # Simulated annotators judge instruction-following, so they see which system prompt wrote what.
    show = settings.show_sources or role == Role.SIMULATED
    with book.lock:
        cached = (task_id, show) in book.views
    view = task_views(store, [task_id] if cached else [task_id, *upcoming], show).get(task_id)
    if view is None:
        raise RankingError(f"task {task_id} has no candidates to show; an admin should look at it")
    with book.lock:
        batch = book.tasks[task_id].batch if task_id in book.tasks else None
    return view | {"lease_expires_at": lease.expires.isoformat(), "guidelines": current(store, batch)}


def submit(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions | None = None
) -> SubmitResult:
    """Validate and store one submission; it returns once the ranking is durable (group commit).
    NotLeased/RankingError leave the database unchanged."""
    with (
        SUBMIT_LATENCY.time(),
        TRACER.start_as_current_span("submit ranking", attributes={"rankloop.task_id": sub.task_id}),
    ):
        if settings is not None and settings.quiz_size > 0:
            if quiz.required(store, annotator_id, settings):
                return SubmitResult(None, sub.task_id, *quiz.answer(store, annotator_id, sub, settings))
            earlier = quiz.earlier_answer(store, annotator_id, sub, settings)  # a retry of the passing answer
            if earlier is not None:
                return SubmitResult(None, sub.task_id, *earlier)
        return _submit(store, annotator_id, sub, settings)


def _submit(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions | None
) -> SubmitResult:
    settings = settings or AnnotationOptions()
    book = book_for(store)
    role = book.role(annotator_id)  # known to the book before the ranking is counted
    sid = sub.submission_id
    while True:
        refused: RankingError | NotLeased | None = None
        with book.lock:
            waiting, prior = book.pending.get(sid), book.recent.get(sid)
            if waiting is None and prior is None:
                try:
                    item = _validate(store, book, annotator_id, sub, settings, role)
                except (RankingError, NotLeased) as e:
                    refused = e
                else:
                    book.pending[sid] = item
                    book.answered.setdefault(annotator_id, set()).add(sub.task_id)
                    break
        if waiting is not None:  # the same id is being stored (a retry racing its first send)
            waiting.done.wait()
            if waiting.error is not None or waiting.ranking_id is None:
                continue  # the first send failed: this one is checked on its own
            prior = (waiting.ranking_id, waiting.task_id, waiting.annotator_id)
        if prior is None:  # refused, unless it retries a ranking stored before the book's memory
            prior = stored_submissions(store.cursor(), [sid]).get(sid)
            if prior is None:
                assert refused is not None  # neither waiting nor stored: _validate refused it
                raise refused
        if (prior[1], prior[2]) != (sub.task_id, annotator_id):
            raise _reused(sid)
        return SubmitResult(prior[0], sub.task_id, duplicate=True)
    book.commit(item)
    if isinstance(
        item.error, duckdb.ConstraintException
    ):  # the unique key: another task's ranking has this id
        raise _reused(sid)
    if item.error is not None:
        raise item.error
    assert item.ranking_id is not None  # commit() sets one or an error
    return SubmitResult(item.ranking_id, sub.task_id, duplicate=False)


def _validate(
    store: Store,
    book: QueueBook,
    annotator_id: int,
    sub: Submission,
    settings: AnnotationOptions,
    role: str | None,
) -> Pending:
    """Check a submission against the book (its lock held) and build its row."""
    judges_count = settings.judges_count
    task = book.tasks.get(sub.task_id)
    if task is None:
        raise RankingError(f"there is no task {sub.task_id}")
    now = _now()
    guideline = current(store, task.batch)
    row = ranking_row(
        sub,
        task.k,
        task.gold,
        annotator_id,
        now,
        rubric=settings.rubric,
        guideline_id=guideline["id"] if guideline else None,
    )
    if sub.task_id in book.answered.get(annotator_id, set()):
        raise NotLeased(f"you already answered task {sub.task_id}; ask for the next task")
    lease = book.leases.get(sub.task_id, {}).get(annotator_id)
    if lease is None:
        raise NotLeased(f"task {sub.task_id} is not leased to you; ask for the next task to get one")
    if lease.expires <= now and row["ranks"] is not None and task.gold is None:
        # Counted as the capacity check counts: judges only where they count toward R.
        taken = book.done(task, judges_count) + book.holding(annotator_id, now, judges_count).get(
            sub.task_id, 0
        )
        if taken >= task.required:
            raise NotLeased(
                f"your lease on task {sub.task_id} expired and others have completed or taken it "
                "since; your ranking was not stored. Ask for the next task."
            )
    row["time_spent_s"] = (now - lease.created).total_seconds()
    overlap = None
    if settings.overlap_tau is not None and role != Role.JUDGE:
        overlap = (settings.overlap_tau, settings.overlap_cap)
    return Pending(row, sub.task_id, annotator_id, overlap=overlap)


def stored_submissions(
    cur: duckdb.DuckDBPyConnection, sids: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """submission id -> (ranking id, task id, annotator id) of those stored already."""
    if not sids:
        return {}
    rows = cur.execute(
        "SELECT submission_id, id, task_id, annotator_id FROM rankings "
        "WHERE submission_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(sids)],
    ).fetchall()
    return {sid: (rid, tid, aid) for sid, rid, tid, aid in rows}


def record_rankings(
    cur: duckdb.DuckDBPyConnection, rankings: Sequence[tuple[int, Submission]]
) -> list[SubmitResult]:
    """Store (annotator id, submission) pairs that no lease handed out, imports' and clients' votes,
    in the caller's transaction `cur`, by submit()'s rules: the same checks and messages
    (RankingError), ranks stored dense, agreement with gold, an annotator answers a task once, and
    a submission id stored before for the same task and annotator stores nothing new (its result
    says duplicate) while one used for another is refused. On an error nothing of the batch is
    stored and the caller's transaction should roll back (`store.write()` does)."""
    if not rankings:
        return []
    task_ids = sorted({sub.task_id for _, sub in rankings})
    tasks = {
        tid: (k, gold)
        for tid, k, gold in cur.execute(
            "SELECT id, len(sample_ids), gold_ranks FROM tasks WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [task_ids],
        ).fetchall()
    }
    answered = set(
        cur.execute(
            "SELECT task_id, annotator_id FROM rankings WHERE task_id IN (SELECT unnest(?::BIGINT[]))",
            [task_ids],
        ).fetchall()
    )
    accounts = {
        aid
        for (aid,) in cur.execute(
            "SELECT id FROM annotators WHERE id IN (SELECT unnest(?::BIGINT[]))",
            [sorted({aid for aid, _ in rankings})],
        ).fetchall()
    }
    prior: dict[str, tuple[int | None, int, int]] = dict(
        stored_submissions(cur, [sub.submission_id for _, sub in rankings])
    )
    now = _now()
    rows, duplicate = [], []
    for annotator_id, sub in rankings:
        sid = sub.submission_id
        earlier = prior.get(sid)
        if earlier is not None:
            if (earlier[1], earlier[2]) != (sub.task_id, annotator_id):
                raise _reused(sid)
            duplicate.append(True)
            continue
        task = tasks.get(sub.task_id)
        if task is None:
            raise RankingError(f"there is no task {sub.task_id}")
        row = ranking_row(sub, task[0], task[1], annotator_id, now)
        if annotator_id not in accounts:
            raise UserError(f"there is no annotator with id {annotator_id}")
        if (sub.task_id, annotator_id) in answered:
            raise RankingError(
                f"annotator {annotator_id} already answered task {sub.task_id}; a task is ranked once by each"
            )
        answered.add((sub.task_id, annotator_id))
        prior[sid] = (None, sub.task_id, annotator_id)  # a repeat later in this batch is a duplicate
        rows.append(row)
        duplicate.append(False)
    stored = insert_rankings(cur, rows)
    ids = {sid: found[0] for sid, found in prior.items() if found[0] is not None} | stored
    return [
        SubmitResult(ids[sub.submission_id], sub.task_id, duplicate=dup)
        for (_, sub), dup in zip(rankings, duplicate, strict=True)
    ]


def account_id(store: Store, name: str, role: Role) -> int:
    """The id of the account `name` that ranks without a person (`import`, a key's votes), made with
    `role` by `annotator.accounts` when it is new (in a transaction of its own: call this before the
    one that ranks). An account of that name with another role is refused."""
    acct = get_annotator(store, name)
    if acct is None:
        try:
            return add_annotator(store, name, role)
        except UserError:
            acct = get_annotator(store, name)  # made meanwhile by another request
            if acct is None:
                raise
    if acct["role"] != role:
        raise UserError(
            f"the account {name!r} exists with role {acct['role']!r}, so it cannot hold {role} rankings; "
            "rename that account (or use another --data directory)"
        )
    return acct["id"]


def progress(store: Store, annotator_id: int, settings: AnnotationOptions | None = None) -> dict[str, int]:
    """Done today, done in total, and tasks still in the queue for this annotator."""
    now = _now()
    judges_count = settings.judges_count if settings else False
    book = book_for(store)
    role = book.role(annotator_id)
    with book.lock:
        queue = len(book.open_tasks(annotator_id, now, judges_count, role == Role.JUDGE))
        day, today = book.today.get(annotator_id, (None, 0))
        total = len(book.answered.get(annotator_id, set())) - sum(
            1 for p in book.pending.values() if p.annotator_id == annotator_id
        )
    return {"today": today if day == now.date() else 0, "total": total, "queue": queue}


def mark_gold(store: Store, task_id: int, ranks: list[int]) -> None:
    """Give a task its known correct ranking (an admin action); it then serves as a gold task."""
    with store.write() as cur:
        row = cur.execute("SELECT len(sample_ids) FROM tasks WHERE id = ?", [task_id]).fetchone()
        if row is None:
            raise RankingError(f"there is no task {task_id}")
        cur.execute("UPDATE tasks SET gold_ranks = ? WHERE id = ?", [normalize_ranks(ranks, row[0]), task_id])
