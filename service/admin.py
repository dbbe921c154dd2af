"""`/admin/*`: what the admin tab and the `rankloop` command do, over HTTP, for admins only.

Authenticated by the admin key (`Authorization: Bearer ADMIN_KEY`) or by the token of
an account with role `admin`. A CLI command run while `rankloop serve` holds the data
directory goes through these routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field

from annotator import accounts, quality
from annotator.api import _bearer, admin_key_ok
from annotator.queue import mark_gold

router = APIRouter(prefix="/admin", tags=["admin"])


def require_admin(request: Request, authorization: str | None = Header(None)) -> str:
    token = _bearer(authorization)
    if token and admin_key_ok(request, token):
        return "admin-key"
    annotator_id = request.app.state.signer.verify(token) if token else None
    if annotator_id is not None:
        rows = request.app.state.store.query("SELECT name, role, disabled FROM annotators WHERE id = ?", [annotator_id])
        if rows and rows[0]["role"] == "admin" and not rows[0]["disabled"]:
            return rows[0]["name"]
        raise HTTPException(403, "admins only")
    raise HTTPException(401, "send 'Authorization: Bearer ADMIN_KEY' or an admin account's token")


class NewAnnotator(BaseModel):
    name: str
    role: str = Field("annotator", description="annotator | admin | simulated | import")
    password: str | None = None
    profile: str | None = Field(None, description="simulated annotators: their profile as JSON")


class GoldBody(BaseModel):
    ranks: list[int]


@router.get("/status")
def status(request: Request, _: str = Depends(require_admin)) -> dict:
    store = request.app.state.store
    return {"data_dir": str(request.app.state.settings.data_dir), "schema_version": store.schema_version(),
            **store.counts()}


@router.get("/annotators")
def annotators(request: Request, _: str = Depends(require_admin)) -> list[dict]:
    return [{**r, "created_at": r["created_at"].isoformat()} for r in accounts.list_annotators(request.app.state.store)]


@router.post("/annotators")
def add_annotator(body: NewAnnotator, request: Request, _: str = Depends(require_admin)) -> dict:
    new_id = accounts.add_annotator(request.app.state.store, body.name, body.role, body.password, body.profile)
    return {"id": new_id, "name": body.name, "role": body.role}


@router.post("/annotators/{name}/disable")
def disable(name: str, request: Request, _: str = Depends(require_admin)) -> dict:
    accounts.set_disabled(request.app.state.store, name, True)
    return {"name": name, "disabled": True}


@router.post("/simulated")
def simulated(body: dict[str, dict], request: Request, _: str = Depends(require_admin)) -> dict:
    """Create missing simulated accounts with these profiles; returns every account's effective profile."""
    from annotator.simulate_run import ensure_accounts
    from annotator.simulated import Profile

    try:
        wanted = {name: Profile.model_validate(p) for name, p in body.items()}
    except ValueError as e:
        raise HTTPException(422, f"invalid simulated annotator profile: {e}") from None
    return {name: p.model_dump(mode="json") for name, p in ensure_accounts(request.app.state.store, wanted).items()}


@router.post("/tasks/{task_id}/gold")
def gold(task_id: int, body: GoldBody, request: Request, _: str = Depends(require_admin)) -> dict:
    mark_gold(request.app.state.store, task_id, body.ranks)
    return {"task_id": task_id, "gold": True}


@router.get("/quality")
def quality_report(request: Request, _: str = Depends(require_admin)) -> dict:
    store = request.app.state.store
    return {"annotators": quality.annotator_report(store), "batches": quality.batch_alpha(store),
            "flagged": quality.flagged(store), "skipped": [
                {**r, "created_at": r["created_at"].isoformat()} for r in quality.skipped(store)]}


@router.get("/leaderboard")
def leaderboard(request: Request, by: str = "system_prompt", _: str = Depends(require_admin)) -> list[dict]:
    if by not in ("system_prompt", "model"):
        raise HTTPException(422, f"by={by!r}: valid are system_prompt, model")
    return quality.leaderboard_rows(request.app.state.store, by)
