"""The qualification quiz: a new annotator answers gold tasks until they pass, and only then ranks.

With `annotation.quiz_size` N > 0, an account of role annotator or reviewer that has not passed gets
only quiz questions from the queue (`queue.next_task`, the app, the API): the N oldest gold tasks, in
order. Its answers go to `quiz_answers`, never to rankings (a quiz is retaken on the same questions).
When an attempt has all N answers it is scored: the mean pairwise agreement with the gold rankings;
at `annotation.quiz_pass` or above the account is qualified (`annotators.qualified_at`), below it the
next attempt starts. The result, with each question answered differently from gold, is returned to
the annotator and listed for admins (`rankloop quiz results`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from annotator.agreement import pairwise_agreement
from annotator.guidelines import current
from annotator.ranking import RankingError, Submission, normalize_ranks
from annotator.task_views import task_view
from service.core.enums import Role
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store

QUIZ_ROLES = (Role.ANNOTATOR, Role.REVIEWER)  # admins, simulated annotators and judges are not quizzed
_PASSED = "quiz_passed"  # store.caches key: accounts known to have passed (it never reverts)
_LOCK = threading.Lock()


def required(store: Store, annotator_id: int, settings: AnnotationOptions) -> bool:
    """Whether this account must still pass the quiz before it gets real tasks."""
    if settings.quiz_size <= 0:
        return False
    passed = store.caches.setdefault(_PASSED, set())
    if annotator_id in passed:
        return False
    row = (
        store.cursor()
        .execute("SELECT role, qualified_at FROM annotators WHERE id = ?", [annotator_id])
        .fetchone()
    )
    if row is None or row[0] not in QUIZ_ROLES or row[1] is not None:
        passed.add(annotator_id)
        return False
    return True


def questions(store: Store, settings: AnnotationOptions) -> list[tuple[int, list[int]]]:
    """(task id, gold ranks) of the quiz: the oldest gold tasks, at most quiz_size."""
    rows = (
        store.cursor()
        .execute(
            "SELECT id, gold_ranks FROM tasks WHERE gold_ranks IS NOT NULL ORDER BY id LIMIT ?",
            [settings.quiz_size],
        )
        .fetchall()
    )
    if not rows:
        raise UserError(
            "you must pass the qualification quiz first, and it has no questions yet: an admin marks "
            "gold tasks (`rankloop gold TASK RANKS`) or sets annotation.quiz_size to 0"
        )
    return [(tid, list(gold)) for tid, gold in rows]


def _answers(store: Store, annotator_id: int) -> list[tuple]:
    return (
        store.cursor()
        .execute(
            "SELECT attempt, task_id, ranks, agreement, submission_id, created_at FROM quiz_answers "
            "WHERE annotator_id = ? ORDER BY attempt, id",
            [annotator_id],
        )
        .fetchall()
    )


def _attempt(answers: list[tuple], n: int) -> tuple[int, set[int]]:
    """The attempt in progress (a new one once the last is complete) and its answered tasks."""
    if not answers:
        return 1, set()
    last = answers[-1][0]
    done = {a[1] for a in answers if a[0] == last}
    return (last + 1, set()) if len(done) >= n else (last, done)


def next_question(store: Store, annotator_id: int, settings: AnnotationOptions) -> dict:
    """The next unanswered question of the attempt in progress, as a task view with `quiz` added."""

    qs = questions(store, settings)
    attempt, done = _attempt(_answers(store, annotator_id), len(qs))
    number, (task_id, _) = next((i, q) for i, q in enumerate(qs) if q[0] not in done)
    view = task_view(store, task_id)
    batch = store.scalar("SELECT batch FROM tasks WHERE id = ?", [task_id])
    return view | {
        "quiz": {"attempt": attempt, "question": number + 1, "of": len(qs), "pass_mark": settings.quiz_pass},
        "guidelines": current(store, batch),
    }


def answer(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions
) -> tuple[bool, dict]:
    """Store one quiz answer; (duplicate, the quiz's progress and, when the attempt is complete, its
    result). A repeated submission id answers as the first time and stores nothing."""
    if sub.ranks is None:
        raise RankingError("quiz questions cannot be skipped; rank the candidates as the guidelines say")
    qs = questions(store, settings)
    gold = dict(qs)
    if sub.task_id not in gold:
        raise RankingError(
            f"task {sub.task_id} is not a quiz question; you must pass the qualification quiz before "
            "ranking other tasks (ask for your next task to get the next question)"
        )
    with _LOCK:
        answers = _answers(store, annotator_id)
        earlier = next((a for a in answers if a[4] == sub.submission_id), None)
        if earlier is not None:
            if earlier[1] != sub.task_id:
                raise RankingError(f"submission id {sub.submission_id!r} was already used for another task")
            return True, _progress(store, annotator_id, earlier[0], len(qs), settings)
        attempt, done = _attempt(answers, len(qs))
        if sub.task_id in done:
            raise RankingError(
                f"you already answered quiz question {sub.task_id} in this attempt; ask for the next one"
            )
        ranks = normalize_ranks(sub.ranks, len(gold[sub.task_id]))
        agreement = pairwise_agreement(ranks, gold[sub.task_id])
        with store.write() as cur:
            cur.execute(
                "INSERT INTO quiz_answers (annotator_id, attempt, task_id, ranks, agreement, submission_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [annotator_id, attempt, sub.task_id, ranks, agreement, sub.submission_id],
            )
            if len(done) + 1 == len(qs):
                score = _score(
                    cur.execute(
                        "SELECT agreement FROM quiz_answers WHERE annotator_id = ? AND attempt = ?",
                        [annotator_id, attempt],
                    ).fetchall()
                )
                if score >= settings.quiz_pass:
                    cur.execute(
                        "UPDATE annotators SET qualified_at = ? WHERE id = ?",
                        [datetime.now(UTC), annotator_id],
                    )
    return False, _progress(store, annotator_id, attempt, len(qs), settings)


def _score(agreements: list[tuple]) -> float:
    return sum(a for (a,) in agreements) / len(agreements)


def _progress(store: Store, annotator_id: int, attempt: int, n: int, settings: AnnotationOptions) -> dict:
    rows = store.query(
        """SELECT q.task_id, q.ranks AS your_ranks, t.gold_ranks, q.agreement, p.text AS prompt
           FROM quiz_answers q JOIN tasks t ON t.id = q.task_id JOIN prompts p ON p.id = t.prompt_id
           WHERE q.annotator_id = ? AND q.attempt = ? ORDER BY q.id""",
        [annotator_id, attempt],
    )
    out: dict = {"attempt": attempt, "answered": len(rows), "of": n, "pass_mark": settings.quiz_pass}
    if len(rows) >= n:
        score = sum(r["agreement"] for r in rows) / len(rows)
        out |= {
            "complete": True,
            "score": round(score, 4),
            "passed": score >= settings.quiz_pass,
            "disagreements": [r for r in rows if r["agreement"] < 1],
        }
    else:
        out["complete"] = False
    return out


def results(store: Store, settings: AnnotationOptions, name: str | None = None) -> list[dict]:
    """Every completed or begun attempt, per account: score, whether it passed, and the questions
    answered differently from gold (for admins)."""
    golds = store.scalar("SELECT count(*) FROM tasks WHERE gold_ranks IS NOT NULL")
    n = min(settings.quiz_size, golds or 0)
    rows = store.query(
        """SELECT a.name, q.attempt, count(*) AS answered, round(avg(q.agreement), 4) AS score,
                  any_value(a.qualified_at) AS qualified_at, max(q.created_at) AS last_answer_at,
                  list(q.task_id ORDER BY q.id) FILTER (WHERE q.agreement < 1) AS disagreed_tasks
           FROM quiz_answers q JOIN annotators a ON a.id = q.annotator_id
           WHERE ? IS NULL OR a.name = ? GROUP BY a.name, q.attempt ORDER BY a.name, q.attempt""",
        [name, name],
    )
    for r in rows:
        r["passed"] = r["answered"] >= n > 0 and r["score"] >= settings.quiz_pass
    return rows
