"""Personal data taken out of served traffic on its way into prompts and tasks (`prompts from-traffic`,
votes), offline.

What is found, and how:

* e-mail addresses, by the shape scrubadub's detector also uses;
* phone numbers, by Google's libphonenumber (`phonenumbers`): any number written with its country
  code, and national formats of the regions in `gateway.phone_regions`;
* payment card numbers as they are written (4-4-4-4 digits and longer, or 4-6-5), with a card
  issuer's prefix, that pass the Luhn check (python-stdnum);
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

# user:password@ (the user may be empty, the password may hold '@': up to the last '@' before the host)
URL_CREDENTIALS = re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/:@]*:[^\s/]+@", re.IGNORECASE)
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Card numbers as they are written: 4-4-4-4(-3) digits, or American Express's 4-6-5, with one kind of
# separator (or none), not inside a longer number or a decimal. An issuer's prefix and the Luhn check
# follow, so lists of years or long figures stay.
CARD = re.compile(
    r"(?<![\d.,-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{1,7}|3[47]\d{2}([ -]?)\d{6}\2\d{5})(?!\d|[,.-]\d)"
)


def _issuer(d: str) -> bool:
    """Visa, Mastercard, American Express, Discover, JCB or Diners by the number's first digits."""
    return (
        d[0] == "4"
        or 51 <= int(d[:2]) <= 55
        or 2221 <= int(d[:4]) <= 2720
        or d[:2] in ("34", "37", "35", "36", "30", "38", "65")
        or d[:4] == "6011"
        or 644 <= int(d[:3]) <= 649
    )


def _cards(text: str, counts: Counter) -> str:
    def replace(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _issuer(digits) and luhn.is_valid(digits):
            counts["card"] += 1
            return "{{CARD}}"
        return m.group()

    return CARD.sub(replace, text)


def _phones(text: str, regions: Iterable[str], counts: Counter) -> str:
    # No region: numbers written with their country code only (libphonenumber's unknown region, ZZ).
    for region in list(regions) or ["ZZ"]:
        spans = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
        ]
        for start, end in reversed(spans):  # from the end, so earlier offsets stay right
            text = text[:start] + "{{PHONE}}" + text[end:]
        if spans:
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
