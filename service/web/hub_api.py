"""`POST /admin/gateway/sync`: where stateless gateway replicas send their traffic and get their
state (service/gateway/hub.py). Admin key or an admin-scope API key: the answer holds the model
servers' keys."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from service.gateway.hub import Hub


class SyncRequest(BaseModel):
    replica: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")
    address: str = Field(max_length=300)
    etag: str | None = None
    rows: list[dict] = Field(max_length=1000)
    window: dict[str, tuple[int, int]]
    held: list[tuple[int, str, int]]


def build_router(hub: Hub, require_admin: Callable[[str | None], str]) -> APIRouter:
    router = APIRouter(prefix="/admin/gateway", tags=["gateway"])

    @router.post("/sync")
    async def sync(request: Request) -> dict:
        require_admin(request.headers.get("authorization"))  # before the body is read
        try:
            body = SyncRequest.model_validate_json(await request.body())
        except ValidationError as e:
            err = e.errors()[0]
            raise HTTPException(
                422, f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            ) from None
        return await run_in_threadpool(
            hub.sync, body.replica, body.address, body.etag, body.rows, body.window, body.held
        )

    return router
