"""`/admin/*`: every operation of `service.control.commands`, over HTTP, for admins only.

Each row of the command table becomes one route (its method and path under /admin). JSON
parameters come in the body (POST) or the query string (GET), path segments fill their
fields. A command that reads a file takes the file as the raw request body, streamed to
the data directory's uploads/ under a size limit, with its other parameters as JSON in
`?params=`; one that writes a file streams it back, its result in `X-Rankloop-Result`.
Errors answer 4xx (5xx for a failure of the work) with `{"error", "exit_code"}`: the
message and exit code the command prints and returns in-process.

Authenticated by the admin key (`Authorization: Bearer ADMIN_KEY`) or by the token of
an account with role `admin`.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from starlette.background import BackgroundTask

from annotator.accounts import get_annotator, session_valid
from annotator.api import admin_key_ok, bearer_token
from reward.configfile import format_errors
from service.control.commands import COMMANDS, Command
from service.core.errors import NotFound, UserError, describe, exit_code

router = APIRouter(prefix="/admin", tags=["admin"])


def require_admin(request: Request, authorization: str | None = Header(None)) -> str:
    token = bearer_token(authorization)
    if token and admin_key_ok(request, token):
        return "admin-key"
    if token and token.startswith("rk-"):  # an API key: admin scope only
        key = request.app.state.gateway.keys.lookup(token)
        if key is None:
            raise HTTPException(401, "invalid or revoked API key")
        if key.scope != "admin":
            raise HTTPException(
                403, f"key {key.name!r} has scope {key.scope}; /admin needs an admin-scope key"
            )
        return f"key:{key.name}"
    session = request.app.state.signer.verify(token) if token else None
    if session is not None:
        acct = get_annotator(request.app.state.store, id=session[0])
        if acct is None or not session_valid(acct, session[1]):
            raise HTTPException(401, "invalid, expired or revoked token; log in again")
        if acct["role"] == "admin":
            return acct["name"]
        raise HTTPException(403, "admins only")
    raise HTTPException(401, "send 'Authorization: Bearer ADMIN_KEY' or an admin account's token")


def _error(message: str, code: int, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "exit_code": code}, status_code=status)


async def _receive_upload(request: Request, folder: Path, name: str) -> Path:
    """Stream the body into folder/name; 413 past the limit (what was written is removed)."""
    limit = request.app.state.settings.max_upload_mib * 2**20
    folder.mkdir(parents=True, exist_ok=True)
    path, size = folder / name, 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413,
                    f"the file is over the upload limit of "
                    f"{request.app.state.settings.max_upload_mib} MiB (setting max_upload_mib)",
                )
            f.write(chunk)
    return path


def _route(name: str, cmd: Command):
    async def endpoint(request: Request, _: str = Depends(require_admin)) -> Any:
        paths = request.app.state.settings.paths
        scratch = None
        try:
            if cmd.upload:
                values = json.loads(request.query_params.get("params", "{}"))
            elif cmd.method == "GET":
                values = dict(request.query_params)
            else:
                values = await request.json() if await request.body() else {}
            if not isinstance(values, dict):
                return _error("the parameters must be a JSON object", 2, 422)
            values.update(request.path_params)
            shown: dict[str, str] = {}  # server path -> the caller's, for messages
            if cmd.upload or cmd.download:
                scratch = (paths.uploads if cmd.upload else paths.downloads) / secrets.token_hex(8)
            if cmd.upload:
                given = str(values.get(cmd.upload, "upload"))
                server_path = await _receive_upload(request, scratch, Path(given).name or "upload")
                values[cmd.upload], shown[str(server_path)] = str(server_path), given
            if cmd.download:
                given = str(values.get(cmd.download, "download"))
                values[cmd.download] = str(scratch / (Path(given).name or "download"))
                scratch.mkdir(parents=True, exist_ok=True)
                shown[values[cmd.download]] = given
            try:
                params = cmd.params.model_validate(values)
            except ValidationError as e:
                return _error(format_errors(e, f"the {name} parameters"), 2, 422)
            try:
                result = to_jsonable_python(await run_in_threadpool(cmd.run, request.app.state.ctx, params))
            except Exception as e:
                code = exit_code(e)
                if code is None:
                    raise
                message = describe(e)
                for server, caller in shown.items():
                    message = message.replace(server, caller)
                status = (
                    404
                    if isinstance(e, NotFound)
                    else 400
                    if isinstance(e, UserError | OSError)
                    else 422
                    if code == 2
                    else 500
                )
                return _error(message, code, status)
            if cmd.download:
                done, scratch = scratch, None  # removed once the file has been sent
                return FileResponse(
                    values[cmd.download],
                    headers={"X-Rankloop-Result": json.dumps(result)},
                    background=BackgroundTask(shutil.rmtree, done, ignore_errors=True),
                )
            return JSONResponse(result)
        except json.JSONDecodeError as e:
            return _error(f"the parameters are not valid JSON: {e}", 2, 422)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    endpoint.__name__ = name.replace(".", "_")
    return endpoint


for _name, _cmd in COMMANDS.items():
    router.add_api_route(_cmd.path, _route(_name, _cmd), methods=[_cmd.method], name=_name)
