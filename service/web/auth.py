"""Who is calling: the one place the service authenticates a request, for every way in.

* The annotation JSON API (`/api/annotate/*`): a person's session token (`login` issues it), or the
  admin key acting for a simulated annotator or a model judge (`X-Rankloop-Annotator: NAME`).
* `/admin/*`: the admin key, an API key of scope `admin`, or the session token of an admin account.
* `/v1/*` (the gateway): an API key of any scope, counted against its rate limits; errors in OpenAI's
  shape. The gateway cannot import this layer: it gets `Auth.client_key` as its `authenticate`.
* The Gradio app (`/annotate`): its login check is `Auth.login`; its cookie sessions expire and end
  when their account is disabled or logged out (`ExpiringSessions`).

Every login goes through the failed-login throttle (`annotator.accounts.LoginThrottle`) with the
client address that `service.web.guard.ClientAddress` records per request in `CLIENT_ADDRESS`.

    auth = Auth(store, settings.admin_key, SessionSigner(secret), gateway.keys, LoginThrottle())
    acct = auth.annotator(request.headers.get("authorization"), request.headers.get("x-rankloop-annotator"))
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from annotator.accounts import LoginThrottle, get_annotator, login, session_valid
from service.core.enums import Role
from service.core.store import Store
from service.gateway.key_records import KeyScope
from service.gateway.keys import Key, KeyBook

# The roles the admin key may act for on the annotation API (people log in themselves).
ACTING_ROLES = (Role.SIMULATED, Role.JUDGE)
API_KEY_PREFIX = "rk-"
# The address a request comes from, set per request by `service.web.guard.ClientAddress` (Gradio's
# login check gets only a name and a password); None outside a request.
CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_address", default=None)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header; None without one (or an empty one)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def admin_key_ok(expected: str | None, given: str | None) -> bool:
    """`given` is the admin key; compared in constant time, and never true when no key is set."""
    if not expected or not given:
        return False
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )


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


class ExpiringSessions(dict[str, str]):
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
        self.ttl_s, self.clock, self.still_valid = ttl_s, clock, still_valid
        self._born: dict[str, float] = {}

    def __setitem__(self, token: str, user: str) -> None:
        super().__setitem__(token, user)
        self._born[token] = self.clock()

    def __delitem__(self, token: str) -> None:
        super().__delitem__(token)
        self._born.pop(token, None)

    def _live(self, token: object) -> bool:
        if not isinstance(token, str) or (born := self._born.get(token)) is None:
            return False
        if self.clock() - born <= self.ttl_s and self.still_valid(super().get(token, ""), born):
            return True
        del self[token]
        return False

    def get(self, token: str, default: Any = None) -> Any:
        return super().get(token, default) if self._live(token) else default

    def __contains__(self, token: object) -> bool:
        return self._live(token)

    def __getitem__(self, token: str) -> str:
        if not self._live(token):
            raise KeyError(token)
        return super().__getitem__(token)

    def revoke(self, user: str) -> int:
        """End every session of `user`; how many there were."""
        tokens = [t for t, u in list(self.items()) if u == user]
        for t in tokens:
            del self[t]
        return len(tokens)


@dataclass
class Auth:
    """The service's authentication, one per app: accounts in `store`, the admin key, session tokens
    signed by `signer`, API keys in `keys`, logins behind `throttle`."""

    store: Store
    admin_key: str | None
    signer: SessionSigner
    keys: KeyBook
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    # -- sessions and accounts --------------------------------------------------------------------

    def session_account(self, session: tuple[int, float]) -> dict | None:
        """The account of a verified session (`signer.verify(token)`), unless the account has logged
        out everywhere since. A disabled account is returned: each caller says so its own way."""
        acct = get_annotator(self.store, id=session[0])
        if acct is None or not (acct["disabled"] or session_valid(acct, session[1])):
            return None
        return acct

    def app_session_valid(self, user: str | None, born: float) -> bool:
        """An app (cookie) session of `user` from `born` still counts: disabled or logged out since ends it."""
        acct = get_annotator(self.store, user or "")
        return acct is not None and session_valid(acct, born)

    def is_admin(self, user: str | None) -> bool:
        """`user` names an enabled admin account (the app's /report link)."""
        acct = get_annotator(self.store, user) if user else None
        return acct is not None and not acct["disabled"] and acct["role"] == Role.ADMIN

    # -- logins -----------------------------------------------------------------------------------

    def login_wait_s(self, name: str) -> float:
        """Seconds before a login for `name` from this request's address is considered (0 = now)."""
        return self.throttle.wait_s(name, CLIENT_ADDRESS.get())

    def login(self, name: str, password: str) -> dict | None:
        """The account, if the name and password are a person's and the throttle lets the attempt through
        (the scrypt check is slow: call it on a worker thread)."""
        return login(self.store, self.throttle, name, password, CLIENT_ADDRESS.get())

    # -- the three ways in ------------------------------------------------------------------------

    def annotator(self, authorization: str | None, acting_for: str | None) -> dict:
        """The enabled account an annotation API request acts for, or 401/403."""
        token = bearer_token(authorization)
        if token and acting_for:
            if not admin_key_ok(self.admin_key, token):
                raise HTTPException(401, "acting for an annotator needs the admin key")
            acct = get_annotator(self.store, acting_for)
            if acct is None or acct["role"] not in ACTING_ROLES:
                raise HTTPException(
                    403, f"{acting_for!r} is not a simulated annotator or a judge; people log in themselves"
                )
        elif token:
            session = self.signer.verify(token)
            acct = self.session_account(session) if session else None
            if acct is None:
                raise HTTPException(
                    401, "invalid, expired or revoked token; log in again at POST /api/annotate/login"
                )
        else:
            raise HTTPException(
                401, "log in first: POST /api/annotate/login, then send 'Authorization: Bearer TOKEN'"
            )
        if acct["disabled"]:
            raise HTTPException(403, f"the account {acct['name']!r} is disabled")
        return acct

    def admin(self, authorization: str | None) -> str:
        """Who an /admin request comes from (`admin-key`, `key:NAME` or an admin's name), or 401/403."""
        token = bearer_token(authorization)
        if token is None:
            raise HTTPException(401, "send 'Authorization: Bearer ADMIN_KEY' or an admin account's token")
        if admin_key_ok(self.admin_key, token):
            return "admin-key"
        if token.startswith(API_KEY_PREFIX):
            key = self.keys.lookup(token)
            if key is None:
                raise HTTPException(401, "invalid or revoked API key")
            if key.scope != KeyScope.ADMIN:
                raise HTTPException(
                    403, f"key {key.name!r} has scope {key.scope}; /admin needs an admin-scope key"
                )
            return f"key:{key.name}"
        session = self.signer.verify(token)
        if session is not None:
            acct = self.session_account(session)
            if acct is None or acct["disabled"]:
                raise HTTPException(401, "invalid, expired or revoked token; log in again")
            if acct["role"] == Role.ADMIN:
                return acct["name"]
            raise HTTPException(403, "admins only")
        raise HTTPException(401, "send 'Authorization: Bearer ADMIN_KEY' or an admin account's token")

    def client_key(self, request: Request) -> Key:
        """The API key of a /v1 request (any scope), admitted under its rate limits (`KeyBook.authenticate`)."""
        return self.keys.authenticate(request.headers.get("authorization"))
