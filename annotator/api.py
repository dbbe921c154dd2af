"""The annotation JSON API (`/api/annotate/*`): the HTTP path to the same queue the app uses.

People log in with name and password and get a bearer token. rankloop's simulated
annotators and model judges authenticate with the admin key plus `X-Rankloop-Annotator:
NAME` (only accounts with role `simulated` or `judge` may be acted for this way).

    POST /api/annotate/login     {"name", "password"} -> {"token"}
    GET  /api/annotate/next      -> {"task": {...} | null, "progress": {...}}
    POST /api/annotate/submit    Submission -> {"ranking_id", "task_id", "duplicate"}
    GET  /api/annotate/progress  -> {"today", "total", "queue"}
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from annotator import queue
from annotator.accounts import CLIENT_ADDRESS, get_annotator, login, session_valid
from annotator.ranking import Submission

router = APIRouter(prefix="/api/annotate", tags=["annotate"])


class LoginBody(BaseModel):
    name: str = Field(max_length=64, description="account name")
    password: str = Field(max_length=1024, description="password")


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def admin_key_ok(request: Request, key: str | None) -> bool:
    expected = request.app.state.settings.admin_key
    return bool(expected and key and hmac.compare_digest(expected.encode(), key.encode()))


def current_annotator(
    request: Request,
    authorization: str | None = Header(None),
    x_rankloop_annotator: str | None = Header(None),
) -> dict:
    """The enabled account this request acts for, or 401/403."""
    store = request.app.state.store
    token = bearer_token(authorization)
    if token and x_rankloop_annotator:
        if not admin_key_ok(request, token):
            raise HTTPException(401, "acting for an annotator needs the admin key")
        acct = get_annotator(store, x_rankloop_annotator)
        if acct is None or acct["role"] not in ("simulated", "judge"):
            raise HTTPException(
                403,
                f"{x_rankloop_annotator!r} is not a simulated annotator or a judge; people log in themselves",
            )
    elif token:
        session = request.app.state.signer.verify(token)
        acct = get_annotator(store, id=session[0]) if session else None
        if acct is None or not (acct["disabled"] or session_valid(acct, session[1])):
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


@router.post("/login")
async def login_route(body: LoginBody, request: Request) -> dict:
    state = request.app.state
    wait = state.throttle.wait_s(body.name, CLIENT_ADDRESS.get())
    if wait > 0:
        raise HTTPException(
            429, f"too many failed logins for {body.name!r} or from your address; try again in {wait:.0f} s"
        )
    acct = await run_in_threadpool(login, state.store, state.throttle, body.name, body.password)
    if acct is None:
        raise HTTPException(401, "unknown user, wrong password, or disabled account")
    return {"token": state.signer.issue(acct["id"]), "name": acct["name"], "role": acct["role"]}


@router.get("/next")
def next_route(request: Request, acct: dict = Depends(current_annotator)) -> dict:
    state = request.app.state
    task = queue.next_task(state.store, acct["id"], state.queue_settings)
    return {"task": task, "progress": queue.progress(state.store, acct["id"], state.queue_settings)}


@router.post("/submit")
def submit_route(sub: Submission, request: Request, acct: dict = Depends(current_annotator)) -> dict:
    result = queue.submit(request.app.state.store, acct["id"], sub, request.app.state.queue_settings)
    return {"ranking_id": result.ranking_id, "task_id": result.task_id, "duplicate": result.duplicate}


@router.get("/progress")
def progress_route(request: Request, acct: dict = Depends(current_annotator)) -> dict:
    return queue.progress(request.app.state.store, acct["id"], request.app.state.queue_settings)
