"""`/admin/*`: every operation of `service.control.commands`, over HTTP, for admins only.

Each row of the command table becomes one route (its method and path under /admin). JSON
parameters come in the body (POST) or the query string (GET), path segments fill their
fields. A command that reads a file takes the file as the raw request body, streamed to
the data directory's uploads/ under a size limit, with its other parameters as JSON in
`?params=`; one that writes a file streams it back, its result in `X-Rankloop-Result`.
Errors answer 4xx (5xx for a failure of the work) with `{"error", "exit_code"}`: the
message and exit code the command prints and returns in-process.

Authenticated by the admin key (`Authorization: Bearer ADMIN_KEY`), an API key of scope
`admin`, or the token of an account with role `admin` (service/web/auth.py).

    app.include_router(build_router(auth, ctx))
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from starlette.background import BackgroundTask

from annotator.dashboard import CSV_COLUMNS, dashboard
from annotator.ranking import RankingError
from reward.configfile import format_errors
from service.control.commands import COMMANDS, Command
from service.control.context import Context
from service.core.errors import NotFound, StorageError, UserError, describe, exit_code, is_storage_error
from service.web.auth import Auth


def _error(message: str, code: int, status: int) -> JSONResponse:
    return JSONResponse({"error": message, "exit_code": code}, status_code=status)


async def _receive_upload(request: Request, folder: Path, name: str, limit_mib: int) -> Path:
    """Stream the body into folder/name; 413 past the limit (what was written is removed)."""
    limit = limit_mib * 2**20
    folder.mkdir(parents=True, exist_ok=True)
    path, size = folder / name, 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413,
                    f"the file is over the upload limit of {limit_mib} MiB (setting max_upload_mib)",
                )
            f.write(chunk)
    return path


def _route(name: str, cmd: Command, ctx: Context, require_admin: Callable[..., str]) -> Callable[..., Any]:
    async def endpoint(request: Request, _: str = Depends(require_admin)) -> Any:
        paths = ctx.settings.paths
        scratch: Path | None = None
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
            folder = (paths.uploads if cmd.upload else paths.downloads) / secrets.token_hex(8)
            if cmd.upload or cmd.download:
                scratch = folder
            if cmd.upload:
                given = str(values.get(cmd.upload, "upload"))
                server_path = await _receive_upload(
                    request, folder, Path(given).name or "upload", ctx.settings.max_upload_mib
                )
                values[cmd.upload], shown[str(server_path)] = str(server_path), given
            if cmd.download:
                given = str(values.get(cmd.download, "download"))
                values[cmd.download] = str(folder / (Path(given).name or "download"))
                folder.mkdir(parents=True, exist_ok=True)
                shown[values[cmd.download]] = given
            try:
                params = cmd.params.model_validate(values)
            except ValidationError as e:
                return _error(format_errors(e, f"the {name} parameters"), 2, 422)
            try:
                result = to_jsonable_python(await run_in_threadpool(cmd.run, ctx, params))
            except Exception as e:
                code = exit_code(e)
                if code is None:
                    raise
                message = describe(e)
                for server, caller in shown.items():
                    message = message.replace(server, caller)
                status = (
                    503  # a damaged database: the operator's to fix, as on every other route
                    if isinstance(e, StorageError) or is_storage_error(e)
                    else 404
                    if isinstance(e, NotFound)
                    else 422  # a ranking that cannot be stored as given, as on the annotation API
                    if isinstance(e, RankingError)
                    else 400
                    if isinstance(e, UserError | OSError)
                    else 422
                    if code == 2
                    else 500
                )
                return _error(message, code, status)
            if cmd.download:
                scratch = None  # removed once the file has been sent
                return FileResponse(
                    values[cmd.download],
                    headers={"X-Rankloop-Result": json.dumps(result)},
                    background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
                )
            return JSONResponse(result)
        except json.JSONDecodeError as e:
            return _error(f"the parameters are not valid JSON: {e}", 2, 422)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    endpoint.__name__ = name.replace(".", "_")
    return endpoint


def build_router(auth: Auth, ctx: Context) -> APIRouter:
    """One route per command, each run with `ctx` for a caller `auth` accepts as an admin."""
    router = APIRouter(prefix="/admin", tags=["admin"])

    def require_admin(authorization: str | None = Header(None)) -> str:
        return auth.admin(authorization)

    @router.get("/quality/dashboard.csv", include_in_schema=False)
    def dashboard_csv(_: str = Depends(require_admin)) -> Response:
        """The annotator dashboard's weekly rows as CSV (`rankloop dashboard --csv` writes the same)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(dashboard(ctx.store)["weeks"])
        return Response(out.getvalue(), media_type="text/csv", headers={"Content-Disposition": "attachment"})

    for name, cmd in COMMANDS.items():
        router.add_api_route(cmd.path, _route(name, cmd, ctx, require_admin), methods=[cmd.method], name=name)
    return router
