"""The queue's memory (annotator/queue_book.py): group commit, leases that do not outlive the process,
and rows written by other paths counted from the database."""

import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import RankingError, Submission
from service.core.settings import AnnotationOptions
from service.core.store import Store
from tests.support.seeding import seed_tasks

NO_GOLD = AnnotationOptions(lease_s=600, gold_rate=0.0)


def leased(store: Store, who: int, opts: AnnotationOptions) -> dict:
    """The annotator's next task, which these tests know there is."""
    task = queue.next_task(store, who, opts)
    assert task is not None, f"no task left for annotator {who}"
    return task


def ranked(task: dict, sid: str | None = None) -> Submission:
    return Submission(
        task_id=task["task_id"],
        submission_id=sid or uuid.uuid4().hex,
        ranks=list(range(1, len(task["candidates"]) + 1)),
    )


def test_submits_sent_together_share_commits_and_each_is_stored_once(store: Store) -> None:
    seed_tasks(store, n_prompts=32, k=2)
    who = [add_annotator(store, f"sim{i}", "simulated") for i in range(32)]
    tasks = {a: leased(store, a, NO_GOLD) for a in who}
    assert len({t["task_id"] for t in tasks.values()}) == 32  # R = 1: a task each
    start, results, before = threading.Barrier(32), {}, store.generation

    def send(a: int) -> None:
        start.wait()
        results[a] = queue.submit(store, a, ranked(tasks[a]))

    threads = [threading.Thread(target=send, args=(a,)) for a in who]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    commits = store.generation - before
    stored = store.query("SELECT id, task_id, annotator_id FROM rankings ORDER BY id")
    assert len(stored) == 32 and {r["id"] for r in stored} == {r.ranking_id for r in results.values()}
    assert {(r["task_id"], r["annotator_id"]) for r in stored} == {(tasks[a]["task_id"], a) for a in who}
    assert commits < 16, f"32 submits sent at once took {commits} commits: they were not grouped"
    # Every answer counts at once: each annotator's next task is new, and their progress says one.
    for a in who:
        assert leased(store, a, NO_GOLD)["task_id"] != tasks[a]["task_id"]
        assert queue.progress(store, a, NO_GOLD)["total"] == 1


def test_a_retry_racing_its_first_send_is_stored_once(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",))
    a = add_annotator(store, "sim", "simulated")
    task = leased(store, a, NO_GOLD)
    sub, start, answers = ranked(task, "retry-me"), threading.Barrier(8), []

    def send() -> None:
        start.wait()
        answers.append(queue.submit(store, a, sub))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.scalar("SELECT count(*) FROM rankings") == 1
    assert len({r.ranking_id for r in answers}) == 1 and sum(not r.duplicate for r in answers) == 1


def test_leases_do_not_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "data" / "rankloop.duckdb"
    with Store.open(db) as store:
        seed_tasks(store, n_prompts=2, k=2, styles=("brief",))  # 2 tasks, R = 1
        a, b = add_annotator(store, "a", "simulated"), add_annotator(store, "b", "simulated")
        held = leased(store, a, NO_GOLD)
        assert leased(store, b, NO_GOLD)["task_id"] != held["task_id"]
    with Store.open(db) as store:  # a crash or restart: both leased tasks are back in the queue
        c = add_annotator(store, "c", "simulated")
        assert leased(store, c, NO_GOLD)["task_id"] == held["task_id"]
        with pytest.raises(queue.NotLeased, match="not leased to you"):
            queue.submit(store, a, ranked(held))
        assert store.scalar("SELECT count(*) FROM rankings") == 0


def test_rankings_and_tasks_written_by_other_paths_are_counted(store: Store) -> None:
    seed_tasks(store, n_prompts=2, k=2, styles=("brief",), required=1)  # 2 tasks
    a = add_annotator(store, "a", "simulated")
    first = leased(store, a, NO_GOLD)  # the book now exists
    queue.submit(store, a, ranked(first))
    other = store.scalar("SELECT id FROM tasks WHERE id <> ?", [first["task_id"]])
    imported = add_annotator(store, "importer", "import")
    with store.write() as cur:  # an import fills the other task straight in the database
        cur.execute(
            "INSERT INTO rankings (task_id, annotator_id, ranks, submission_id) VALUES (?, ?, [1, 2], 'x')",
            [other, imported],
        )
    assert queue.next_task(store, a, NO_GOLD) is None
    assert queue.progress(store, a, NO_GOLD) == {"today": 1, "total": 1, "queue": 0}
    seed_tasks(store, n_prompts=2, k=2, styles=("brief",), seed=1)  # new tasks, and one raised in priority
    newest = store.scalar("SELECT max(id) FROM tasks")
    with store.write() as cur:
        cur.execute("UPDATE tasks SET priority = 5 WHERE id = ?", [newest])
    assert leased(store, a, NO_GOLD)["task_id"] == newest
    with pytest.raises(RankingError, match="already used for another task"):
        queue.submit(store, a, ranked({"task_id": newest, "candidates": [1, 2]}, "x"))
    assert store.scalar("SELECT count(*) FROM rankings") == 2


def test_a_late_submit_counts_judges_where_they_count(store: Store, monkeypatch) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",), required=2)
    a, b = add_annotator(store, "a", "simulated"), add_annotator(store, "b", "simulated")
    judge = add_annotator(store, "j", "judge")
    opts = AnnotationOptions(lease_s=60, gold_rate=0, judges_count=True)
    late = leased(store, a, opts)
    real = queue._now
    monkeypatch.setattr(queue, "_now", lambda: real() + timedelta(seconds=120))  # a's lease has expired
    for who in (judge, b):
        queue.submit(store, who, ranked(leased(store, who, opts)), opts)
    with pytest.raises(queue.NotLeased, match="expired and others have completed"):
        queue.submit(store, a, ranked(late), opts)
    assert store.scalar("SELECT count(*) FROM rankings WHERE task_id = ?", [late["task_id"]]) == 2
