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

import duckdb

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


def questions(store: Store, settings: AnnotationOptions, attempt: int = 1) -> list[tuple[int, list[int]]]:
    """(task id, gold ranks) of an attempt's questions: quiz_size gold tasks, oldest first, and each
    retake the next quiz_size after them (round the gold set), so a retake is on other questions
    wherever there are enough gold tasks."""
    rows = (
        store.cursor()
        .execute("SELECT id, gold_ranks FROM tasks WHERE gold_ranks IS NOT NULL ORDER BY id")
        .fetchall()
    )
    if not rows:
        raise UserError(
            "you must pass the qualification quiz first, and it has no questions yet: an admin marks "
            "gold tasks (`rankloop tasks gold TASK_ID --ranks ...`) or sets annotation.quiz_size to 0"
        )
    n = min(settings.quiz_size, len(rows))
    start = ((attempt - 1) * n) % len(rows)
    turn = rows[start:] + rows[:start]
    return [(tid, list(gold)) for tid, gold in turn[:n]]


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


def _size(store: Store, settings: AnnotationOptions) -> int:
    golds = store.scalar("SELECT count(*) FROM tasks WHERE gold_ranks IS NOT NULL") or 0
    return min(settings.quiz_size, golds)


def next_question(store: Store, annotator_id: int, settings: AnnotationOptions) -> dict:
    """The next unanswered question of the attempt in progress, as a task view with `quiz` added."""
    attempt, done = _attempt(_answers(store, annotator_id), max(_size(store, settings), 1))
    qs = questions(store, settings, attempt)
    number, (task_id, _) = next((i, q) for i, q in enumerate(qs) if q[0] not in done)
    view = task_view(store, task_id)
    batch = store.scalar("SELECT batch FROM tasks WHERE id = ?", [task_id])
    return view | {
        "quiz": {"attempt": attempt, "question": number + 1, "of": len(qs), "pass_mark": settings.quiz_pass},
        "guidelines": current(store, batch),
    }


def earlier_answer(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions
) -> tuple[bool, dict] | None:
    """A quiz answer stored before under this submission id: (True, its attempt's progress) when it
    was this annotator's answer to this task; RankingError when the id was used for another; None
    when it is new. A retry of the answer that passed lands here after the account qualified."""
    row = (
        store.cursor()
        .execute(
            "SELECT annotator_id, attempt, task_id FROM quiz_answers WHERE submission_id = ?",
            [sub.submission_id],
        )
        .fetchone()
    )
    if row is None:
        return None
    if (row[0], row[2]) != (annotator_id, sub.task_id):
        raise RankingError(
            f"submission id {sub.submission_id!r} was already used for another task; make a new id for each task"
        )
    return True, _progress(store, annotator_id, row[1], settings)


def answer(
    store: Store, annotator_id: int, sub: Submission, settings: AnnotationOptions
) -> tuple[bool, dict]:
    """Store one quiz answer; (duplicate, the quiz's progress and, when the attempt is complete, its
    result). A repeated submission id answers as the first time and stores nothing."""
    if sub.ranks is None:
        raise RankingError("quiz questions cannot be skipped; rank the candidates as the guidelines say")
    with _LOCK:
        earlier = earlier_answer(store, annotator_id, sub, settings)
        if earlier is not None:
            return earlier
        attempt, done = _attempt(_answers(store, annotator_id), max(_size(store, settings), 1))
        gold = dict(questions(store, settings, attempt))
        if sub.task_id not in gold:
            raise RankingError(
                f"task {sub.task_id} is not a question of your quiz attempt; you must pass the qualification "
                "quiz before ranking other tasks (ask for your next task to get the next question)"
            )
        if sub.task_id in done:
            raise RankingError(
                f"you already answered quiz question {sub.task_id} in this attempt; ask for the next one"
            )
        ranks = normalize_ranks(sub.ranks, len(gold[sub.task_id]))
        agreement = pairwise_agreement(ranks, gold[sub.task_id])
        try:
            with store.write() as cur:
                _store_answer(
                    cur, annotator_id, attempt, sub, ranks, agreement, len(done) + 1 == len(gold), settings
                )
        except duckdb.ConstraintException:  # the id was stored meanwhile by another path
            raise RankingError(
                f"submission id {sub.submission_id!r} was already used; make a new id for each task"
            ) from None
    return False, _progress(store, annotator_id, attempt, settings)


def _store_answer(
    cur: duckdb.DuckDBPyConnection,
    annotator_id: int,
    attempt: int,
    sub: Submission,
    ranks: list[int],
    agreement: float,
    last: bool,
    settings: AnnotationOptions,
) -> None:
    """The answer and, when it completes a passing attempt, the account's qualification, together."""
    cur.execute(
        "INSERT INTO quiz_answers (annotator_id, attempt, task_id, ranks, agreement, submission_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [annotator_id, attempt, sub.task_id, ranks, agreement, sub.submission_id],
    )
    if last:
        row = cur.execute(
            "SELECT avg(agreement) FROM quiz_answers WHERE annotator_id = ? AND attempt = ?",
            [annotator_id, attempt],
        ).fetchone()
        assert row is not None  # an aggregate always has its row; the answer above is in it
        if row[0] >= settings.quiz_pass:
            cur.execute(
                "UPDATE annotators SET qualified_at = ? WHERE id = ?", [datetime.now(UTC), annotator_id]
            )


def _progress(store: Store, annotator_id: int, attempt: int, settings: AnnotationOptions) -> dict:
    """An attempt's progress; once complete, its score, whether it passed, and the questions answered
    differently from the reference. The reference rankings themselves are not shown, so that a retake
    cannot copy them (admins see the questions each attempt missed in `rankloop quiz results`)."""
    n = _size(store, settings)
    rows = store.query(
        """SELECT q.task_id, q.ranks AS your_ranks, q.agreement, p.text AS prompt
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


def answered_tasks(store: Store, annotator_id: int) -> set[int]:
    """Gold tasks this account met in the quiz: not handed to it again as quality checks."""
    rows = (
        store.cursor()
        .execute("SELECT DISTINCT task_id FROM quiz_answers WHERE annotator_id = ?", [annotator_id])
        .fetchall()
    )
    return {tid for (tid,) in rows}


def results(store: Store, settings: AnnotationOptions, name: str | None = None) -> list[dict]:
    """Every completed or begun attempt, per account: score, whether it passed, and the questions
    answered differently from gold (for admins)."""
    n = _size(store, settings)
    rows = store.query(
        """SELECT a.name, q.attempt, count(*) AS answered, round(avg(q.agreement), 4) AS score,
                  avg(q.agreement) >= ? AS reached_pass_mark,
                  any_value(a.qualified_at) AS qualified_at, max(q.created_at) AS last_answer_at,
                  list(q.task_id ORDER BY q.id) FILTER (WHERE q.agreement < 1) AS disagreed_tasks
           FROM quiz_answers q JOIN annotators a ON a.id = q.annotator_id
           WHERE ? IS NULL OR a.name = ? GROUP BY a.name, q.attempt ORDER BY a.name, q.attempt""",
        [settings.quiz_pass, name, name],
    )
    for r in rows:
        r["passed"] = r["answered"] >= n > 0 and bool(r.pop("reached_pass_mark"))
    return rows
