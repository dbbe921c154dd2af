"""The ranking queue: which task an annotator gets next, leases, and storing a submission.

Every path that ranks (the Gradio app, the JSON API, simulated annotators, imports)
ends in `submit()`, so they obey the same rules:

* a task needs `required_rankings` (R) rankings; skips do not count;
* an annotator never gets the same task twice (ranked or skipped);
* a handed-out task is leased to its annotator for `lease_s`; live leases count
  against R, so no more than R people work on a task at once; an expired lease
  returns the task to the queue;
* order: higher `priority` first, then fewest rankings, then oldest;
* gold tasks (known correct ranking) are mixed in at `gold_rate` and each answer's
  agreement with gold is stored;
* a repeated `submission_id` stores nothing new and answers as the first time.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from annotator.agreement import pairwise_agreement
from annotator.ranking import RankingError, Submission, check_flags, normalize_ranks
from reward.conversation import from_row
from service.core.errors import StoreError
from service.core.settings import AnnotationOptions
from service.core.store import Store


class NotLeased(StoreError):
    """The task is not (or no longer) the annotator's to rank; nothing was stored."""


@dataclass(frozen=True)
class SubmitResult:
    ranking_id: int
    task_id: int
    duplicate: bool  # True when this submission_id had already been stored


def _now() -> datetime:
    return datetime.now(UTC)


_JUDGES = "annotator_id NOT IN (SELECT id FROM annotators WHERE role = 'judge')"


def _open_sql(judges_count: bool, for_judge: bool) -> str:
    """Open regular tasks for one annotator: not answered by them, with fewer completed rankings plus
    live leases held by others than they need. Unless judges count toward that, their rankings and
    leases are left out, and a judge gets every task it has not answered. Parameters: now,
    annotator_id, annotator_id."""
    people_only = "" if judges_count else f" AND {_JUDGES}"
    capacity = "" if for_judge and not judges_count else "AND coalesce(d.n, 0) + coalesce(l.n, 0) < t.required_rankings"
    return f"""WITH done AS (SELECT task_id, count(*) AS n FROM rankings WHERE NOT skipped{people_only} GROUP BY task_id),
  leased AS (SELECT task_id, count(*) AS n FROM leases WHERE expires_at > ? AND annotator_id <> ?{people_only}
             GROUP BY task_id),
  open AS (SELECT t.id, t.priority, t.created_at, coalesce(d.n, 0) AS done FROM tasks t
           LEFT JOIN done d ON d.task_id = t.id LEFT JOIN leased l ON l.task_id = t.id
           WHERE t.gold_ranks IS NULL AND t.id NOT IN (SELECT task_id FROM rankings WHERE annotator_id = ?)
             {capacity})
"""


def _pick(cur, annotator_id: int, now: datetime, gold: bool, open_sql: str) -> int | None:
    if gold:
        row = cur.execute(
            """SELECT t.id FROM tasks t WHERE t.gold_ranks IS NOT NULL
                 AND t.id NOT IN (SELECT task_id FROM rankings WHERE annotator_id = ?)
               ORDER BY random() LIMIT 1""",
            [annotator_id],
        ).fetchone()
    else:
        row = cur.execute(
            open_sql + "SELECT id FROM open ORDER BY priority DESC, done ASC, created_at ASC, id ASC LIMIT 1",
            [now, annotator_id, annotator_id],
        ).fetchone()
    return row[0] if row else None


def next_task(store: Store, annotator_id: int, settings: AnnotationOptions, rng: random.Random | None = None) -> dict | None:
    """Lease the annotator's next task (or return the one they already hold); None when none is left."""
    now = _now()
    rng = rng or random.Random()
    role = store.scalar("SELECT role FROM annotators WHERE id = ?", [annotator_id])
    open_sql = _open_sql(settings.judges_count, role == "judge")
    with store.write() as cur:
        held = cur.execute(
            """SELECT task_id, expires_at FROM leases WHERE annotator_id = ? AND expires_at > ?
                 AND task_id NOT IN (SELECT task_id FROM rankings WHERE annotator_id = ?)
               ORDER BY created_at DESC LIMIT 1""",
            [annotator_id, now, annotator_id],
        ).fetchone()
        if held:
            task_id, expires = held
        else:
            task_id = None
            if settings.gold_rate > 0 and rng.random() < settings.gold_rate:
                task_id = _pick(cur, annotator_id, now, True, open_sql)
            task_id = task_id or _pick(cur, annotator_id, now, False, open_sql)
            if task_id is None:
                return None
            expires = now + timedelta(seconds=settings.lease_s)
            # An older, expired lease of this annotator on the task may remain: submit reads the newest.
            cur.execute("INSERT INTO leases (task_id, annotator_id, expires_at) VALUES (?, ?, ?)",
                        [task_id, annotator_id, expires])
    # Simulated annotators judge instruction-following, so they see which system prompt wrote what.
    view = task_view(store, task_id, settings.show_sources or role == "simulated")
    return view | {"lease_expires_at": expires.isoformat()}


def task_view(store: Store, task_id: int, show_sources: bool = False) -> dict:
    """What the annotator sees: the conversation (`prompt` is its last user turn) and the candidates
    in display order (sources only if shown)."""
    rows = store.query(
        """WITH c AS (SELECT t.id, t.prompt_id, unnest(t.sample_ids) AS sample_id,
                             generate_subscripts(t.sample_ids, 1) - 1 AS position FROM tasks t WHERE t.id = ?)
           SELECT c.position, p.text AS prompt, p.messages, s.text, sp.name AS system_prompt, sp.text AS system_prompt_text,
                  m.name AS model
           FROM c JOIN prompts p ON p.id = c.prompt_id JOIN samples s ON s.id = c.sample_id
           JOIN system_prompts sp ON sp.id = s.system_prompt_id LEFT JOIN models m ON m.id = s.model_id
           ORDER BY c.position""",
        [task_id],
    )
    if not rows:
        raise RankingError(f"there is no task {task_id}")
    keep = ("position", "text", "system_prompt", "system_prompt_text", "model") if show_sources else ("position", "text")
    # The conversation so far (a one-message one for a plain prompt), then the candidate answers.
    messages = from_row(rows[0]["prompt"], rows[0]["messages"])
    return {"task_id": task_id, "prompt": messages[-1]["content"], "messages": messages,
            "candidates": [{k: r[k] for k in keep} for r in rows]}


def submit(store: Store, annotator_id: int, sub: Submission) -> SubmitResult:
    """Validate and store one submission; NotLeased/RankingError leave the database unchanged."""
    with store.write() as cur:
        prior = cur.execute("SELECT id, task_id, annotator_id FROM rankings WHERE submission_id = ?",
                            [sub.submission_id]).fetchone()
        if prior:
            if (prior[1], prior[2]) != (sub.task_id, annotator_id):
                raise RankingError(f"submission id {sub.submission_id!r} was already used for another task; "
                                   "make a new id for each task")
            return SubmitResult(prior[0], sub.task_id, duplicate=True)
        task = cur.execute("SELECT len(sample_ids), required_rankings, gold_ranks FROM tasks WHERE id = ?",
                           [sub.task_id]).fetchone()
        if task is None:
            raise RankingError(f"there is no task {sub.task_id}")
        k, required, gold = task
        ranks = normalize_ranks(sub.ranks, k) if sub.ranks is not None else None
        check_flags(sub.flags, k)
        if cur.execute("SELECT 1 FROM rankings WHERE task_id = ? AND annotator_id = ?",
                       [sub.task_id, annotator_id]).fetchone():
            raise NotLeased(f"you already answered task {sub.task_id}; ask for the next task")
        lease = cur.execute(
            "SELECT created_at, expires_at FROM leases WHERE task_id = ? AND annotator_id = ? "
            "ORDER BY expires_at DESC LIMIT 1", [sub.task_id, annotator_id]).fetchone()
        if lease is None:
            raise NotLeased(f"task {sub.task_id} is not leased to you; ask for the next task to get one")
        now = _now()
        if lease[1] <= now and ranks is not None and gold is None:
            done, others = cur.execute(
                """SELECT (SELECT count(*) FROM rankings WHERE task_id = ? AND NOT skipped),
                          (SELECT count(*) FROM leases WHERE task_id = ? AND expires_at > ? AND annotator_id <> ?)""",
                [sub.task_id, sub.task_id, now, annotator_id]).fetchone()
            if done + others >= required:
                raise NotLeased(f"your lease on task {sub.task_id} expired and others have completed or taken it "
                                "since; your ranking was not stored. Ask for the next task.")
        gold_agreement = pairwise_agreement(ranks, gold) if gold is not None and ranks is not None else None
        skip = f"{sub.skip_reason}: {sub.skip_text}" if sub.skip_reason and sub.skip_text else sub.skip_reason
        ranking_id = cur.execute(
            """INSERT INTO rankings (task_id, annotator_id, ranks, skipped, skip_reason, flags, rationale,
                                     time_spent_s, submission_id, gold_agreement)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [sub.task_id, annotator_id, ranks, ranks is None, skip,
             json.dumps([f.model_dump() for f in sub.flags]), sub.rationale,
             (now - lease[0]).total_seconds(), sub.submission_id, gold_agreement],
        ).fetchone()[0]
        cur.execute("DELETE FROM leases WHERE task_id = ? AND annotator_id = ?", [sub.task_id, annotator_id])
    return SubmitResult(ranking_id, sub.task_id, duplicate=False)


def progress(store: Store, annotator_id: int, settings: AnnotationOptions | None = None) -> dict[str, int]:
    """Done today, done in total, and tasks still in the queue for this annotator."""
    now = _now()
    judges_count = settings.judges_count if settings else False
    role = store.scalar("SELECT role FROM annotators WHERE id = ?", [annotator_id])
    row = store.query(
        _open_sql(judges_count, role == "judge") + """SELECT (SELECT count(*) FROM open) AS queue,
                  count(*) FILTER (WHERE r.created_at >= date_trunc('day', ?::TIMESTAMPTZ)) AS today,
                  count(*) AS total
           FROM rankings r WHERE r.annotator_id = ?""",
        [now, annotator_id, annotator_id, now, annotator_id],
    )[0]
    return {"today": row["today"], "total": row["total"], "queue": row["queue"]}


def mark_gold(store: Store, task_id: int, ranks: list[int]) -> None:
    """Give a task its known correct ranking (an admin action); it then serves as a gold task."""
    with store.write() as cur:
        row = cur.execute("SELECT len(sample_ids) FROM tasks WHERE id = ?", [task_id]).fetchone()
        if row is None:
            raise RankingError(f"there is no task {task_id}")
        cur.execute("UPDATE tasks SET gold_ranks = ? WHERE id = ?", [normalize_ranks(ranks, row[0]), task_id])
