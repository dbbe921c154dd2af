"""A stateless gateway replica (`rankloop gateway --control URL`): the /v1 gateway without a database.

It serves what the service tells it (keys, routes, system prompts, gateway settings) and asks again
every `SYNC_EVERY_S` (service/gateway/hub.py), so a revoked key or a new deployment reaches it within
one sync. Its traffic goes to the service in the same call, from a spool on disk
(service/gateway/spool.py): a restart loses none and a resend stores nothing twice. Feedback is sent to
the service after the traffic it judges. It checks the model servers' health itself, and counts the
other gateway processes' use of each key's limits and budgets as the service reports it.

If the service cannot be reached the replica goes on serving what it was last told (a key revoked
meanwhile is refused once the service answers again), and keeps its traffic until it can send it. If the
service refuses its control key (revoked), it serves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import httpx
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.core.settings import GatewayOptions, Settings
from service.core.store import Store
from service.gateway.deploy import Deployer
from service.gateway.feedback import Feedback
from service.gateway.hub import SYNC_EVERY_S
from service.gateway.key_records import KeyScope
from service.gateway.keys import Key, KeyBook
from service.gateway.router import Gateway
from service.gateway.schemas import GatewayError
from service.gateway.spool import Spool
from service.gateway.traffic import TrafficLog, prepare

FEEDBACK_WAIT_S = 3.0  # how long feedback waits for another replica's traffic to reach the service
BATCH = 1000  # rows per sync, at most BATCH_BYTES of them; more wait for the next, sent at once
BATCH_BYTES = 8 << 20
log = logging.getLogger("rankloop.gateway")


class MirrorKeys(KeyBook):
    """The service's active keys, as it last sent them; usage goes to it with the traffic rows."""

    def __init__(self) -> None:
        super().__init__(cast(Store, None))
        self.budgets.store = None
        self._keys: dict[str, Key] = {}

    def active(self) -> dict[str, Key]:
        return self._keys

    def adopt(self, keys: dict[str, dict]) -> None:
        self._keys = {h: Key(**{**k, "scope": KeyScope(k["scope"])}) for h, k in keys.items()}

    def flush(self) -> None:  # the service counts usage from the traffic rows
        pass


class SpooledTraffic(TrafficLog):
    """The traffic log of a replica: rows to the spool, sent by the sync."""

    def __init__(self, spool: Spool):
        super().__init__(cast(Store, None), 1.0)
        self.spool = spool
        self.send_now: Callable[[], object] = lambda: None

    def begin(self, row: dict) -> str | None:
        return self.spool.begin(prepare(row))

    def cancel(self, begun: str | None) -> None:
        self.spool.cancel(begun)

    def add(self, row: dict, begun: str | None = None) -> None:
        self.spool.add(prepare(row), begun)

    def flush(self) -> None:
        self.send_now()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.spool.close()


class ControlError(Exception):
    """The service did not answer a sync as it should."""


class MirrorGateway(Gateway):
    """The gateway's parts in a replica: mirrored keys and routes, a spooled traffic log."""

    def __init__(self, control: str, control_key: str, spool: Spool, address: str):
        super().__init__(
            cast(Store, None),
            Settings(data_dir=spool.path.parent),
            Deployer(cast(Store, None), Settings(data_dir=spool.path.parent)),
            MirrorKeys(),
            SpooledTraffic(spool),
        )
        self.control, self.address, self.spool = control.rstrip("/"), address, spool
        self._auth = {"Authorization": f"Bearer {control_key}"}
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._etag: str | None = None
        self._state_prompts: dict[str, dict] = {}
        self._others: dict[int, tuple[int, int]] = {}
        self.control_error: str | None = None  # why the last sync failed (None: it did not)
        self.serving = False  # a state has come from the service and its control key is accepted
        cast(SpooledTraffic, self.traffic).send_now = self.sync
        self.keys.elsewhere = lambda kid: self._others.get(kid, (0, 0))

    # -- the sync ------------------------------------------------------------------------------------

    def sync(self) -> bool:
        """One exchange with the service; True when rows are still waiting (send again at once). Raises
        ControlError when it failed (what was sent is sent again next time)."""
        with self._sync_lock:
            budgets = self.keys.budgets
            # Counts first, rows second: a request that ends in between is counted twice until the next
            # sync, never missed.
            budgets.sending()
            rows = self.spool.pending(BATCH, BATCH_BYTES)
            body = {
                "replica": self.spool.replica,
                "address": self.address,
                "etag": self._etag,
                "rows": rows,
                "window": {str(k): v for k, v in self.keys.window().items()},
                "held": [[k, label, n] for (k, label), n in budgets.held().items()],
            }
            try:
                r = self._http.post(f"{self.control}/admin/gateway/sync", json=body, headers=self._auth)
            except httpx.HTTPError as e:
                budgets.sent(None)
                raise ControlError(f"the service at {self.control} does not answer: {e}") from None
            if r.status_code in (401, 403):
                budgets.sent(None)
                self._refused()
                raise ControlError(
                    f"the service refused this gateway's control key ({r.status_code}): {r.text[:200]}"
                )
            if r.status_code != 200:
                budgets.sent(None)
                raise ControlError(f"the service answered the sync with {r.status_code}: {r.text[:300]}")
            answer = r.json()
            if int(answer["acked"]) > self.spool.last:
                budgets.sent(None)
                raise ControlError(
                    f"the service has stored rows up to {answer['acked']} from replica {self.spool.replica}, but "
                    f"this one has numbered only {self.spool.last}: another gateway uses the same replica id "
                    f"(a copied {self.spool.path.parent}); give each gateway a spool of its own"
                )
            if answer.get("error"):
                log.warning("%s; the rows are sent again", answer["error"])
            self.spool.ack(int(answer["acked"]))
            if answer["state"] is not None:
                self._adopt(answer["state"])
                self._etag = answer["etag"]
            self._others = {int(k): (int(v[0]), int(v[1])) for k, v in answer["others"].items()}
            budgets.sent({(int(k), str(label)): int(n) for k, label, n in answer["budget_used"]})
            self.serving, self.control_error = True, None
            return len(rows) == BATCH

    def _adopt(self, state: dict) -> None:
        cast(MirrorKeys, self.keys).adopt(state["keys"])
        self.deployer.adopt(state["routes"])
        self._state_prompts = state["prompts"]
        self.settings = self.settings.model_copy(
            update={"gateway": GatewayOptions.model_validate(state["gateway"])}
        )

    def _refused(self) -> None:
        """The control key is revoked: nothing is served until the service accepts one again."""
        cast(MirrorKeys, self.keys).adopt({})
        why = "this gateway is not allowed to serve (its control key was refused)"
        self.deployer.adopt(
            {"primary": None, "canary": None, "fallback": None, "canary_pct": 0.0, "arms": None, "error": why}
        )
        self.serving, self._etag = False, None

    def run_sync(self) -> None:
        """Sync every SYNC_EVERY_S until stopped (in a thread of its own)."""
        logged = 0.0
        while not self._stop.is_set():
            try:
                more = self.sync()
            except ControlError as e:
                more, self.control_error = False, str(e)
                if time.monotonic() - logged > 10:  # said once, then every 10 s while it lasts
                    log.warning("%s; serving what it last said, traffic kept in %s", e, self.spool.path)
                    logged = time.monotonic()
            except Exception as e:  # noqa: BLE001 - the loop must outlive any one failure
                more, self.control_error = False, repr(e)
                log.exception("gateway sync failed")
            if not more:
                self._stop.wait(SYNC_EVERY_S)

    def start(self) -> None:
        self.deployer.supervise()
        threading.Thread(target=self.run_sync, daemon=True, name="gateway-sync").start()

    def stop(self) -> None:
        self._stop.set()
        self.deployer.stop_supervising()
        try:
            self.sync()  # what is spooled goes now if it can; else it waits on disk for the next start
        except ControlError as e:
            log.warning("%s; the traffic stays in %s for the next start", e, self.spool.path)
        self.traffic.stop()

    # -- what the routes need from a gateway --------------------------------------------------------

    def system_prompt(self, name: str) -> dict | None:
        return self._state_prompts.get(name)

    async def record_feedback(self, key: Key, fb: Feedback, request: Request) -> Response:
        """Sent to the service (with the client's own key) after the traffic it may judge."""
        try:
            await run_in_threadpool(self.sync)
        except ControlError as e:
            log.warning("feedback not sent: %s", e)
            raise GatewayError(
                503, "feedback cannot be recorded now; retry later", type_="server_error", retry_after=5
            ) from None
        body = await request.body()  # as the client sent it (read once already: Starlette keeps it)
        headers = {
            "Authorization": request.headers.get("authorization", ""),
            "Content-Type": "application/json",
        }
        # A response another replica served reaches the service with that replica's next sync (every
        # SYNC_EVERY_S): a 404 is asked again for a few syncs before it is the client's answer.
        deadline = time.monotonic() + FEEDBACK_WAIT_S
        while True:
            async with self.http().post(f"{self.control}/v1/feedback", data=body, headers=headers) as r:
                answer = await r.read()
                if r.status != 404 or time.monotonic() >= deadline:
                    return Response(answer, status_code=r.status, media_type="application/json")
            await asyncio.sleep(SYNC_EVERY_S)
