"""Rankings nobody leased (imports, clients' votes) go through the queue's own rules: `record_rankings`
checks, makes dense and deduplicates them as `submit` does, inside the caller's transaction."""

import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import Flag, RankingError, Submission
from service.core.enums import Role
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store
from tests.support.seeding import seed_tasks

NO_GOLD = AnnotationOptions(lease_s=600, gold_rate=0.0)


def counts(store: Store) -> tuple[int, int, int]:
    return tuple(store.scalar(f"SELECT count(*) FROM {t}") for t in ("rankings", "tasks", "prompts"))


def record(store: Store, *rankings: tuple[int, Submission]) -> list[queue.SubmitResult]:
    with store.write() as cur:
        return queue.record_rankings(cur, list(rankings))


def test_stored_dense_with_flags_and_gold_like_a_submit(store: Store) -> None:
    ids = seed_tasks(store, n_prompts=2, k=3, styles=("brief",))
    queue.mark_gold(store, ids[1], [1, 2, 3])
    who = queue.account_id(store, "import", Role.IMPORT)
    first, gold = record(
        store,
        (
            who,
            Submission(
                task_id=ids[0], submission_id="a", ranks=[1, 1, 3], flags=[Flag(position=2, reason="broken")]
            ),
        ),
        (who, Submission(task_id=ids[1], submission_id="b", ranks=[1, 3, 2])),
    )
    assert not first.duplicate and not gold.duplicate
    rows = {r["submission_id"]: r for r in store.query("SELECT * FROM rankings")}
    assert rows["a"]["ranks"] == [1, 1, 2] and '"broken"' in rows["a"]["flags"]  # competition -> dense
    assert rows["b"]["gold_agreement"] == pytest.approx(2 / 3)
    assert rows["a"]["time_spent_s"] is None  # nobody spent time on a lease


def test_a_repeated_submission_id_stores_nothing_new(store: Store) -> None:
    (tid, other) = seed_tasks(store, n_prompts=2, k=2, styles=("brief",))
    who = queue.account_id(store, "import", Role.IMPORT)
    (first,) = record(store, (who, Submission(task_id=tid, submission_id="same", ranks=[2, 1])))
    before = counts(store)
    (again,) = record(store, (who, Submission(task_id=tid, submission_id="same", ranks=[2, 1])))
    assert (again.ranking_id, again.duplicate) == (first.ranking_id, True) and counts(store) == before
    # Within one batch too, and a submit of a leased task that reuses the id is refused the same way.
    twice = record(
        store,
        (who, Submission(task_id=other, submission_id="new", ranks=[1, 2])),
        (who, Submission(task_id=other, submission_id="new", ranks=[1, 2])),
    )
    assert [r.duplicate for r in twice] == [False, True] and twice[0].ranking_id == twice[1].ranking_id
    with pytest.raises(RankingError, match="'same' was already used for another task"):
        record(store, (who, Submission(task_id=other, submission_id="same", ranks=[1, 2])))


@pytest.mark.parametrize("ranks", [[1, 2], [1, 2, 4], [2, 2, 3]])
def test_a_bad_ranking_is_refused_with_the_submit_message(store: Store, ranks: list[int]) -> None:
    """The same input gives the same message through both paths, and the transaction stores nothing."""
    (tid,) = seed_tasks(store, n_prompts=1, k=3, styles=("brief",))
    person = add_annotator(store, "sim", "simulated")
    leased = queue.next_task(store, person, NO_GOLD)
    assert leased is not None
    with pytest.raises(RankingError) as by_submit:
        queue.submit(store, person, Submission(task_id=leased["task_id"], submission_id="s", ranks=ranks))
    who = queue.account_id(store, "import", Role.IMPORT)
    before = counts(store)
    with pytest.raises(RankingError) as by_record, store.write() as cur:
        cur.execute("INSERT INTO prompts (text, source) VALUES ('written before the ranking', 'import')")
        queue.record_rankings(cur, [(who, Submission(task_id=tid, submission_id="r", ranks=ranks))])
    assert str(by_record.value) == str(by_submit.value)
    assert counts(store) == before  # the caller's earlier writes roll back with it


def test_no_task_no_account_and_one_answer_per_annotator(store: Store) -> None:
    (tid,) = seed_tasks(store, n_prompts=1, k=2, styles=("brief",))
    who = queue.account_id(store, "import", Role.IMPORT)
    with pytest.raises(RankingError, match="there is no task 999"):
        record(store, (who, Submission(task_id=999, submission_id="x", ranks=[1, 2])))
    with pytest.raises(UserError, match="no annotator with id 999"):
        record(store, (999, Submission(task_id=tid, submission_id="x", ranks=[1, 2])))
    record(store, (who, Submission(task_id=tid, submission_id="x", ranks=[1, 2])))
    with pytest.raises(RankingError, match=f"already answered task {tid}"):
        record(store, (who, Submission(task_id=tid, submission_id="y", ranks=[2, 1])))


def test_the_queue_counts_recorded_rankings(store: Store) -> None:
    """A task a recorded ranking completes leaves the queue, as one a submit completes does."""
    (tid,) = seed_tasks(store, n_prompts=1, k=2, styles=("brief",), required=1)
    person = add_annotator(store, "sim", "simulated")
    assert queue.progress(store, person, NO_GOLD)["queue"] == 1  # the book exists before the import
    record(
        store,
        (
            queue.account_id(store, "import", Role.IMPORT),
            Submission(task_id=tid, submission_id="i", ranks=[1, 2]),
        ),
    )
    assert queue.next_task(store, person, NO_GOLD) is None


def test_accounts_for_imports_are_made_once_and_keep_their_role(store: Store) -> None:
    first = queue.account_id(store, "import", Role.IMPORT)
    assert queue.account_id(store, "import", Role.IMPORT) == first
    assert store.query("SELECT name, role FROM annotators") == [{"name": "import", "role": "import"}]
    add_annotator(store, "alice", "annotator", "correct horse")
    with pytest.raises(UserError, match="'alice' exists with role 'annotator'"):
        queue.account_id(store, "alice", Role.IMPORT)
    with pytest.raises(UserError, match="not valid"):  # accounts.add_annotator's own checks apply
        queue.account_id(store, "bad name", Role.IMPORT)
