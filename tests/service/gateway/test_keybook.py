"""The gateway's key book on a real DuckDB file: keys are looked up from memory, a key created or
revoked counts at the next lookup, limits and usage are counted per key, and `tpm` holds what
requests in flight may still use."""

import threading

import pytest

from service.core.errors import UserError
from service.core.store import Store
from service.gateway.budgets import BudgetSpent
from service.gateway.key_records import create_key, list_keys, revoke_key
from service.gateway.keys import KeyBook


def test_lookups_follow_creates_and_revokes_at_once(store: Store) -> None:
    book = KeyBook(store)
    first = create_key(store, "first")
    assert book.lookup(first).name == "first"
    assert book.lookup("rk-not-a-key") is None
    second = create_key(store, "second", rpm=1)  # made after the book read the keys
    assert book.lookup(second).rpm == 1
    revoke_key(store, "first")
    assert book.lookup(first) is None
    assert book.lookup(second).name == "second"


def test_memory_is_what_answers(store: Store) -> None:
    """Without a create or revoke in between, a lookup does not read the table again: a row changed
    behind the book's back (no writer does that while the service runs) is not seen."""
    book = KeyBook(store)
    key = create_key(store, "app")
    assert book.lookup(key) is not None
    with store.write() as cur:
        cur.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'app'")
    assert book.lookup(key) is not None
    create_key(store, "other")  # any change: the book reads the keys again
    assert book.lookup(key) is None


def test_limits_and_usage(store: Store) -> None:
    book = KeyBook(store)
    key = book.lookup(create_key(store, "slow", rpm=2))
    assert book.admit(key) == 0 and book.admit(key) == 0
    assert 0 < book.admit(key) <= 60
    book.record(key, 5, 7)
    book.flush()
    row = store.query("SELECT requests, prompt_tokens, completion_tokens FROM api_keys WHERE name = 'slow'")[
        0
    ]
    assert row == {"requests": 2, "prompt_tokens": 5, "completion_tokens": 7}


def test_tpm_reserves_requests_in_flight_and_settles_them(store: Store) -> None:
    """Twenty concurrent requests that may use 40 tokens each against tpm 100: two fit; the window
    holds their reservations until they settle at what they used, which makes room again."""
    book = KeyBook(store)
    key = book.lookup(create_key(store, "burst", tpm=100))
    results: list[tuple[float, list | None]] = []
    start = threading.Barrier(20)

    def ask() -> None:
        start.wait()
        results.append(book.reserve(key, 40))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [h for wait, h in results if h is not None]
    assert len(held) == 2 and all(0 < wait <= 60 for wait, h in results if h is None)
    book.record(key, 4, 6, held[0])  # used 10 of its 40
    assert book.reserve(key, 40)[1] is not None  # 40 + 10 + 40 = 90
    assert book.reserve(key, 40)[1] is None  # 130 > 100
    wait, free = book.reserve(book.lookup(create_key(store, "free")), 10**9)
    assert wait == 0 and free is not None and free.window is None and free.budget is None  # no limits


def test_budgets_per_day_hold_requests_in_flight_and_survive_a_restart(store: Store) -> None:
    book = KeyBook(store)
    key = book.lookup(create_key(store, "budgeted", tokens_per_day=100, tokens_per_month=1000))
    assert key.budgets == {"day": 100, "month": 1000}
    _, first = book.reserve(key, 60)
    with pytest.raises(BudgetSpent) as e:
        book.reserve(key, 60)  # 60 held + 60 > 100
    assert e.value.period == "day" and e.value.limit == 100 and 0 < e.value.reset_s <= 86400
    book.record(key, 20, 10, first)  # used 30 of its 60
    _, second = book.reserve(key, 60)  # 30 + 60 = 90
    book.record(key, 30, 30, second)  # 90 used today
    book.record(key, 0, 0, second)  # settled already (an error after the answer): ignored
    book.flush()
    again = KeyBook(store)  # a restarted service reads what was used
    with pytest.raises(BudgetSpent, match="day budget 100 spent"):
        again.reserve(key, 20)
    assert (
        store.scalar("SELECT sum(tokens) FROM key_usage WHERE period = strftime(current_date, '%Y-%m')") == 90
    )
    row = next(r for r in list_keys(store) if r["name"] == "budgeted")
    assert row["tokens_today"] == 90 and row["tokens_per_day"] == 100
    with pytest.raises(UserError, match="--tokens-per-day must be between 1"):
        create_key(store, "zero", tokens_per_day=0)
