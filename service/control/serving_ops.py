"""The serving operations of the control plane (rows of service/control/commands.py): keys, deploy,
promote, rollback, routes, prompts from traffic.

In the service (`ctx.gateway`, service/gateway) a deploy starts servers and switches the route;
run without a service it is checked and recorded, and `rankloop serve` starts it.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from service.control.context import Context
from service.core.errors import UserError
from service.data.traffic_prompts import prompts_from_traffic
from service.gateway import key_records as keys
from service.gateway.deploy_records import check_arms, check_deployable, current_deployment, record


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewKey(_Params):
    name: str = Field(description="who the key is for")
    scope: Literal["client", "admin"] = Field("client", description="client: /v1; admin: /v1 and /admin")
    rpm: int | None = Field(None, ge=1, description="requests per minute (default: no limit)")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (default: no limit)")
    tokens_per_day: int | None = Field(None, ge=1, description="tokens per UTC day (default: no budget)")
    tokens_per_month: int | None = Field(None, ge=1, description="tokens per UTC month (default: no budget)")
    log_traffic: bool = Field(False, description="store this key's requests and responses")


class KeyName(_Params):
    name: str = Field(description="the key's name")


class FromTraffic(_Params):
    since: datetime | None = Field(None, description="only prompts logged since then (ISO date or time)")
    min_count: int = Field(1, ge=1, description="only prompts asked at least this many times")


class Deploy(_Params):
    model_id: int = Field(ge=1, le=2**63 - 1, description="a registered model's id (`rankloop models list`)")
    canary: float | None = Field(None, gt=0, lt=100, description="send this percent of traffic to it")
    replicas: int = Field(1, ge=1, le=16, description="vLLM servers for the model")
    endpoint: HttpUrl | None = Field(None, description="serve from a vLLM server elsewhere instead")
    endpoint_key: str | None = Field(None, description="that server's API key")
    system_prompts: dict[str, float] | None = Field(
        None, description="split traffic across stored system prompts by weight (an experiment)"
    )
    force: bool = Field(False, description="deploy a model that is not approved")
    fallback: str | None = Field(
        None,
        pattern=r"^(previous|[1-9][0-9]{0,18})$",
        description="a model that answers when every replica of this one fails: `previous` (the one "
        "serving now keeps its servers) or a registered model's id",
    )


def create_key(ctx: Context, p: NewKey) -> dict:
    key = keys.create_key(
        ctx.store, p.name, p.scope, p.rpm, p.tpm, p.log_traffic, p.tokens_per_day, p.tokens_per_month
    )
    return {"name": p.name, "scope": p.scope, "key": key, "note": "shown once: only its hash is stored"}


def list_keys(ctx: Context, _: Any) -> list[dict]:
    if ctx.gateway is not None:  # this process's unsaved usage counts first
        ctx.gateway.keys.flush()
    return keys.list_keys(ctx.store)


def revoke_key(ctx: Context, p: KeyName) -> dict:
    keys.revoke_key(ctx.store, p.name)
    return {"name": p.name, "revoked": True}


# A change reads the current deployment, switches the live routes and records the new one: one at a
# time, so the record always says what serves.
_CHANGE = threading.Lock()


def deploy(ctx: Context, p: Deploy) -> dict:
    with _CHANGE:
        return _deploy(ctx, p)


def _deploy(ctx: Context, p: Deploy) -> dict:
    check_deployable(ctx.store, p.model_id, p.force)
    check_arms(ctx.store, p.system_prompts)
    if p.endpoint_key and not p.endpoint:
        raise UserError("--endpoint-key goes with --endpoint URL")
    if p.endpoint and p.canary is not None:
        raise UserError("a canary runs on servers rankloop starts; deploy the endpoint without --canary")
    current = current_deployment(ctx.store)
    if p.canary is not None and current is None:
        raise UserError("nothing is deployed yet to split traffic with; deploy without --canary first")
    fallback = _fallback_id(ctx, p, current)
    endpoint = str(p.endpoint) if p.endpoint else None
    fields: dict[str, Any]
    if current is not None and p.canary is not None:
        fields = {
            "model_id": current["model_id"],
            "canary_model_id": p.model_id,
            "canary_pct": p.canary,
            "canary_replicas": p.replicas,
            "replicas": current["replicas"],
            "endpoint": current["endpoint"],
            "endpoint_key": current["endpoint_key"],
            "system_prompts": p.system_prompts or current["system_prompts"],
            "fallback_model_id": current.get("fallback_model_id"),
            "note": f"canary {p.canary}%",
        }
    else:
        fields = {
            "model_id": p.model_id,
            "replicas": p.replicas,
            "endpoint": endpoint,
            "endpoint_key": p.endpoint_key,
            "system_prompts": p.system_prompts,
            "fallback_model_id": fallback,
            "note": "deploy",
        }
    if ctx.gateway is not None:  # start and switch first: a failed start changes nothing
        ctx.gateway.deployer.deploy(
            p.model_id,
            p.canary,
            p.replicas,
            endpoint if p.canary is None else None,
            p.endpoint_key,
            fields["system_prompts"],
            fallback,
        )
    deployment = record(ctx.store, fields)
    return {"deployment": deployment, **_routes(ctx)}


def _fallback_id(ctx: Context, p: Deploy, current: dict | None) -> int | None:
    if p.fallback is None:
        return None
    if p.canary is not None:
        raise UserError("--fallback goes with a deploy, not a canary (the canary falls back with the rest)")
    if p.fallback == "previous":
        if current is None:
            raise UserError("nothing is deployed yet to fall back to; deploy without --fallback first")
        if current["endpoint"]:
            raise UserError("the model serving now is an endpoint; name a registered model as --fallback")
        return int(current["model_id"])
    check_deployable(ctx.store, int(p.fallback), p.force)
    return int(p.fallback)


def promote(ctx: Context, _: Any) -> dict:
    with _CHANGE:
        return _promote(ctx)


def _promote(ctx: Context) -> dict:
    current = current_deployment(ctx.store)
    if current is None or current["canary_model_id"] is None:
        raise UserError("there is no canary to promote; `rankloop deploy MODEL --canary PCT` starts one")
    if ctx.gateway is not None:
        ctx.gateway.deployer.promote()
    deployment = record(
        ctx.store,
        {
            "model_id": current["canary_model_id"],
            "replicas": current["canary_replicas"] or 1,
            "system_prompts": current["system_prompts"],
            "fallback_model_id": current.get("fallback_model_id"),
            "note": "canary promoted",
        },
    )
    return {"deployment": deployment, **_routes(ctx)}


def rollback(ctx: Context, _: Any) -> dict:
    """Drop the canary if there is one; else serve the model deployed before the current one (so a
    second rollback undoes the first)."""
    with _CHANGE:
        return _rollback(ctx)


def _rollback(ctx: Context) -> dict:
    current = current_deployment(ctx.store)
    if current is None:
        raise UserError("nothing is deployed, so there is nothing to roll back")
    if current["canary_model_id"] is not None:
        if ctx.gateway is not None:
            ctx.gateway.deployer.drop_canary()
        fields = {
            k: current.get(k)
            for k in (
                "model_id",
                "replicas",
                "endpoint",
                "endpoint_key",
                "system_prompts",
                "fallback_model_id",
            )
        }
        deployment = record(ctx.store, {**fields, "note": "canary rolled back"})
        return {"deployment": deployment, **_routes(ctx)}
    before = ctx.store.query(
        "SELECT * FROM deployments WHERE id < ? AND model_id <> ? ORDER BY id DESC LIMIT 1",
        [current["id"], current["model_id"]],
    )
    if not before:
        raise UserError(
            f"model {current['model_id']} is the only model ever deployed; there is nothing to roll back to"
        )
    prev = before[0]
    if ctx.gateway is not None:
        ctx.gateway.deployer.deploy(
            prev["model_id"],
            None,
            prev["replicas"],
            prev["endpoint"],
            prev["endpoint_key"],
            current["system_prompts"],
        )
    deployment = record(
        ctx.store,
        {
            "model_id": prev["model_id"],
            "replicas": prev["replicas"],
            "endpoint": prev["endpoint"],
            "endpoint_key": prev["endpoint_key"],
            "system_prompts": current["system_prompts"],
            "note": f"rolled back from model {current['model_id']}",
        },
    )
    return {"deployment": deployment, **_routes(ctx)}


def _routes(ctx: Context) -> dict:
    """What serves now (the live state in a service; the record otherwise); None when nothing is deployed."""
    if ctx.gateway is not None:
        state = ctx.gateway.deployer.state()
        out = {"routes": state if state["current"] or state["error"] else None}
        gateways = ctx.gateway.hub.replicas() if ctx.gateway.hub is not None else []
        return {**out, "gateways": gateways} if gateways else out  # replicas that synced with this service
    current = current_deployment(ctx.store)
    if current is None:
        return {"routes": None}
    return {
        "routes": {
            k: current[k]
            for k in ("model_id", "canary_model_id", "canary_pct", "replicas", "endpoint", "system_prompts")
        },
        "note": "recorded; `rankloop serve` starts it",
    }


def routes(ctx: Context, _: Any) -> dict:
    return _routes(ctx)


def from_traffic(ctx: Context, p: FromTraffic) -> dict:
    if ctx.gateway is not None:
        ctx.gateway.traffic.flush()
    return prompts_from_traffic(ctx.store, p.since, p.min_count, ctx.settings.gateway)
