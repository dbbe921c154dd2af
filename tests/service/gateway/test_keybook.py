"""The gateway's key book on a real DuckDB file: keys are looked up from memory, a key created or
revoked counts at the next lookup, limits and usage are counted per key, and `tpm` holds what
requests in flight may still use."""

import threading

from service.core.store import Store
from service.gateway.key_records import create_key, revoke_key
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
    assert book.reserve(book.lookup(create_key(store, "free")), 10**9) == (0.0, None)  # no tpm: nothing held
