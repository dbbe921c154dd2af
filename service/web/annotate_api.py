"""The annotation JSON API (`/api/annotate/*`): the HTTP path to the same queue the app uses.

People log in with name and password and get a bearer token. rankloop's simulated
annotators and model judges authenticate with the admin key plus `X-Rankloop-Annotator:
NAME` (only accounts with role `simulated` or `judge` may be acted for this way); both are
checked in service/web/auth.py.

    POST /api/annotate/login     {"name", "password"} -> {"token", "name", "role"}
    GET  /api/annotate/next      -> {"task": {...} | null, "progress": {...}}
                                    (the task carries its `guidelines`; a quiz question carries `quiz`)
    POST /api/annotate/submit    Submission -> {"ranking_id", "task_id", "duplicate", "quiz"}
    GET  /api/annotate/progress  -> {"today", "total", "queue"}
    GET  /api/annotate/guidelines?batch=B  -> the guideline tasks of that batch are ranked under
    GET  /api/annotate/review/next         -> {"task": contested task with its raw rankings | null}
    POST /api/annotate/review    {"task_id", "ranks", "rationale", "strengths"?} -> the adjudication
                                    (reviewers and admins only)
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from annotator import guidelines, queue, review
from annotator.ranking import Submission
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.web.auth import Auth


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: int = Field(ge=1, description="the contested task")
    ranks: list[StrictInt] = Field(description="the final ranks in display order")
    rationale: str = Field(min_length=1, max_length=5000, description="why this ranking settles it")
    strengths: list[str] | None = Field(None, description="how much each rank level beats the next")


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
        return {
            "ranking_id": result.ranking_id,
            "task_id": result.task_id,
            "duplicate": result.duplicate,
            "quiz": result.quiz,
        }

    @router.get("/progress")
    def progress_route(acct: dict = Depends(current_annotator)) -> dict:
        return queue.progress(store, acct["id"], queue_settings)

    @router.get("/guidelines")
    def guidelines_route(batch: str | None = None, acct: dict = Depends(current_annotator)) -> dict:
        return {"guidelines": guidelines.current(store, batch)}

    @router.get("/review/next")
    def review_next_route(acct: dict = Depends(current_annotator)) -> dict:
        return {"task": review.next_review(store, acct["id"], queue_settings)}

    @router.post("/review")
    def review_route(body: ReviewBody, acct: dict = Depends(current_annotator)) -> dict:
        return review.adjudicate(
            store, acct["id"], body.task_id, body.ranks, body.rationale, body.strengths, queue_settings
        )

    return router
