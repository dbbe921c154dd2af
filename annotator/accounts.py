"""Annotator accounts: salted scrypt password hashes, roles, disabling, and login throttling.

Roles (`service.core.enums.Role`): `annotator` ranks tasks, `admin` also sees the admin tab
and its actions, `simulated` accounts are rankloop's own simulated annotators and `judge`
accounts its model judges (no password: they act through the admin key), `import` owns
rankings imported from public preference data. Who may call what is decided in
`service/web/auth.py`; this module keeps the accounts and the failed-login throttle.

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

from service.core.enums import HUMAN_ROLES, Role
from service.core.errors import NotFound, UserError
from service.core.store import Store

ROLES = tuple(Role)
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
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


RESERVED_PREFIX = "traffic."


def add_annotator(
    store: Store, name: str, role: str, password: str | None = None, profile: str | None = None
) -> int:
    """Create an account; people need a password of 8+ characters, simulated/import accounts none."""
    if not NAME_RE.match(name or ""):
        raise UserError(f"annotator name {name!r} is not valid: 1-64 letters, digits, '_', '.', '@', '-'")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    if name.startswith(RESERVED_PREFIX) and role != Role.IMPORT:
        # served traffic votes as `traffic.KEYNAME` (service/data/votes.py): a person may not take that name
        raise UserError(
            f"annotator names starting with {RESERVED_PREFIX!r} are kept for votes from served traffic"
        )
    if role in HUMAN_ROLES and (password is None or len(password) < MIN_PASSWORD):
        raise UserError(f"a password of at least {MIN_PASSWORD} characters is required for role {role}")
    pw_hash = hash_password(password) if password else None
    with store.write() as cur:
        if cur.execute("SELECT 1 FROM annotators WHERE name = ?", [name]).fetchone():
            raise UserError(f"annotator {name!r} already exists")
        row = cur.execute(
            "INSERT INTO annotators (name, role, password_hash, profile) VALUES (?, ?, ?, ?) RETURNING id",
            [name, role, pw_hash, profile],
        ).fetchone()
        assert row is not None  # RETURNING gives the inserted row
        return int(row[0])


# Every request looks up its account: rows are cached per store. Accounts change only through this
# module (and an import, which adds one), and each change drops the cache and bumps its version; a
# row read while a change happened is not cached (it may be the old one), and a name that is not
# found is not cached, so an account added any other way is found.
_ACCOUNTS_LOCK = threading.Lock()


def _account_cache(store: Store) -> dict:
    return store.caches.setdefault("accounts", {"version": 0, "rows": {}})


def get_annotator(store: Store, name: str | None = None, *, id: int | None = None) -> dict | None:
    """The account named `name` (or with this `id`), or None."""
    key = name if id is None else id
    with _ACCOUNTS_LOCK:
        cache = _account_cache(store)
        cached, version = cache["rows"].get(key), cache["version"]
    if cached is not None:
        return cached
    rows = store.query(f"SELECT * FROM annotators WHERE {'name' if id is None else 'id'} = ?", [key])
    if rows:
        with _ACCOUNTS_LOCK:
            cache = _account_cache(store)
            if cache["version"] == version:
                cache["rows"].update({rows[0]["name"]: rows[0], rows[0]["id"]: rows[0]})
    return rows[0] if rows else None


def forget_accounts(store: Store) -> None:
    """Call after changing the annotators table."""
    with _ACCOUNTS_LOCK:
        cache = _account_cache(store)
        cache["version"] += 1
        cache["rows"] = {}


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
            raise NotFound(f"no annotator named {name!r}; `rankloop annotators list` shows them")
        cur.execute("UPDATE annotators SET disabled = ? WHERE name = ?", [disabled, name])
    forget_accounts(store)


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
class _Count:
    fails: int = 0  # failures not yet forgotten (a name's also counts its attempts in flight)
    last: float = 0.0  # when the last of them counted
    pending: int = 0  # an address's attempts in flight


@dataclass
class LoginThrottle:
    """Slows down password guessing, per account name and per client address.

    * A name: each attempt counts as a failure from the moment it starts, so parallel guesses at one
      account cannot slip through; a success clears the name.
    * An address: only failures count, so the people behind one office's NAT are never held back by
      their own logins, while spraying one guess over many names is. Once an address is over its free
      failures its attempts in flight count too (after a wait, one attempt gets through, not a burst),
      and at most `max_in_flight` of its attempts run at once.

    After `free` failures for a name (`free_per_address` for an address), each further attempt must
    wait 1, 2, 4, ... s (at most `max_wait_s`) after the last. Counts decay: each `forget_s` without a
    new failure forgets one. Memory is bounded: keys are hashes of fixed size, at most `max_keys`;
    when full, entries that no longer hold anyone back are dropped, and while every entry still does,
    new keys wait (a full table of live throttles is an attack in progress)."""

    free: int = 3
    free_per_address: int = 30
    max_wait_s: float = 60.0
    forget_s: float = 600.0
    max_in_flight: int = 64
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic  # injectable, so tests need no sleeps
    _counts: dict[bytes, _Count] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _key(kind: str, value: str) -> bytes:
        """A fixed-size key (a 2 MB name costs 16 bytes)."""
        return hashlib.blake2b(f"{kind}:{value}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _keys(self, name: str, address: str | None) -> tuple[bytes, bytes | None]:
        return self._key("name", name), self._key("addr", address) if address else None

    def _live(self, c: _Count, now: float) -> int:
        """The failures not yet forgotten: one per whole `forget_s` since the last."""
        return max(0, c.fails - int(max(0.0, now - c.last) // self.forget_s)) if c.fails else 0

    def _wait_key(self, key: bytes | None, free: int, address: bool, now: float) -> float:
        c = self._counts.get(key) if key else None
        if c is None:
            return 0.0
        count = self._live(c, now)
        if address and count >= free:
            count += c.pending
        if count < free:
            return 1.0 if address and c.pending >= self.max_in_flight else 0.0
        return max(0.0, c.last + min(2.0 ** (count - free), self.max_wait_s) - now)

    def _wait(self, name: str, address: str | None, now: float) -> float:
        name_key, addr_key = self._keys(name, address)
        return max(
            self._wait_key(name_key, self.free, False, now),
            self._wait_key(addr_key, self.free_per_address, True, now),
        )

    def wait_s(self, name: str, address: str | None = None) -> float:
        """Seconds before the next attempt for `name` from `address` is considered (0 = now)."""
        with self._lock:
            return self._wait(name, address, self.clock())

    def _make_room(self, n: int, now: float) -> bool:
        if len(self._counts) + n <= self.max_keys:
            return True
        idle = [  # past any wait and with nothing in flight: holds no one back
            k
            for k, c in self._counts.items()
            if not c.pending and (not self._live(c, now) or now - c.last >= self.max_wait_s)
        ]
        for k in sorted(idle, key=lambda k: self._counts[k].last)[: max(n, self.max_keys // 10)]:
            del self._counts[k]
        return len(self._counts) + n <= self.max_keys

    def begin(self, name: str, address: str | None = None) -> bool:
        """Reserve an attempt: False while `name` or `address` must wait (or the table is full of live
        throttles). Else the attempt counts against the name until `succeeded`, and is in flight for
        the address until `succeeded` or `failed`; call exactly one of them."""
        with self._lock:
            now = self.clock()
            if self._wait(name, address, now) > 0:
                return False
            name_key, addr_key = self._keys(name, address)
            keys = [name_key] + ([addr_key] if addr_key else [])
            if not self._make_room(sum(k not in self._counts for k in keys), now):
                return False
            c = self._counts.setdefault(name_key, _Count())
            c.fails, c.last = self._live(c, now) + 1, now
            if addr_key:
                c = self._counts.setdefault(addr_key, _Count())
                c.pending += 1
                live = self._live(c, now)
                if live >= self.free_per_address:  # held back: its next attempt waits from this one
                    c.fails, c.last = live, now
            return True

    def _settle(self, addr_key: bytes | None, failed: bool, now: float) -> None:
        c = self._counts.get(addr_key) if addr_key else None
        if c is None or addr_key is None:
            return
        c.pending = max(0, c.pending - 1)
        if failed:
            c.fails, c.last = self._live(c, now) + 1, now
        elif not c.pending and not self._live(c, now):
            del self._counts[addr_key]

    def succeeded(self, name: str, address: str | None = None) -> None:
        """The attempt begun for `name` from `address` logged in: the name's count is cleared, and the
        address's is left as it was (a success neither counts nor forgives)."""
        with self._lock:
            name_key, addr_key = self._keys(name, address)
            self._counts.pop(name_key, None)
            self._settle(addr_key, False, self.clock())

    def failed(self, name: str, address: str | None = None) -> None:
        """The attempt begun for `name` from `address` failed: it counts against the address (the
        name's count already has it)."""
        with self._lock:
            self._settle(self._keys(name, address)[1], True, self.clock())


def login(
    store: Store, throttle: LoginThrottle, name: str, password: str, address: str | None = None
) -> dict | None:
    """authenticate() behind the throttle, for a client at `address` (None: unknown); attempts during a
    wait fail without checking the password."""
    if not throttle.begin(name, address):
        return None
    acct = None
    try:
        acct = authenticate(store, name, password)
    finally:
        if acct is None:
            throttle.failed(name, address)
        else:
            throttle.succeeded(name, address)
    return acct


def session_valid(acct: dict, issued_s: float) -> bool:
    """An account's login from `issued_s` still counts: enabled, and not logged out everywhere since."""
    return not acct["disabled"] and (acct.get("sessions_since") is None or issued_s > acct["sessions_since"])


def revoke_sessions(store: Store, name: str) -> None:
    """End every API token and app session of `name` issued until now (`rankloop annotators logout`)."""
    with store.write() as cur:
        if (
            cur.execute(
                "UPDATE annotators SET sessions_since = ? WHERE name = ? RETURNING id", [time.time(), name]
            ).fetchone()
            is None
        ):
            raise NotFound(f"no annotator named {name!r}; `rankloop annotators list` shows them")
    forget_accounts(store)
