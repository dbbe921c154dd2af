"""`/admin/*`: what the admin tab and the `rankloop` command do, over HTTP, for admins only.

Authenticated by the admin key (`Authorization: Bearer ADMIN_KEY`) or by the token of
an account with role `admin`. A CLI command run while `rankloop serve` holds the data
directory goes through these routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field

from annotator import accounts, quality
from annotator.api import admin_key_ok, bearer_token
from annotator.queue import mark_gold

router = APIRouter(prefix="/admin", tags=["admin"])


def require_admin(request: Request, authorization: str | None = Header(None)) -> str:
    token = bearer_token(authorization)
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
    return accounts.list_annotators(request.app.state.store)


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
            "flagged": quality.flagged(store), "skipped": quality.skipped(store)}


@router.get("/leaderboard")
def leaderboard(request: Request, by: str = "system_prompt", _: str = Depends(require_admin)) -> list[dict]:
    if by not in ("system_prompt", "model"):
        raise HTTPException(422, f"by={by!r}: valid are system_prompt, model")
    return quality.leaderboard_rows(request.app.state.store, by)


# -- reward stage -------------------------------------------------------------


class SnapshotBody(BaseModel):
    exclude_flagged: bool = False
    min_gold_agreement: float | None = None
    exclude_annotators: list[str] = Field(default_factory=list)
    eval_fraction: float = 0.2


class RewardJobBody(BaseModel):
    config: dict = Field(default_factory=dict, description="fields of reward.train.RewardTrainConfig")
    min_accuracy: float = Field(0.55, ge=0, le=1, description="what the first reward model needs to become active")


class RewardsBody(BaseModel):
    prompt: str
    responses: list[str] = Field(min_length=1, max_length=64)


class PromoteBody(BaseModel):
    reason: str = Field(min_length=1)


@router.post("/snapshots")
def snapshot(body: SnapshotBody, request: Request, _: str = Depends(require_admin)) -> dict:
    from service.snapshots import SnapshotFilters, create_snapshot

    state = request.app.state
    snap = create_snapshot(state.store, state.settings.data_dir, SnapshotFilters(**body.model_dump()))
    return {"id": snap.id, "path": str(snap.path), "created": snap.created, **snap.manifest}


@router.post("/jobs/reward")
def start_reward_job(body: RewardJobBody, request: Request, _: str = Depends(require_admin)) -> dict:
    """Validate the config, then run the job on a background thread; poll GET /admin/jobs/{id}."""
    import threading

    from service.jobs import create_job, reward_config, run_job

    state = request.app.state
    cfg = reward_config(state.store, state.settings, None, body.config)
    job_id = create_job(state.store, state.settings, "reward", cfg)
    threading.Thread(target=run_job, args=(state.store, state.settings, job_id),
                     kwargs={"min_accuracy": body.min_accuracy}, daemon=True, name=f"job-{job_id}").start()
    return {"job_id": job_id}


@router.get("/jobs")
def jobs(request: Request, _: str = Depends(require_admin)) -> list[dict]:
    from service.jobs import reap_stale

    reap_stale(request.app.state.store)
    return request.app.state.store.query(
        "SELECT id, kind, status, progress, error, result_model_id, created_at FROM jobs ORDER BY id")


@router.get("/jobs/{job_id}")
def job(job_id: int, request: Request, _: str = Depends(require_admin)) -> dict:
    rows = request.app.state.store.query("SELECT * FROM jobs WHERE id = ?", [job_id])
    if not rows:
        raise HTTPException(404, f"there is no job {job_id}")
    return rows[0]


@router.get("/models/{model_id}")
def model(model_id: int, request: Request, _: str = Depends(require_admin)) -> dict:
    from service.registry import get_model

    return get_model(request.app.state.store, model_id)


@router.post("/models/{model_id}/promote")
def promote_model(model_id: int, body: PromoteBody, request: Request, who: str = Depends(require_admin)) -> dict:
    from service.registry import promote

    promote(request.app.state.store, model_id, f"promoted by {who}: {body.reason}")
    return {"model_id": model_id, "status": "active"}


@router.post("/rewards")
def rewards(body: RewardsBody, request: Request, _: str = Depends(require_admin)) -> dict:
    """Scores of the responses to the prompt under the active reward model."""
    model_id, scorer = request.app.state.scorers.get(request.app.state.store)
    return {"model_id": model_id, "scores": scorer.score(body.prompt, body.responses)}


@router.post("/prioritize")
def prioritize_route(request: Request, _: str = Depends(require_admin)) -> dict:
    from service.scoring import prioritize

    state = request.app.state
    model_id, scorer = state.scorers.get(state.store)
    return {"model_id": model_id, "tasks": prioritize(state.store, scorer)}
