"""The one client every `rankloop` command talks through.

`connect(settings)` yields a client for the data directory: the running service's admin
API when `rankloop serve` holds it, else the database itself in this process. Either way
`client.call(NAME, **params)` runs the operation NAME of `service.control.commands` and
returns its JSON result, with the same errors: a user error raises with its message (exit
code 2), a failed operation with exit code 1. Files travel over HTTP: an upload parameter's
file is streamed as the request body, a download parameter's file is streamed back and
written whole (temporary file, then rename) to the caller's path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from tqdm.auto import tqdm

from annotator.simulate_run import HttpQueue, LocalQueue, QueueClient
from reward.configfile import ConfigError, format_errors
from service.cli.output import print_table
from service.control.commands import COMMANDS, Command
from service.control.context import Context
from service.control.scoring import ScorerCache
from service.core.discovery import admin_key, find_service
from service.core.enums import FINISHED
from service.core.errors import CommandFailed, DataDirBusy, UserError
from service.core.paths import atomic_file
from service.core.settings import Settings
from service.core.store import Store
from service.engine.supervisor import EngineSupervisor
from service.jobs.runner import JobRunner

CHUNK = 1 << 20


def _validate(name: str, params: dict[str, Any]) -> tuple[Command, Any]:
    cmd = COMMANDS[name]
    try:
        return cmd, cmd.params.model_validate(params)
    except ValidationError as e:
        raise ConfigError(format_errors(e, f"the {name} parameters")) from None


class LocalClient:
    """Runs operations in this process, on the database it holds."""

    remote = False

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def call(self, name: str, /, **params: Any) -> Any:
        cmd, p = _validate(name, params)
        return to_jsonable_python(cmd.run(self.ctx, p))  # the same JSON the service would send


def prepare(name: str, params: dict[str, Any]) -> tuple[Command, str, dict[str, Any]]:
    """An operation as an admin API request: its row, its URL (path parameters filled in) and the rest
    of its parameters (the JSON body, or the query of a GET). Refused here as in-process, before
    anything is sent."""
    cmd, p = _validate(name, params)
    values = p.model_dump(mode="json", exclude_unset=True)
    fields = {f for f in p.model_fields if "{" + f + "}" in cmd.path}
    url = "/admin" + cmd.path.format(**{f: values[f] for f in fields})
    return cmd, url, {k: v for k, v in values.items() if k not in fields}


class RemoteClient:
    """Sends operations to a running service's admin API."""

    remote = True

    def __init__(
        self, url: str, key: str, timeout_s: float = 600.0, transport: httpx.BaseTransport | None = None
    ):
        self.url = url
        self.http = httpx.Client(
            base_url=url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {key}"} if key else {},  # none: a person logs in
            transport=transport,
        )

    def call(self, name: str, /, **params: Any) -> Any:
        cmd, url, body = prepare(name, params)
        try:
            if cmd.upload:
                file = Path(body[cmd.upload])
                if not file.is_file():
                    raise UserError(f"{file}: no such file")
                with open(file, "rb") as f:
                    resp = self.http.post(
                        url, params={"params": json.dumps(body)}, content=iter(lambda: f.read(CHUNK), b"")
                    )
                return self._result(resp)
            if cmd.download:
                return self._download(url, body, Path(body[cmd.download]))
            if cmd.method == "GET":
                return self._result(
                    self.http.get(url, params={k: v for k, v in body.items() if v is not None})
                )
            return self._result(self.http.post(url, json=body))
        except httpx.HTTPError as e:
            raise CommandFailed(
                f"the service at {self.url} stopped answering ({type(e).__name__}: {e}); "
                "`rankloop status` shows whether it still runs",
                1,
            ) from None

    def _download(self, url: str, body: dict, out: Path) -> Any:
        if out.is_dir():  # checked before the service does the work, as in-process
            raise FileExistsError(f"{out} is a directory; give a file path")
        with self.http.stream("POST", url, json=body) as resp:
            if resp.status_code >= 400:
                resp.read()
                return self._result(resp)
            with atomic_file(out) as f:
                for chunk in resp.iter_bytes(CHUNK):
                    f.write(chunk)
            return json.loads(resp.headers["X-Rankloop-Result"])

    @staticmethod
    def _result(resp: httpx.Response) -> Any:
        if resp.status_code < 400:
            return resp.json()
        try:
            body = resp.json()
            message, code = body["error"], body.get("exit_code", 2 if resp.status_code < 500 else 1)
        except (ValueError, KeyError, TypeError):
            message, code = f"the service answered {resp.status_code}: {resp.text[:500]}", 1
        raise CommandFailed(message, code)

    def close(self) -> None:
        self.http.close()


Client = LocalClient | RemoteClient


@contextmanager
def connect(settings: Settings) -> Iterator[Client]:
    """A client for the data directory: through the running service, or in this process."""
    info = find_service(settings)
    if info.url:
        client = RemoteClient(info.url, admin_key(settings))
        try:
            yield client
        finally:
            client.close()
        return
    try:
        store = Store.open(settings.paths.db)
    except DataDirBusy as e:
        raise DataDirBusy(
            f"{e}"
            + (
                f"\nAlso, {info.stale}: it may have been killed; when no rankloop process "
                "runs, remove that file and try again."
                if info.stale
                else ""
            )
        ) from None
    engines = EngineSupervisor(settings)
    ctx = Context(store, settings, JobRunner(store, settings, engines), ScorerCache())
    try:
        yield LocalClient(ctx)
    finally:
        ctx.jobs.stop_all()
        engines.stop_all()
        store.close()


def annotation_queue(client: Client, settings: Settings) -> QueueClient:
    """Where simulated annotators and judges rank: the service's annotation API, or the queue here."""
    if isinstance(client, RemoteClient):
        return HttpQueue(client.url, admin_key(settings))
    return LocalQueue(client.ctx.store, settings.annotation)


def follow(client: Client, job_id: int, desc: str, log: bool = False) -> dict[str, Any]:
    """Show a job's progress until it ends (with `log`, the lines its trainer prints too, wherever it
    runs). Ctrl-C: a job in the service keeps running (and this says how to follow it again); a job
    in this process is cancelled, keeping what it stored."""
    bar = tqdm(total=100, desc=desc, unit="%")
    offset = 0
    try:
        while True:
            job = client.call("jobs.show", job_id=job_id)
            if log:
                part = client.call("jobs.log", job_id=job_id, offset=offset)
                offset = part["offset"]
                for line in part["text"].splitlines():
                    bar.write(line)
            bar.update(round(job["progress"] * 100) - bar.n)
            if job["status"] in FINISHED:
                return job
            time.sleep(0.5)
    except KeyboardInterrupt:
        bar.close()
        if client.remote:
            print(
                f"\njob {job_id} keeps running in the service: follow it again with `rankloop jobs follow "
                f"{job_id}`, stop it with `rankloop jobs cancel {job_id}`",
                file=sys.stderr,
            )
        else:
            client.call("jobs.cancel", job_id=job_id)
            print(
                f"\ncancelled job {job_id}; what it stored stays, and running the same command again "
                "completes it",
                file=sys.stderr,
            )
        raise
    finally:
        bar.close()


def show_table(settings: Settings, op: str, columns: list[str], **params: Any) -> None:
    """Run an operation and print its rows as a table: what most listing commands do."""
    with connect(settings) as c:
        print_table(c.call(op, **params), columns)
