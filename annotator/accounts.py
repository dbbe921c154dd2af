"""Annotator accounts: salted scrypt password hashes, roles, disabling, and login throttling.

Roles: `annotator` ranks tasks, `admin` also sees the admin tab and its actions,
`simulated` accounts are rankloop's own simulated annotators (no password: they act
through the admin key), `import` owns rankings imported from public preference data.

    rankloop annotators add alice --role annotator        # prompts for the password
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.core.errors import StoreError
from service.core.store import Store

ROLES = ("annotator", "admin", "simulated", "import", "judge")
HUMAN_ROLES = ("annotator", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
# scrypt at n=2**14, r=8: ~16 MiB and tens of milliseconds per check, RFC 7914's interactive setting.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


def add_annotator(store: Store, name: str, role: str, password: str | None = None, profile: str | None = None) -> int:
    """Create an account; people need a password of 8+ characters, simulated/import accounts none."""
    if not NAME_RE.match(name or ""):
        raise StoreError(f"annotator name {name!r} is not valid: 1-64 letters, digits, '_', '.', '@', '-'")
    if role not in ROLES:
        raise StoreError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    if role in HUMAN_ROLES and (password is None or len(password) < MIN_PASSWORD):
        raise StoreError(f"a password of at least {MIN_PASSWORD} characters is required for role {role}")
    pw_hash = hash_password(password) if password else None
    with store.write() as cur:
        if cur.execute("SELECT 1 FROM annotators WHERE name = ?", [name]).fetchone():
            raise StoreError(f"annotator {name!r} already exists")
        return cur.execute(
            "INSERT INTO annotators (name, role, password_hash, profile) VALUES (?, ?, ?, ?) RETURNING id",
            [name, role, pw_hash, profile],
        ).fetchone()[0]


def get_annotator(store: Store, name: str) -> dict | None:
    rows = store.query("SELECT * FROM annotators WHERE name = ?", [name])
    return rows[0] if rows else None


def list_annotators(store: Store) -> list[dict]:
    return store.query(
        """SELECT a.id, a.name, a.role, a.disabled, a.created_at,
                  count(r.id) FILTER (WHERE NOT r.skipped) AS rankings
           FROM annotators a LEFT JOIN rankings r ON r.annotator_id = a.id
           GROUP BY ALL ORDER BY a.id"""
    )


def set_disabled(store: Store, name: str, disabled: bool = True) -> None:
    with store.write() as cur:
        if not cur.execute("SELECT 1 FROM annotators WHERE name = ?", [name]).fetchone():
            raise StoreError(f"no annotator named {name!r}; `rankloop annotators list` shows them")
        cur.execute("UPDATE annotators SET disabled = ? WHERE name = ?", [disabled, name])


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(12))


def authenticate(store: Store, name: str, password: str) -> dict | None:
    """The account if the name and password match an enabled person's account, else None.
    One scrypt check happens whatever the outcome, so timing does not tell which names exist."""
    acct = get_annotator(store, name)
    ok = verify_password(password, acct["password_hash"] if acct and acct["password_hash"] else _dummy_hash())
    if acct is None or not ok or acct["disabled"] or acct["role"] not in HUMAN_ROLES:
        return None
    return acct


@dataclass
class LoginThrottle:
    """Slows down guessing: after `free` failed attempts for a name, each further attempt must
    wait 1, 2, 4, ... s (capped at `max_wait_s`) after the last; success resets the count.
    An attempt is counted as failed when it starts, so parallel guesses cannot slip through."""

    free: int = 3
    max_wait_s: float = 60.0
    max_names: int = 10_000
    clock: Callable[[], float] = time.monotonic  # injectable, so tests need no sleeps
    _fails: dict[str, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _wait(self, name: str) -> float:
        count, last = self._fails.get(name, (0, 0.0))
        if count < self.free:
            return 0.0
        return max(0.0, last + min(2.0 ** (count - self.free), self.max_wait_s) - self.clock())

    def wait_s(self, name: str) -> float:
        """Seconds before the next attempt for `name` is considered (0 = now)."""
        with self._lock:
            return self._wait(name)

    def begin(self, name: str) -> bool:
        """Reserve an attempt: False while `name` must wait; else the attempt counts as a failure
        until `succeeded` clears it."""
        with self._lock:
            if self._wait(name) > 0:
                return False
            if len(self._fails) >= self.max_names and name not in self._fails:
                oldest = sorted(self._fails, key=lambda n: self._fails[n][1])[: self.max_names // 10]
                for n in oldest:
                    del self._fails[n]
            count, _ = self._fails.get(name, (0, 0.0))
            self._fails[name] = (count + 1, self.clock())
            return True

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop(name, None)


def login(store: Store, throttle: LoginThrottle, name: str, password: str) -> dict | None:
    """authenticate() behind the throttle: attempts during a wait fail without checking the password."""
    if not throttle.begin(name):
        return None
    acct = authenticate(store, name, password)
    if acct is not None:
        throttle.succeeded(name)
    return acct


class SessionSigner:
    """Bearer tokens for the JSON API: `annotator_id.expiry.hmac`, signed with the data
    directory's secret, so they survive a service restart and need no table."""

    def __init__(self, secret: bytes, ttl_s: float = 12 * 3600):
        self._secret, self.ttl_s = secret, ttl_s

    def _mac(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, annotator_id: int) -> str:
        payload = f"{annotator_id}.{int(time.time() + self.ttl_s)}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str) -> int | None:
        parts = token.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts[:2]):
            return None
        payload = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(payload), parts[2]) or int(parts[1]) < time.time():
            return None
        return int(parts[0])
