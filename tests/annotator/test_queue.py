"""The ranking queue through its functions: leases, overlap R, order, idempotency, gold, bad submissions."""

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from annotator import queue
from annotator.accounts import (
    LoginThrottle,
    add_annotator,
    authenticate,
    hash_password,
    login,
    set_disabled,
    verify_password,
)
from annotator.ranking import Flag, RankingError, Submission
from annotator.task_views import task_view
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store
from tests.support.seeding import seed_tasks

NO_GOLD = AnnotationOptions(lease_s=600, gold_rate=0.0)


def people(store: Store, n: int) -> list[int]:
    return [add_annotator(store, f"ann{i}", "simulated") for i in range(n)]


def sub(task: dict, ranks=None, sid=None, **kw) -> Submission:
    k = len(task["candidates"])
    return Submission(
        task_id=task["task_id"],
        submission_id=sid or f"s-{random.random()}",
        ranks=ranks if ranks is not None or kw.get("skip_reason") else list(range(1, k + 1)),
        **kw,
    )


def counts(store: Store) -> tuple[int, int]:
    return store.scalar("SELECT count(*) FROM rankings"), store.scalar("SELECT count(*) FROM tasks")


def test_overlap_leases_and_never_twice(store: Store) -> None:
    seed_tasks(store, n_prompts=2, k=2, required=2)  # 2 prompts x 2 styles x 2 samples = 4 tasks
    a, b, c = people(store, 3)
    seen: dict[int, list[int]] = {a: [], b: [], c: []}
    # a and b each lease one task at a time; with R = 2 both can hold the same task, c cannot be third.
    ta = queue.next_task(store, a, NO_GOLD)
    tb = queue.next_task(store, b, NO_GOLD)
    assert ta["task_id"] == tb["task_id"]  # same priority: fewest rankings, then oldest
    tc = queue.next_task(store, c, NO_GOLD)
    assert tc["task_id"] != ta["task_id"]  # R = 2 slots are taken by live leases
    assert (
        queue.next_task(store, a, NO_GOLD)["task_id"] == ta["task_id"]
    )  # asking again returns the held task
    for who, t in [(a, ta), (b, tb), (c, tc)]:
        queue.submit(store, who, sub(t))
        seen[who].append(t["task_id"])
    for who in (a, b, c):
        while (t := queue.next_task(store, who, NO_GOLD)) is not None:
            assert t["task_id"] not in seen[who]
            queue.submit(store, who, sub(t))
            seen[who].append(t["task_id"])
    per_task = store.query("SELECT task_id, count(*) AS n FROM rankings GROUP BY task_id")
    assert sorted(r["n"] for r in per_task) == [2, 2, 2, 2]  # exactly R each
    assert all(len(v) == len(set(v)) for v in seen.values())
    assert queue.progress(store, a) == {"today": len(seen[a]), "total": len(seen[a]), "queue": 0}


def test_priority_then_fewest_rankings_then_oldest(store: Store) -> None:
    ids = seed_tasks(store, n_prompts=3, k=2, styles=("brief",), required=3)  # 3 tasks
    a, b = people(store, 2)
    with store.write() as cur:
        cur.execute("UPDATE tasks SET priority = 1 WHERE id = ?", [ids[2]])
    assert queue.next_task(store, a, NO_GOLD)["task_id"] == ids[2]
    t = queue.next_task(store, b, NO_GOLD)
    assert t["task_id"] == ids[2]
    queue.submit(store, b, sub(t))
    with store.write() as cur:
        cur.execute("UPDATE tasks SET priority = 0")
    # b has done ids[2]; among the rest, fewest rankings then oldest: ids[0].
    assert queue.next_task(store, b, NO_GOLD)["task_id"] == ids[0]


def test_expired_lease_returns_task_and_late_submit_rules(store: Store, monkeypatch) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",), required=1)  # 1 task
    a, b, c = people(store, 3)
    short = AnnotationOptions(lease_s=0.2, gold_rate=0.0)
    start = datetime.now(UTC)
    monkeypatch.setattr(queue, "_now", lambda: start)  # a fake clock: no race with a loaded machine
    ta = queue.next_task(store, a, short)
    assert queue.next_task(store, b, short) is None  # leased to a
    monkeypatch.setattr(queue, "_now", lambda: start + timedelta(seconds=0.3))
    tb = queue.next_task(store, b, short)  # a's lease expired: back in the queue
    assert tb["task_id"] == ta["task_id"]
    queue.submit(store, b, sub(tb))
    before = counts(store)
    with pytest.raises(queue.NotLeased, match="expired and others have completed or taken it"):
        queue.submit(store, a, sub(ta))
    assert counts(store) == before
    with pytest.raises(queue.NotLeased, match="not leased to you"):
        queue.submit(store, c, sub(ta))
    assert counts(store) == before


def test_expired_lease_still_accepted_when_nobody_else_took_it(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",))
    (a,) = people(store, 1)
    t = queue.next_task(store, a, AnnotationOptions(lease_s=0.1, gold_rate=0))
    time.sleep(0.2)
    assert queue.submit(store, a, sub(t)).duplicate is False


def test_idempotent_submission(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=3, styles=("brief",), required=1)
    a, b = people(store, 2)
    t = queue.next_task(store, a, NO_GOLD)
    first = queue.submit(store, a, sub(t, [1, 2, 2], sid="same"))
    again = queue.submit(store, a, sub(t, [1, 2, 2], sid="same"))
    assert (again.ranking_id, again.duplicate, first.duplicate) == (first.ranking_id, True, False)
    assert counts(store)[0] == 1
    with pytest.raises(RankingError, match="already used for another task"):
        queue.submit(store, b, sub(t, sid="same"))


@pytest.mark.parametrize(
    "ranks, message",
    [
        ([1, 2], "the task has 3 candidates but 2 ranks"),
        ([1, 2, 4], "rank 4 is outside 1..3"),
        ([2, 2, 3], "do not form an order"),
    ],
)
def test_bad_rankings_store_nothing(store: Store, ranks, message) -> None:
    seed_tasks(store, n_prompts=1, k=3, styles=("brief",))
    (a,) = people(store, 1)
    t = queue.next_task(store, a, NO_GOLD)
    before = counts(store)
    with pytest.raises(RankingError, match=message):
        queue.submit(store, a, sub(t, ranks))
    assert counts(store) == before
    with pytest.raises(RankingError, match="no task 999"):
        queue.submit(store, a, Submission(task_id=999, submission_id="x", ranks=[1, 2, 3]))


def test_ties_flags_skip_and_time_are_stored(store: Store) -> None:
    seed_tasks(store, n_prompts=2, k=3, styles=("brief",))
    (a,) = people(store, 1)
    t = queue.next_task(store, a, NO_GOLD)
    queue.submit(
        store, a, sub(t, [1, 1, 3], flags=[Flag(position=2, reason="off_topic")], rationale="tie at top")
    )
    row = store.query("SELECT * FROM rankings")[0]
    assert row["ranks"] == [1, 1, 2] and not row["skipped"] and row["rationale"] == "tie at top"
    assert '"off_topic"' in row["flags"] and row["time_spent_s"] >= 0
    t2 = queue.next_task(store, a, NO_GOLD)
    queue.submit(store, a, sub(t2, skip_reason="all_bad", skip_text="all repeat themselves"))
    skip = store.query("SELECT * FROM rankings WHERE skipped")[0]
    assert skip["ranks"] is None and skip["skip_reason"] == "all_bad: all repeat themselves"
    assert (
        store.scalar(
            "SELECT count(*) FROM tasks t WHERE NOT EXISTS "
            "(SELECT 1 FROM rankings r WHERE r.task_id = t.id AND NOT r.skipped)"
        )
        == 1
    )  # skips don't count


def test_gold_tasks_are_mixed_in_and_scored(store: Store) -> None:
    ids = seed_tasks(store, n_prompts=4, k=3, styles=("brief",))
    queue.mark_gold(store, ids[0], [1, 2, 3])
    with pytest.raises(RankingError, match="outside 1..3"):
        queue.mark_gold(store, ids[1], [1, 2, 9])
    (a,) = people(store, 1)
    always_gold = AnnotationOptions(gold_rate=1.0)
    t = queue.next_task(store, a, always_gold, random.Random(0))
    assert t["task_id"] == ids[0]
    queue.submit(store, a, sub(t, [1, 3, 2]))  # agrees on (0,1), (0,2); not (1,2)
    assert store.scalar("SELECT gold_agreement FROM rankings") == pytest.approx(2 / 3)
    # Gold done: the queue falls back to regular tasks.
    assert queue.next_task(store, a, always_gold, random.Random(0))["task_id"] != ids[0]


def test_blind_by_default(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",))
    person = add_annotator(store, "alice", "annotator", "correct horse")
    t = queue.next_task(store, person, NO_GOLD)
    assert set(t["candidates"][0]) == {"position", "text"}
    shown = task_view(store, t["task_id"], show_sources=True)
    assert shown["candidates"][0]["system_prompt"] == "brief"


def test_accounts_hashes_and_disable(store: Store) -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored) and not verify_password("wrong", stored)
    assert hash_password("correct horse") != stored  # salted
    add_annotator(store, "alice", "annotator", "correct horse")
    assert authenticate(store, "alice", "correct horse")["name"] == "alice"
    assert authenticate(store, "alice", "nope") is None and authenticate(store, "bob", "x") is None
    set_disabled(store, "alice")
    assert authenticate(store, "alice", "correct horse") is None
    for bad, message in [
        (("al ice", "annotator", "longenough"), "not valid"),
        (("carol", "root", "longenough"), "valid: annotator, admin"),
        (("carol", "annotator", "short"), "at least 8"),
        (("alice", "annotator", "longenough"), "already exists"),
    ]:
        with pytest.raises(UserError, match=message):
            add_annotator(store, *bad)
    with pytest.raises(UserError, match="no annotator named 'zed'"):
        set_disabled(store, "zed")
    assert store.scalar("SELECT count(*) FROM annotators") == 1


def test_failed_logins_are_slowed_down(store: Store) -> None:
    add_annotator(store, "alice", "annotator", "correct horse")
    now = [1000.0]  # a fake clock: the waits are exact whatever the machine's load
    throttle = LoginThrottle(free=2, max_wait_s=60, clock=lambda: now[0])
    for _ in range(2):
        assert login(store, throttle, "alice", "guess") is None
    assert throttle.wait_s("alice") == 1.0  # past the free tries: 2^0 s before the next attempt
    assert login(store, throttle, "alice", "correct horse") is None  # refused during the wait, unchecked
    assert throttle.wait_s("bob") == 0  # per account
    now[0] += 0.5
    assert throttle.wait_s("alice") == 0.5
    now[0] += 0.5
    assert login(store, throttle, "alice", "guess") is None
    assert throttle.wait_s("alice") == 2.0  # each further failure doubles the wait
    now[0] += 2.0
    assert login(store, throttle, "alice", "correct horse")["name"] == "alice"
    assert throttle.wait_s("alice") == 0  # success resets


def test_parallel_guesses_cannot_slip_past_the_throttle() -> None:
    import threading

    throttle = LoginThrottle(free=3)
    granted = []
    threads = [threading.Thread(target=lambda: granted.append(throttle.begin("alice"))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 3 and throttle.wait_s("alice") > 0
    throttle.succeeded("alice")
    assert throttle.begin("alice")


def test_simulated_accounts_never_take_over_a_person(store: Store) -> None:
    from annotator.simulate_run import ensure_accounts
    from annotator.simulated import Profile

    add_annotator(store, "alice", "annotator", "correct horse")
    with pytest.raises(UserError, match="'alice' exists and is not a simulated annotator"):
        ensure_accounts(store, {"alice": Profile()})
    add_annotator(store, "bare", "simulated")  # made by hand, without a profile
    assert ensure_accounts(store, {"bare": Profile(noise=2.0)})["bare"] == Profile()


def test_judges_count_toward_overlap_only_when_configured(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",), required=1)  # 1 task needing 1 ranking
    judge = add_annotator(store, "judge-x", "judge")
    (person,) = people(store, 1)
    t = queue.next_task(store, judge, NO_GOLD)
    queue.submit(store, judge, sub(t))
    # By default the judge ranked beside people: the task is still open for them.
    assert queue.next_task(store, person, NO_GOLD)["task_id"] == t["task_id"]
    counting = AnnotationOptions(lease_s=600, gold_rate=0.0, judges_count=True)
    other = add_annotator(store, "ann-late", "simulated")
    assert (
        queue.next_task(store, other, counting) is None
    )  # the judge's ranking (and the person's lease) fill it
    assert queue.progress(store, judge, NO_GOLD)["queue"] == 0  # a judge never gets a task twice
