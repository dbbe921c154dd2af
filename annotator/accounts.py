"""Annotator accounts: salted scrypt password hashes, roles, disabling, and login throttling.

Roles: `annotator` ranks tasks, `admin` also sees the admin tab and its actions,
`simulated` accounts are rankloop's own simulated annotators (no password: they act
through the admin key), `import` owns rankings imported from public preference data.

    rankloop annotators add alice --role annotator        # prompts for the password
"""

from __future__ import annotations

import base64
import contextvars
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.core.errors import NotFound, UserError
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
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


def add_annotator(
    store: Store, name: str, role: str, password: str | None = None, profile: str | None = None
) -> int:
    """Create an account; people need a password of 8+ characters, simulated/import accounts none."""
    if not NAME_RE.match(name or ""):
        raise UserError(f"annotator name {name!r} is not valid: 1-64 letters, digits, '_', '.', '@', '-'")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; valid: {', '.join(ROLES)}")
    if role in HUMAN_ROLES and (password is None or len(password) < MIN_PASSWORD):
        raise UserError(f"a password of at least {MIN_PASSWORD} characters is required for role {role}")
    pw_hash = hash_password(password) if password else None
    with store.write() as cur:
        if cur.execute("SELECT 1 FROM annotators WHERE name = ?", [name]).fetchone():
            raise UserError(f"annotator {name!r} already exists")
        return cur.execute(
            "INSERT INTO annotators (name, role, password_hash, profile) VALUES (?, ?, ?, ?) RETURNING id",
            [name, role, pw_hash, profile],
        ).fetchone()[0]


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


# The address a login comes from, set per request by the web layer (Gradio's login check gets only
# the name and password); None outside a request.
CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


@dataclass
class LoginThrottle:
    """Slows down guessing, per account name and per client address: after `free` failed attempts
    for a name (`free_per_address` from an address, so spraying one guess over many names is slowed
    too), each further attempt must wait 1, 2, 4, ... s (capped at `max_wait_s`) after the last;
    success resets the name's count. An attempt counts as failed when it starts, so parallel guesses
    cannot slip through. Memory is bounded: keys are hashes of fixed size, at most `max_keys`; when
    full, entries that no longer hold anyone back are dropped, and while every entry still does, new
    keys wait (a full table of live throttles is an attack in progress)."""

    free: int = 3
    free_per_address: int = 30
    max_wait_s: float = 60.0
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic  # injectable, so tests need no sleeps
    _fails: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _keys(name: str, address: str | None) -> list[tuple[bytes, int]]:
        """Fixed-size keys (a 2 MB name costs 16 bytes), each with 1 when it is a client address."""

        def key(kind: str, value: str) -> bytes:
            return hashlib.blake2b(
                f"{kind}:{value}".encode("utf-8", "surrogatepass"), digest_size=16
            ).digest()

        return [(key("name", name), 0)] + ([(key("addr", address), 1)] if address else [])

    def _wait_key(self, key: bytes, per_address: int) -> float:
        count, last = self._fails.get(key, (0, 0.0))
        free = self.free_per_address if per_address else self.free
        if count < free:
            return 0.0
        return max(0.0, last + min(2.0 ** (count - free), self.max_wait_s) - self.clock())

    def _wait(self, name: str, address: str | None) -> float:
        return max(self._wait_key(k, a) for k, a in self._keys(name, address))

    def wait_s(self, name: str, address: str | None = None) -> float:
        """Seconds before the next attempt for `name` from `address` is considered (0 = now)."""
        with self._lock:
            return self._wait(name, address)

    def _make_room(self, n: int) -> bool:
        if len(self._fails) + n <= self.max_keys:
            return True
        idle = [
            k for k, (count, last) in self._fails.items() if self.clock() - last >= self.max_wait_s
        ]  # past any wait: holds no one back
        for k in sorted(idle, key=lambda k: self._fails[k][1])[: max(n, self.max_keys // 10)]:
            del self._fails[k]
        return len(self._fails) + n <= self.max_keys

    def begin(self, name: str, address: str | None = None) -> bool:
        """Reserve an attempt: False while `name` or `address` must wait (or the table is full of
        live throttles); else the attempt counts as a failure until `succeeded` clears it."""
        with self._lock:
            if self._wait(name, address) > 0:
                return False
            keys = self._keys(name, address)
            if not self._make_room(sum(k not in self._fails for k, _ in keys)):
                return False
            for k, _ in keys:
                count, _ = self._fails.get(k, (0, 0.0))
                self._fails[k] = (count + 1, self.clock())
            return True

    def succeeded(self, name: str, address: str | None = None) -> None:
        with self._lock:
            self._fails.pop(self._keys(name, address)[0][0], None)


def login(store: Store, throttle: LoginThrottle, name: str, password: str) -> dict | None:
    """authenticate() behind the throttle: attempts during a wait fail without checking the password."""
    address = CLIENT_ADDRESS.get()
    if not throttle.begin(name, address):
        return None
    acct = authenticate(store, name, password)
    if acct is not None:
        throttle.succeeded(name, address)
    return acct


class ExpiringSessions(dict):
    """Gradio's session table (cookie token -> user name), with an expiry and revocation: Gradio
    reads it with `get`, `in` and `[]`, so an expired token, or one whose account `still_valid`
    refuses (disabled, logged out everywhere since), simply reads as absent."""

    def __init__(
        self,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        still_valid: Callable[[str, float], bool] = lambda user, born: True,
    ):
        super().__init__()
        self.ttl_s, self.clock, self.still_valid, self._born = ttl_s, clock, still_valid, {}

    def __setitem__(self, token, user) -> None:
        super().__setitem__(token, user)
        self._born[token] = self.clock()

    def __delitem__(self, token) -> None:
        super().__delitem__(token)
        self._born.pop(token, None)

    def _live(self, token) -> bool:
        born = self._born.get(token)
        if (
            born is not None
            and self.clock() - born <= self.ttl_s
            and self.still_valid(super().get(token), born)
        ):
            return True
        if born is not None:
            del self[token]
        return False

    def get(self, token, default=None):
        return super().get(token, default) if self._live(token) else default

    def __contains__(self, token) -> bool:
        return self._live(token)

    def __getitem__(self, token):
        if not self._live(token):
            raise KeyError(token)
        return super().__getitem__(token)

    def revoke(self, user: str) -> int:
        """End every session of `user`; how many there were."""
        tokens = [t for t, u in list(self.items()) if u == user]
        for t in tokens:
            del self[t]
        return len(tokens)


class SessionSigner:
    """Bearer tokens for the JSON API: `annotator_id.issued_ms.expiry.hmac`, signed with the data
    directory's secret, so they survive a service restart and need no table. They expire, and
    `revoke_sessions` ends every token (and app session) of an account issued before it."""

    def __init__(self, secret: bytes, ttl_s: float = 12 * 3600):
        self._secret, self.ttl_s = secret, ttl_s

    def _mac(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, annotator_id: int) -> str:
        now = time.time()
        payload = f"{annotator_id}.{int(now * 1000)}.{int(now + self.ttl_s)}"
        return f"{payload}.{self._mac(payload)}"

    def verify(self, token: str) -> tuple[int, float] | None:
        """(annotator id, issue time in seconds) of a genuine, unexpired token; else None."""
        parts = token.split(".")
        if len(parts) != 4 or not all(p.isdigit() and len(p) < 20 for p in parts[:3]):
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._mac(payload), parts[3]) or int(parts[2]) < time.time():
            return None
        return int(parts[0]), int(parts[1]) / 1000


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
