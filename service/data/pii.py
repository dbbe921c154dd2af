"""Personal data taken out of served traffic on its way into prompts and tasks (`prompts from-traffic`,
votes), offline.

What is found, and how:

* e-mail addresses, by the shape scrubadub's detector also uses;
* phone numbers, by Google's libphonenumber (`phonenumbers`): any number written with its country
  code, and national formats of the regions in `gateway.phone_regions`;
* payment card numbers: 13 to 19 digits, spaced or dashed, that pass the Luhn check (python-stdnum);
* credentials in URLs (`scheme://user:password@host`).

Each is replaced by a placeholder (`{{EMAIL}}`, `{{PHONE}}`, `{{CARD}}`, `{{CREDENTIALS}}`), so an
annotator still sees that something was there, and counted in `rankloop_pii_removed_total`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import phonenumbers
from stdnum import luhn

from service.core.metrics import PII_REMOVED

URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/:@]+:[^\s/@]+@", re.IGNORECASE)
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")


def _cards(text: str, counts: Counter) -> str:
    def replace(m: re.Match) -> str:
        if luhn.is_valid(re.sub(r"\D", "", m.group())):
            counts["card"] += 1
            return "{{CARD}}"
        return m.group()

    return CARD.sub(replace, text)


def _phones(text: str, regions: Iterable[str], counts: Counter) -> str:
    for region in regions:
        spans = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        ]
        for start, end in reversed(spans):  # from the end, so earlier offsets stay right
            text = text[:start] + "{{PHONE}}" + text[end:]
        counts["phone"] += len(spans)
    return text


def scrub(text: str, regions: Iterable[str], counts: Counter) -> str:
    """`text` without the personal data above; `counts` gets one per kind found."""

    def creds(m: re.Match) -> str:
        counts["url_credentials"] += 1
        return m.group(1) + "{{CREDENTIALS}}@"

    def email(m: re.Match) -> str:
        counts["email"] += 1
        return "{{EMAIL}}"

    text = URL_CREDENTIALS.sub(creds, text)  # before e-mail: user:password@host looks like one
    text = EMAIL.sub(email, text)
    text = _cards(text, counts)  # before phones: a card number can read as a long phone number
    return _phones(text, regions, counts)


def scrub_messages(messages: list[dict], regions: Iterable[str], counts: Counter) -> list[dict]:
    return [{**m, "content": scrub(m["content"], regions, counts)} for m in messages]


def count(counts: Counter, source: str) -> None:
    """Add what was removed to the metrics (`source`: prompts or votes)."""
    for kind, n in counts.items():
        PII_REMOVED.labels(kind, source).inc(n)
