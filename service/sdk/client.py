"""rankloop's Python client: every admin operation as a typed method (service/sdk/operations.py,
generated from the command table) and the annotation API, against a running `rankloop serve`.

    from service.sdk import Rankloop, AsyncRankloop, CommandFailed

    rl = Rankloop("http://127.0.0.1:8000", key="ADMIN_KEY or an admin-scope rk-... key")
    rl.keys_create(name="my-app", rpm=600)
    job = rl.sample(models=["models/policy"], k=4)        # the same parameters as `rankloop sample`
    rl.follow(job["job_id"])                               # until it ends; its last state

    async with AsyncRankloop(url, key=key) as arl:
        models = await arl.models_list()

    me = Rankloop(url).login("alice", "password")        # an annotator: a token of their own
    task = me.next_task()                                  # with its guidelines; a quiz question first
    me.submit({"task_id": task["task_id"], "submission_id": "s1", "ranks": [2, 1, 3, 4],
               "strengths": ["clearly", "slightly", "significantly"]})

    for job in rl.pages("jobs.list", page_size=100):       # any listing operation, a page at a time
        ...

Errors are the CLI's: `CommandFailed` with the same message and exit code (`.code`; 2: something to fix in
the request, 1: the operation failed). A request that did not reach the service (connection refused)
is sent again up to `max_retries` times; a read (GET) that gets 502, 503 or 504 too, after the
`Retry-After` the service gave (at most 30 s) or 0.5 s, 1 s, 2 s...
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from service.cli.client import CHUNK, RemoteClient, prepare
from service.control.commands import COMMANDS
from service.core.enums import FINISHED
from service.core.errors import CommandFailed
from service.core.paths import atomic_file
from service.sdk.operations import Operations

RETRY_STATUSES = (502, 503, 504)
__all__ = ["AsyncRankloop", "CommandFailed", "Rankloop"]


def _wait_s(resp: httpx.Response | None, attempt: int) -> float:
    after = resp.headers.get("retry-after") if resp is not None else None
    return min(float(after), 30.0) if after and after.isdigit() else 0.5 * 2**attempt


class _Retry(httpx.HTTPTransport):
    """Reads that meet a busy or restarting service are asked again."""

    def __init__(self, max_retries: int):
        super().__init__(retries=max_retries)  # connection failures: nothing was sent, for any method
        self.max_retries = max_retries

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            resp = super().handle_request(request)
            if (
                request.method != "GET"
                or resp.status_code not in RETRY_STATUSES
                or attempt == self.max_retries
            ):
                return resp
            resp.close()
            time.sleep(_wait_s(resp, attempt))
        raise AssertionError("unreachable")


class _AsyncRetry(httpx.AsyncHTTPTransport):
    def __init__(self, max_retries: int):
        super().__init__(retries=max_retries)
        self.max_retries = max_retries

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            resp = await super().handle_async_request(request)
            if (
                request.method != "GET"
                or resp.status_code not in RETRY_STATUSES
                or attempt == self.max_retries
            ):
                return resp
            await resp.aclose()
            await asyncio.sleep(_wait_s(resp, attempt))
        raise AssertionError("unreachable")


def _check_paged(name: str) -> None:
    cmd = COMMANDS.get(name)
    if cmd is None or "limit" not in cmd.params.model_fields:
        listing = sorted(n for n, c in COMMANDS.items() if "offset" in c.params.model_fields)
        raise CommandFailed(f"{name!r} is not a listing operation; these are: {', '.join(listing)}", 2)


def _unreachable(url: str, e: httpx.HTTPError) -> CommandFailed:
    return CommandFailed(f"the service at {url} does not answer ({type(e).__name__}: {e})", 1)


class Rankloop(Operations):
    def __init__(self, url: str, key: str | None = None, timeout_s: float = 600.0, max_retries: int = 3):
        self.url = url.rstrip("/")
        self._remote = RemoteClient(self.url, key or "", timeout_s, transport=_Retry(max_retries))
        self._token: str | None = None

    def call(self, name: str, /, **params: Any) -> Any:
        """Any operation by its name in the command table (`keys.create`), as the typed methods do."""
        return self._remote.call(name, **params)

    def follow(self, job_id: int, poll_s: float = 1.0) -> dict:
        """Wait for a job to end; its last state (a failed job is returned, not raised)."""
        while (job := self.jobs_show(job_id=job_id))["status"] not in FINISHED:
            time.sleep(poll_s)
        return job

    def pages(self, name: str, /, page_size: int = 100, **params: Any) -> Iterator[Any]:
        """Every row of a listing operation (one that takes limit and offset), read a page at a time."""
        _check_paged(name)
        offset = 0
        while True:
            rows = self.call(name, **params, limit=page_size, offset=offset)
            yield from rows
            if len(rows) < page_size:
                return
            offset += page_size

    # -- the annotation API (a person's own token, or the admin key acting for a simulated account) --

    def login(self, name: str, password: str) -> Rankloop:
        body = self._annotation("POST", "/login", json={"name": name, "password": password})
        self._token = body["token"]
        return self

    def next_task(self, acting_for: str | None = None) -> dict | None:
        return self._annotation("GET", "/next", acting_for=acting_for)["task"]

    def submit(self, submission: dict, acting_for: str | None = None) -> dict:
        return self._annotation("POST", "/submit", json=submission, acting_for=acting_for)

    def progress(self, acting_for: str | None = None) -> dict:
        return self._annotation("GET", "/progress", acting_for=acting_for)

    def guidelines(self, batch: str | None = None) -> dict | None:
        """The guideline tasks of this batch (default: the project's) are ranked under."""
        params = {"batch": batch} if batch else {}
        return self._annotation("GET", "/guidelines", params=params)["guidelines"]

    def next_review(self) -> dict | None:
        """A reviewer's next contested task, with its raw rankings; None when none waits."""
        return self._annotation("GET", "/review/next")["task"]

    def review(
        self, task_id: int, ranks: list[int], rationale: str, strengths: list[str] | None = None
    ) -> dict:
        """Resolve a contested task with a final ranking and why."""
        body = {"task_id": task_id, "ranks": ranks, "rationale": rationale, "strengths": strengths}
        return self._annotation("POST", "/review", json=body)

    def _annotation(self, method: str, path: str, acting_for: str | None = None, **kw: Any) -> Any:
        headers = {"X-Rankloop-Annotator": acting_for} if acting_for else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            resp = self._remote.http.request(method, "/api/annotate" + path, headers=headers, **kw)
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from None
        return RemoteClient._result(resp)

    def close(self) -> None:
        self._remote.close()

    def __enter__(self) -> Rankloop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRankloop(Operations):
    """The same methods as `Rankloop`, each a coroutine."""

    def __init__(self, url: str, key: str | None = None, timeout_s: float = 600.0, max_retries: int = 3):
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            transport=_AsyncRetry(max_retries),
        )

    async def call(self, name: str, /, **params: Any) -> Any:
        cmd, url, body = prepare(name, params)
        try:
            if cmd.upload:
                file = Path(body[cmd.upload])
                if not file.is_file():
                    raise CommandFailed(f"{file}: no such file", 2)

                async def chunks():
                    with open(file, "rb") as f:
                        while chunk := f.read(CHUNK):
                            yield chunk

                resp = await self.http.post(url, params={"params": json.dumps(body)}, content=chunks())
            elif cmd.download:
                return await self._download(url, body, Path(body[cmd.download]))
            elif cmd.method == "GET":
                resp = await self.http.get(url, params={k: v for k, v in body.items() if v is not None})
            else:
                resp = await self.http.post(url, json=body)
        except httpx.HTTPError as e:
            raise _unreachable(self.url, e) from None
        return RemoteClient._result(resp)

    async def _download(self, url: str, body: dict, out: Path) -> Any:
        async with self.http.stream("POST", url, json=body) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                return RemoteClient._result(resp)
            with atomic_file(out) as f:
                async for chunk in resp.aiter_bytes(CHUNK):
                    f.write(chunk)
            return json.loads(resp.headers["X-Rankloop-Result"])

    async def follow(self, job_id: int, poll_s: float = 1.0) -> dict:
        while (job := await self.jobs_show(job_id=job_id))["status"] not in FINISHED:
            await asyncio.sleep(poll_s)
        return job

    async def pages(self, name: str, /, page_size: int = 100, **params: Any) -> AsyncIterator[Any]:
        """Every row of a listing operation, read a page at a time (`async for row in arl.pages(...)`)."""
        _check_paged(name)
        offset = 0
        while True:
            rows = await self.call(name, **params, limit=page_size, offset=offset)
            for row in rows:
                yield row
            if len(rows) < page_size:
                return
            offset += page_size

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncRankloop:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
