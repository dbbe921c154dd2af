"""The ranking queue: which task an annotator gets next, leases, and storing a submission.

Every path that ranks (the Gradio app, the JSON API, simulated annotators, imports)
ends in `submit()`, so they obey the same rules:

* a task needs `required_rankings` (R) rankings; skips do not count;
* an annotator never gets the same task twice (ranked or skipped);
* a handed-out task is leased to its annotator for `lease_s`; live leases count
  against R, so no more than R people work on a task at once; an expired lease
  returns the task to the queue; leases live in memory (`queue_book`), so a restart
  returns every leased task too;
* order: higher `priority` first, then fewest rankings, then oldest;
* gold tasks (known correct ranking) are mixed in at `gold_rate` and each answer's
  agreement with gold is stored;
* a repeated `submission_id` stores nothing new and answers as the first time;
* a submit is acknowledged only once its ranking is committed; submits that arrive
  together share one commit.
"""

from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby

import duckdb

from annotator.agreement import pairwise_agreement
from annotator.queue_book import VIEWS, Lease, Pending, QueueBook, book_for
from annotator.ranking import RankingError, Submission, check_flags, normalize_ranks
from reward.conversation import from_row
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store

PREFETCH = 64  # task views read together when the next task's is not cached
_RNG = random.Random()


class NotLeased(UserError):
    """The task is not (or no longer) the annotator's to rank; nothing was stored."""


@dataclass(frozen=True)
class SubmitResult:
    ranking_id: int
    task_id: int
    duplicate: bool  # True when this submission_id had already been stored


def _now() -> datetime:
    return datetime.now(UTC)


def next_task(
    store: Store, annotator_id: int, settings: AnnotationOptions, rng: random.Random | None = None
) -> dict | None:
    """Lease the annotator's next task (or return the one they already hold); None when none is left."""
    now = _now()
    rng = rng or _RNG
    book = book_for(store)
    role = book.role(annotator_id)
    upcoming: list[int] = []
    with book.lock:
        held = book.held(annotator_id, now)
        if held:
            task_id, lease = held
        else:
            mine = book.answered.get(annotator_id, set())
            task_id = None
            if settings.gold_rate > 0 and rng.random() < settings.gold_rate:
                gold = [tid for tid, t in book.tasks.items() if t.gold is not None and tid not in mine]
                task_id = rng.choice(gold) if gold else None
            if task_id is None:
                open_ids = book.open_tasks(annotator_id, now, settings.judges_count, role == "judge")
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
    show = settings.show_sources or role == "simulated"
    with book.lock:
        cached = (task_id, show) in book.views
    view = task_views(store, [task_id] if cached else [task_id, *upcoming], show).get(task_id)
    if view is None:
        raise RankingError(f"task {task_id} has no candidates to show; an admin should look at it")
    return view | {"lease_expires_at": lease.expires.isoformat()}


def task_view(store: Store, task_id: int, show_sources: bool = False) -> dict:
    """What the annotator sees: the conversation (`prompt` is its last user turn) and the candidates
    in display order (sources only if shown)."""
    view = task_views(store, [task_id], show_sources).get(task_id)
    if view is None:
        raise RankingError(f"there is no task {task_id}")
    return view


def task_views(store: Store, task_ids: list[int], show_sources: bool = False) -> dict[int, dict]:
    """Views of several tasks; cached, since a task's candidates never change, and read in one query
    (a query costs about as much for 64 tasks as for one)."""
    book = book_for(store)
    with book.lock:
        views = {tid: v for tid in task_ids if (v := book.views.get((tid, show_sources))) is not None}
    missing = [tid for tid in task_ids if tid not in views]
    if not missing:
        return views
    rows = store.query(
        """WITH c AS (SELECT t.id, t.prompt_id, unnest(t.sample_ids) AS sample_id,
                             generate_subscripts(t.sample_ids, 1) - 1 AS position FROM tasks t
                      WHERE list_contains(?, t.id))
           SELECT c.id AS task_id, c.position, p.text AS prompt, p.messages, s.text, sp.name AS system_prompt,
                  sp.text AS system_prompt_text, m.name AS model
           FROM c JOIN prompts p ON p.id = c.prompt_id JOIN samples s ON s.id = c.sample_id
           JOIN system_prompts sp ON sp.id = s.system_prompt_id LEFT JOIN models m ON m.id = s.model_id
           ORDER BY c.id, c.position""",
        [missing],
    )
    keep = (
        ("position", "text", "system_prompt", "system_prompt_text", "model")
        if show_sources
        else ("position", "text")
    )
    for tid, group in groupby(rows, key=lambda r: r["task_id"]):
        group = list(group)
        # The conversation so far (a one-message one for a plain prompt), then the candidate answers.
        messages = from_row(group[0]["prompt"], group[0]["messages"])
        views[tid] = {
            "task_id": tid,
            "prompt": messages[-1]["content"],
            "messages": messages,
            "candidates": [{k: r[k] for k in keep} for r in group],
        }
    with book.lock:
        for tid in missing:
            if tid in views:
                book.views[(tid, show_sources)] = views[tid]
        while len(book.views) > VIEWS:
            book.views.popitem(last=False)
    return views


def submit(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions | None = None
) -> SubmitResult:
    """Validate and store one submission; it returns once the ranking is durable (group commit).
    NotLeased/RankingError leave the database unchanged."""
    judges_count = settings.judges_count if settings else False
    book = book_for(store)
    book.role(annotator_id)  # known to the book before the ranking is counted
    sid = sub.submission_id
    while True:
        refused = None
        with book.lock:
            waiting, prior = book.pending.get(sid), book.recent.get(sid)
            if waiting is None and prior is None:
                try:
                    item = _validate(book, annotator_id, sub, judges_count)
                except (RankingError, NotLeased) as e:
                    refused = e
                else:
                    book.pending[sid] = item
                    book.answered.setdefault(annotator_id, set()).add(sub.task_id)
                    break
        if waiting is not None:  # the same id is being stored (a retry racing its first send)
            waiting.done.wait()
            if waiting.error is not None:
                continue  # the first send failed: this one is checked on its own
            prior = (waiting.ranking_id, waiting.task_id, waiting.annotator_id)
        if prior is None:  # refused, unless it retries a ranking stored before the book's memory
            prior = (
                store.cursor()
                .execute("SELECT id, task_id, annotator_id FROM rankings WHERE submission_id = ?", [sid])
                .fetchone()
            )
            if prior is None:
                raise refused
        if (prior[1], prior[2]) != (sub.task_id, annotator_id):
            raise RankingError(
                f"submission id {sid!r} was already used for another task; make a new id for each task"
            )
        return SubmitResult(prior[0], sub.task_id, duplicate=True)
    book.commit(item)
    if isinstance(
        item.error, duckdb.ConstraintException
    ):  # the unique key: another task's ranking has this id
        raise RankingError(
            f"submission id {sid!r} was already used for another task; make a new id for each task"
        )
    if item.error is not None:
        raise item.error
    return SubmitResult(item.ranking_id, sub.task_id, duplicate=False)


def _validate(book: QueueBook, annotator_id: int, sub: Submission, judges_count: bool) -> Pending:
    """Check a submission against the book (its lock held) and build its row."""
    task = book.tasks.get(sub.task_id)
    if task is None:
        raise RankingError(f"there is no task {sub.task_id}")
    ranks = normalize_ranks(sub.ranks, task.k) if sub.ranks is not None else None
    check_flags(sub.flags, task.k)
    if sub.task_id in book.answered.get(annotator_id, set()):
        raise NotLeased(f"you already answered task {sub.task_id}; ask for the next task")
    lease = book.leases.get(sub.task_id, {}).get(annotator_id)
    if lease is None:
        raise NotLeased(f"task {sub.task_id} is not leased to you; ask for the next task to get one")
    now = _now()
    if lease.expires <= now and ranks is not None and task.gold is None:
        # Counted as the capacity check counts: judges only where they count toward R.
        taken = book.done(task, judges_count) + book.holding(annotator_id, now, judges_count).get(
            sub.task_id, 0
        )
        if taken >= task.required:
            raise NotLeased(
                f"your lease on task {sub.task_id} expired and others have completed or taken it "
                "since; your ranking was not stored. Ask for the next task."
            )
    skip = f"{sub.skip_reason}: {sub.skip_text}" if sub.skip_reason and sub.skip_text else sub.skip_reason
    row = {
        "task_id": sub.task_id,
        "annotator_id": annotator_id,
        "ranks": ranks,
        "skipped": ranks is None,
        "skip_reason": skip,
        "flags": json.dumps([f.model_dump() for f in sub.flags]),
        "rationale": sub.rationale,
        "time_spent_s": (now - lease.created).total_seconds(),
        "submission_id": sub.submission_id,
        "created_at": now,
        "gold_agreement": pairwise_agreement(ranks, task.gold)
        if task.gold is not None and ranks is not None
        else None,
    }
    return Pending(row, sub.task_id, annotator_id)


def progress(store: Store, annotator_id: int, settings: AnnotationOptions | None = None) -> dict[str, int]:
    """Done today, done in total, and tasks still in the queue for this annotator."""
    now = _now()
    judges_count = settings.judges_count if settings else False
    book = book_for(store)
    role = book.role(annotator_id)
    with book.lock:
        queue = len(book.open_tasks(annotator_id, now, judges_count, role == "judge"))
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
