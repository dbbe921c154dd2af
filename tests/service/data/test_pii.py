"""Personal data never reaches annotation from served traffic: planted e-mail addresses, phone
numbers, card numbers and URL credentials are gone from the prompts `prompts from-traffic` adds and
from the prompt and candidates a vote turns into a task, counted in the metrics; with
`gateway.traffic_to_annotation: false` neither path takes traffic at all."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.core import metrics
from service.core.errors import UserError
from service.core.settings import GatewayOptions
from service.core.store import Store
from service.data.pii import scrub
from service.data.traffic_prompts import prompts_from_traffic
from service.gateway.feedback import Feedback, record_feedback
from service.gateway.schemas import GatewayError
from tests.service.data.test_votes import KEY, logged, vote

PLANTED = {
    "email": "jane.doe+rl@example.co.uk",
    "phone": "+44 20 7946 0958",
    "us phone": "(415) 555-2671",
    "card": "4111-1111-1111-1111",
    "url credentials": "https://bob:hunter2@db.example.com/x",
}
SECRETS = ["jane.doe", "7946", "555-2671", "1111-1111", "hunter2", "bob:"]
ASK = [{"role": "user", "content": "My details: " + "; ".join(PLANTED.values()) + ". What now?"}]


def removed(kind: str, source: str) -> float:
    return metrics.PII_REMOVED.labels(kind, source)._value.get()


def test_what_is_found_and_what_is_left() -> None:
    counts: Counter = Counter()
    text = scrub(
        "call 212-555-0143 about order 1234 5678 9012 3456 (not a card: Luhn fails), year 2024, "
        "mail me at x@y.org, or see https://example.com/a@b",
        ["US"],
        counts,
    )
    assert "1234 5678 9012 3456" in text and "2024" in text and "https://example.com/a@b" in text
    assert "{{EMAIL}}" in text and "x@y.org" not in text and counts["email"] == 1
    assert counts["card"] == 0


@pytest.mark.parametrize(
    "text, left",
    [
        ("years 1991 1992 1993 1994 and 2017 2018 2019 2020", None),  # Luhn-valid, but no card
        ("a ratio of 0.4111111111111111", None),
        ("see https://example.com:8080/x@y", None),
        ("card 4111 1111 1111 1111, amex 3782 822463 10005", "card {{CARD}}, amex {{CARD}}"),
        (
            "redis://:hunter2@cache:6379 and https://bob:p@ss@host/x",
            "redis://{{CREDENTIALS}}@cache:6379 and https://{{CREDENTIALS}}@host/x",
        ),
    ],
)
def test_numbers_and_urls_that_are_not_personal_stay(text: str, left: str | None) -> None:
    assert scrub(text, ["US"], Counter()) == (left or text)


def test_without_regions_numbers_with_a_country_code_still_go() -> None:
    counts: Counter = Counter()
    assert scrub("call +44 20 7946 0958", [], counts) == "call {{PHONE}}" and counts == {"phone": 1}


def test_prompts_from_traffic_lose_personal_data(store: Store) -> None:
    for i in range(2):
        logged(store, KEY, f"resp-{i}", ["a", "b"], messages=ASK)
    before = {k: removed(k, "prompts") for k in ("email", "phone", "card", "url_credentials")}
    r = prompts_from_traffic(store, None, 2)
    assert r["added"] == 1 and r["personal_data_removed"] == {
        "email": 1,
        "phone": 2,
        "card": 1,
        "url_credentials": 1,
    }
    stored = store.query("SELECT text FROM prompts WHERE source = 'served'")[0]["text"]
    assert not [s for s in SECRETS if s in stored], stored
    assert "{{EMAIL}}" in stored and "{{CARD}}" in stored and stored.count("{{PHONE}}") == 2
    assert removed("phone", "prompts") == before["phone"] + 2
    registry = CollectorRegistry()
    registry.register(metrics.PII_REMOVED)
    assert b'rankloop_pii_removed_total{kind="card",source="prompts"}' in generate_latest(registry)


def test_a_vote_becomes_a_task_without_personal_data(store: Store) -> None:
    logged(store, KEY, "resp-v", ["Write to jane.doe+rl@example.co.uk", "Call (415) 555-2671"], messages=ASK)
    before = removed("email", "votes")
    assert vote(store, KEY, "resp-v", 0)["ranking_id"] is not None
    texts = [r["text"] for r in store.query("SELECT text FROM samples")]
    prompts = [r["text"] for r in store.query("SELECT text FROM prompts")]
    everything = json.dumps(texts + prompts)
    assert not [s for s in SECRETS if s in everything], everything
    assert "Write to {{EMAIL}}" in texts and "Call {{PHONE}}" in texts
    assert removed("email", "votes") == before + 2


def test_traffic_can_be_kept_out_of_annotation(store: Store) -> None:
    logged(store, KEY, "resp-x", ["a", "b"], messages=ASK)
    off = GatewayOptions(traffic_to_annotation=False)
    with pytest.raises(UserError, match="traffic_to_annotation: false"):
        prompts_from_traffic(store, None, 1, off)
    with pytest.raises(GatewayError, match="traffic_to_annotation") as e:
        record_feedback(store, KEY, Feedback(response_id="resp-x", preferred_index=0), off)
    assert e.value.status == 403
    assert store.scalar("SELECT count(*) FROM rankings") == 0
    assert store.scalar("SELECT count(*) FROM prompts") == 0
    with pytest.raises(ValueError, match="unknown region.*XX"):
        GatewayOptions(phone_regions=["XX"])
