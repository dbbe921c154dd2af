"""Annotation as labelling teams run it, through the queue's functions on a real DuckDB: guidelines,
the qualification quiz, strengths and ratings, adaptive overlap, adjudication, and what snapshots and
exports carry of them."""

import json
from pathlib import Path

import pytest

from annotator import quiz, review
from annotator.accounts import add_annotator
from annotator.guidelines import add_guideline, current
from annotator.queue import mark_gold, next_task, submit
from annotator.rank_form import attributes_from, strengths_from
from annotator.ranking import RankingError, Submission
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data.exchange import export
from service.data.snapshots import SnapshotFilters, create_snapshot
from tests.support.seeding import seed_tasks

PW = "correct horse battery"


def _sub(task: dict, ranks: list[int], sid: str, **kw) -> Submission:
    return Submission(task_id=task["task_id"], submission_id=sid, ranks=ranks, **kw)


def test_guidelines_strengths_and_ratings_are_stored_and_exported(store: Store, tmp_path: Path) -> None:
    seed_tasks(store, n_prompts=2, k=3, styles=("brief",))
    settings = AnnotationOptions(gold_rate=0)
    a = add_annotator(store, "sim", "simulated")
    assert current(store, None) is None
    with pytest.raises(UserError, match="empty"):
        add_guideline(store, "   ")
    v1 = add_guideline(store, "Prefer the *correct* answer; then the shorter one.")
    task = next_task(store, a, settings)
    assert task["guidelines"]["version"] == 1 and "correct" in task["guidelines"]["text"]
    # Bad strengths and ratings are refused, saying what is valid, and store nothing.
    bad = [
        ({"strengths": ["clearly"]}, "takes 2 strength"),
        ({"attributes": [{"helpfulness": 5}, None, None]}, "outside 0..4"),
        ({"attributes": [{"wit": 2}, None, None]}, "not in the rubric"),
        ({"attributes": [None, None]}, "one entry per candidate"),
    ]
    for fields, message in bad:
        with pytest.raises(RankingError, match=message):
            submit(store, a, _sub(task, [1, 2, 3], f"bad-{message}", **fields), settings)
    assert store.scalar("SELECT count(*) FROM rankings") == 0
    submit(
        store,
        a,
        _sub(
            task,
            [2, 1, 3],
            "good",
            strengths=["significantly", "slightly"],
            attributes=[{"helpfulness": 3}, {"helpfulness": 4, "harmlessness": 4}, {}],
        ),
        settings,
    )
    add_guideline(store, "Version two.")
    assert next_task(store, a, settings)["guidelines"]["version"] == 2
    assert store.scalar("SELECT guideline_id FROM rankings") == v1["id"]
    out = tmp_path / "rankings.jsonl"
    export(store, "jsonl", out)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["guideline"] == {"batch": None, "version": 1}
    assert row["strengths"] == ["significantly", "slightly"]
    assert [c["attributes"] for c in row["candidates"]] == [
        {"helpfulness": 3},
        {"helpfulness": 4, "harmlessness": 4},
        {},
    ]
    # A batch's own guideline wins for its tasks.
    with store.write() as cur:
        cur.execute("UPDATE tasks SET batch = 'b1'")
    add_guideline(store, "Batch one: judge the code only.", batch="b1")
    assert current(store, "b1")["text"].startswith("Batch one") and current(store, "b2")["version"] == 2
    snap = create_snapshot(store, tmp_path / "data", SnapshotFilters(eval_fraction=0))
    import pyarrow.parquet as pq

    (srow,) = pq.read_table(snap.path).to_pylist()
    assert srow["strengths"] == ["significantly", "slightly"] and srow["guideline_version"] == 1
    assert json.loads(srow["attributes"])[1] == {"helpfulness": 4, "harmlessness": 4}


def test_the_quiz_is_failed_then_passed_before_real_tasks(store: Store) -> None:
    ids = seed_tasks(store, n_prompts=4, k=2, styles=("brief",))
    settings = AnnotationOptions(gold_rate=0, quiz_size=2, quiz_pass=0.75)
    alice = add_annotator(store, "alice", "annotator", PW)
    with pytest.raises(UserError, match="no questions yet"):
        next_task(store, alice, settings)
    mark_gold(store, ids[0], [1, 2])
    mark_gold(store, ids[1], [2, 1])
    sim = add_annotator(store, "sim", "simulated")
    assert "quiz" not in next_task(store, sim, settings)  # only people are quizzed
    q1 = next_task(store, alice, settings)
    assert q1["quiz"] == {"attempt": 1, "question": 1, "of": 2, "pass_mark": 0.75}
    with pytest.raises(RankingError, match="cannot be skipped"):
        submit(store, alice, Submission(task_id=ids[0], submission_id="x", skip_reason="all_bad"), settings)
    with pytest.raises(RankingError, match="not a question of your quiz attempt"):
        submit(store, alice, Submission(task_id=ids[2], submission_id="y", ranks=[1, 2]), settings)
    r1 = submit(store, alice, _sub(q1, [1, 2], "q1a"), settings)
    assert r1.ranking_id is None and r1.quiz["answered"] == 1 and not r1.quiz["complete"]
    assert submit(store, alice, _sub(q1, [1, 2], "q1a"), settings).duplicate  # a retry stores nothing new
    q2 = next_task(store, alice, settings)
    assert q2["task_id"] == ids[1] and q2["quiz"]["question"] == 2
    failed = submit(store, alice, _sub(q2, [1, 2], "q2a"), settings).quiz  # gold says 2, 1
    assert failed["complete"] and not failed["passed"] and failed["score"] == 0.5
    assert [d["task_id"] for d in failed["disagreements"]] == [ids[1]]
    assert "gold_ranks" not in failed["disagreements"][0]  # a retake could copy the reference
    assert quiz.required(store, alice, settings)
    # The second attempt, on the same questions, passes; then real tasks come.
    again = next_task(store, alice, settings)
    assert again["quiz"]["attempt"] == 2 and again["task_id"] == ids[0]
    submit(store, alice, _sub(again, [1, 2], "q1b"), settings)
    passed = submit(store, alice, _sub(next_task(store, alice, settings), [2, 1], "q2b"), settings).quiz
    assert passed["passed"] and passed["score"] == 1.0
    # A retry of the passing answer, after the account qualified, answers as the first time.
    again_sent = Submission(task_id=ids[1], submission_id="q2b", ranks=[2, 1])
    retried = submit(store, alice, again_sent, settings)
    assert retried.duplicate and retried.quiz["passed"]
    with pytest.raises(RankingError, match="already used for another task"):  # another's id
        submit(store, sim, Submission(task_id=ids[2], submission_id="q2b", ranks=[1, 2]), settings)
    real = next_task(store, alice, settings)
    assert "quiz" not in real and real["task_id"] in ids[2:]
    assert store.scalar("SELECT count(*) FROM rankings") == 0  # quiz answers are not rankings
    # Quiz questions are not quality checks for her afterwards: gold draws skip them.
    always_gold = settings.model_copy(update={"gold_rate": 1.0})
    assert next_task(store, alice, always_gold)["task_id"] in ids[2:]
    attempts = quiz.results(store, settings, "alice")
    assert [(r["attempt"], r["passed"], r["disagreed_tasks"]) for r in attempts] == [
        (1, False, [ids[1]]),
        (2, True, None),
    ]


def test_disagreement_asks_for_more_rankings_then_a_reviewer(store: Store, tmp_path: Path) -> None:
    (task_id,) = seed_tasks(store, n_prompts=1, k=3, styles=("brief",), required=2)
    settings = AnnotationOptions(gold_rate=0, overlap_tau=0.5, overlap_cap=3)
    a, b, c, d = (add_annotator(store, f"s{i}", "simulated") for i in range(4))
    orders = {a: [1, 2, 3], b: [3, 2, 1], c: [2, 3, 1]}
    for who, ranks in orders.items():
        t = next_task(store, who, settings)
        assert t is not None and t["task_id"] == task_id
        submit(store, who, _sub(t, ranks, f"r{who}"), settings)
        if who == b:  # a and b disagree (tau -1): one ranking more, up to the cap of 3
            assert store.scalar("SELECT required_rankings FROM tasks") == 3
    assert store.scalar("SELECT contested FROM tasks")  # still split at the cap
    assert next_task(store, d, settings) is None  # it waits for a reviewer, not for more rankers
    (waiting,) = review.contested(store)
    assert waiting["task_id"] == task_id and waiting["rankings"] == 3
    with pytest.raises(UserError, match="needs role reviewer or admin"):
        review.next_review(store, a)
    rev = add_annotator(store, "rita", "reviewer", PW)
    shown = review.next_review(store, rev)
    assert [r["ranks"] for r in shown["rankings"]] == list(orders.values())
    with pytest.raises(RankingError, match="needs a rationale"):
        review.adjudicate(store, rev, task_id, [1, 2, 3], " ")
    review.adjudicate(store, rev, task_id, [1, 3, 2], "Candidate 1 answers; 3 is off topic.")
    again = review.adjudicate(store, rev, task_id, [1, 3, 2], "retried")
    assert again["duplicate"]  # a retry answers as the first time
    with pytest.raises(UserError, match="already resolved by rita"):
        review.adjudicate(store, rev, task_id, [1, 2, 3], "again")
    assert review.contested(store) == [] and review.next_review(store, rev) is None
    counts = {}
    for mode in ("raw", "adjudicated", "both"):
        snap = create_snapshot(store, tmp_path / mode, SnapshotFilters(reviews=mode, eval_fraction=0))
        counts[mode] = snap.manifest["counts"]["rankings"]
    assert counts == {"raw": 3, "adjudicated": 1, "both": 4}


def test_agreeing_rankers_need_no_more(store: Store) -> None:
    (task_id,) = seed_tasks(store, n_prompts=1, k=3, styles=("brief",), required=2)
    settings = AnnotationOptions(gold_rate=0, overlap_tau=0.5, overlap_cap=4)
    for i in range(2):
        who = add_annotator(store, f"s{i}", "simulated")
        submit(store, who, _sub(next_task(store, who, settings), [1, 2, 3], f"r{i}"), settings)
    assert store.scalar("SELECT required_rankings FROM tasks WHERE id = ?", [task_id]) == 2
    assert next_task(store, add_annotator(store, "late", "simulated"), settings) is None


def test_the_rank_form_reads_strengths_and_ratings() -> None:
    assert strengths_from([2, 1, 3], ["slightly", "clearly", None]) == ["clearly", "slightly"]
    assert strengths_from([1, 2, 3], [None, None, None]) is None
    assert strengths_from([1, 1, 2], ["clearly", "clearly", None]) == ["clearly"]
    for ranks, chosen, message in [
        ([1, 2, 3], ["clearly", None, None], "rank 2 has none"),
        ([1, 2], [None, "clearly"], "ranked last"),
        ([1, 1, 2], ["clearly", "slightly", None], "different strengths"),
    ]:
        with pytest.raises(RankingError, match=message):
            strengths_from(ranks, chosen)
    assert attributes_from(["helpfulness", "verbosity"], [[3, None], [None, None]]) == [
        {"helpfulness": 3},
        {},
    ]
    assert attributes_from(["helpfulness"], [[None], [None]]) is None


def test_retakes_turn_to_other_questions_and_reviews_need_a_contested_task(store: Store) -> None:
    ids = seed_tasks(store, n_prompts=6, k=2, styles=("brief",))
    for tid in ids[:4]:
        mark_gold(store, tid, [1, 2])
    settings = AnnotationOptions(gold_rate=0, quiz_size=2, quiz_pass=1.0)
    bob = add_annotator(store, "bob", "annotator", PW)
    first = []
    for i in range(2):
        q = next_task(store, bob, settings)
        first.append(q["task_id"])
        submit(store, bob, _sub(q, [2, 1], f"b{i}"), settings)  # wrong both times
    retake = next_task(store, bob, settings)
    assert first == ids[:2] and retake["quiz"]["attempt"] == 2 and retake["task_id"] == ids[2]
    # Review: only contested tasks, never by one of its own rankers.
    rev = add_annotator(store, "rev", "reviewer", PW)
    with pytest.raises(UserError, match="not contested"):
        review.adjudicate(store, rev, ids[5], [1, 2], "fine")
    with pytest.raises(UserError, match="pass the qualification quiz first"):
        review.next_review(store, rev, settings)
