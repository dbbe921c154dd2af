"""The annotation JSON API (`/api/annotate/*`): the HTTP path to the same queue the app uses.

People log in with name and password and get a bearer token. rankloop's simulated
annotators and model judges authenticate with the admin key plus `X-Rankloop-Annotator:
NAME` (only accounts with role `simulated` or `judge` may be acted for this way); both are
checked in service/web/auth.py.

    POST /api/annotate/login     {"name", "password"} -> {"token", "name", "role"}
    GET  /api/annotate/next      -> {"task": {...} | null, "progress": {...}}
    POST /api/annotate/submit    Submission -> {"ranking_id", "task_id", "duplicate"}
    GET  /api/annotate/progress  -> {"today", "total", "queue"}
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from annotator import queue
from annotator.ranking import Submission
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.web.auth import Auth


class LoginBody(BaseModel):
    name: str = Field(max_length=64, description="account name")
    password: str = Field(max_length=1024, description="password")


def build_router(auth: Auth, store: Store, queue_settings: AnnotationOptions) -> APIRouter:
    """The routes, for accounts and sessions checked by `auth` and the queue in `store`."""
    router = APIRouter(prefix="/api/annotate", tags=["annotate"])

    def current_annotator(
        authorization: str | None = Header(None), x_rankloop_annotator: str | None = Header(None)
    ) -> dict:
        """The enabled account this request acts for, or 401/403."""
        return auth.annotator(authorization, x_rankloop_annotator)

    @router.post("/login")
    async def login_route(body: LoginBody) -> dict:
        wait = auth.login_wait_s(body.name)
        if wait > 0:
            raise HTTPException(
                429,
                f"too many failed logins for {body.name!r} or from your address; try again in {wait:.0f} s",
            )
        acct = await run_in_threadpool(auth.login, body.name, body.password)
        if acct is None:
            raise HTTPException(401, "unknown user, wrong password, or disabled account")
        return {"token": auth.signer.issue(acct["id"]), "name": acct["name"], "role": acct["role"]}

    @router.get("/next")
    def next_route(acct: dict = Depends(current_annotator)) -> dict:
        task = queue.next_task(store, acct["id"], queue_settings)
        return {"task": task, "progress": queue.progress(store, acct["id"], queue_settings)}

    @router.post("/submit")
    def submit_route(sub: Submission, acct: dict = Depends(current_annotator)) -> dict:
        result = queue.submit(store, acct["id"], sub, queue_settings)
        return {"ranking_id": result.ranking_id, "task_id": result.task_id, "duplicate": result.duplicate}

    @router.get("/progress")
    def progress_route(acct: dict = Depends(current_annotator)) -> dict:
        return queue.progress(store, acct["id"], queue_settings)

    return router
