"""`rankloop annotate-sim`: simulated annotators rank the open queue through the real submit path.

With a running `rankloop serve`, they go over HTTP (`/api/annotate/*`, admin key plus
`X-Rankloop-Annotator`); otherwise straight through `annotator.queue`, the same
functions the API calls. Each annotator works in its own thread until the queue has
nothing left for it.

Each ranking's randomness comes from a generator seeded by (seed, annotator, task), never
from a stream shared across tasks: which task a thread is handed next depends on how the
threads interleave, so the same seed and the same tasks give the same rankings whatever the
thread order (and locally or through a service alike).

Gold annotators (`Profile.gold_model`) rank by a gold reward model's scores, which the caller
computes (`gold(model_dir, task)`: this package runs no models; service/control/gold.py does).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import Submission
from annotator.simulated import Profile, rank
from service.core.enums import Role
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store


class QueueClient(Protocol):
    def next(self, name: str) -> dict | None: ...
    def submit(self, name: str, sub: Submission) -> None: ...


class LocalQueue:
    """The queue in this process (the command holds the database)."""

    def __init__(self, store: Store, settings: AnnotationOptions):
        self.store, self.settings = store, settings

    def _id(self, name: str) -> int:
        return self.store.scalar("SELECT id FROM annotators WHERE name = ?", [name])

    def next(self, name: str) -> dict | None:
        return queue.next_task(self.store, self._id(name), self.settings)

    def submit(self, name: str, sub: Submission) -> None:
        queue.submit(self.store, self._id(name), sub, self.settings)


class HttpQueue:
    """A running service's annotation API, acting for simulated accounts with the admin key."""

    def __init__(self, base_url: str, admin_key: str, timeout_s: float = 60.0):
        import httpx

        self._local = threading.local()
        self._make = lambda: httpx.Client(
            base_url=base_url, timeout=timeout_s, headers={"Authorization": f"Bearer {admin_key}"}
        )

    def _client(self):
        if not hasattr(self._local, "client"):
            self._local.client = self._make()
        return self._local.client

    def _check(self, resp):
        if resp.status_code >= 400:
            raise RuntimeError(
                f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}"
            )
        return resp.json()

    def next(self, name: str) -> dict | None:
        return self._check(self._client().get("/api/annotate/next", headers={"X-Rankloop-Annotator": name}))[
            "task"
        ]

    def submit(self, name: str, sub: Submission) -> None:
        self._check(
            self._client().post(
                "/api/annotate/submit",
                json=sub.model_dump(mode="json"),
                headers={"X-Rankloop-Annotator": name},
            )
        )


def default_profiles(
    n: int, noise: float, unreliable: int, position_bias: float = 0.0, gold_model: str | None = None
) -> dict[str, Profile]:
    """`sim-1..sim-n` share one hidden preference (the ground truth) at the given noise;
    `sim-u1..` rank at random. With `gold_model` they are `gold-1..`, `gold-u1..` and the ground
    truth is that gold reward model (other names: an account keeps the profile it was made with)."""
    prefix = "gold" if gold_model else "sim"
    out = {
        f"{prefix}-{i + 1}": Profile(noise=noise, position_bias=position_bias, gold_model=gold_model)
        for i in range(n)
    }
    out |= {
        f"{prefix}-u{i + 1}": Profile(noise=noise, unreliable=True, gold_model=gold_model)
        for i in range(unreliable)
    }
    return out


def ensure_accounts(store: Store, profiles: dict[str, Profile]) -> dict[str, Profile]:
    """Create missing simulated accounts; an existing one keeps the profile it was created with,
    so its hidden preference never changes under data it already produced."""
    out = {}
    for name, profile in profiles.items():
        row = store.query("SELECT role, profile FROM annotators WHERE name = ?", [name])
        if not row:
            add_annotator(store, name, Role.SIMULATED, profile=profile.model_dump_json())
            out[name] = profile
        elif row[0]["role"] != Role.SIMULATED:
            raise UserError(f"{name!r} exists and is not a simulated annotator; pick other names")
        else:  # an account made by hand without a profile gets the default one
            out[name] = Profile.model_validate_json(row[0]["profile"]) if row[0]["profile"] else Profile()
    return out


@dataclass
class SimReport:
    rankings: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rankings.values())


def ranking_rng(seed: int, annotator: str, task_id: int) -> random.Random:
    """The generator for one annotator's ranking of one task (a string seed hashes with SHA-512,
    so it is the same in every process, unlike `hash()`)."""
    return random.Random(f"{seed}:{annotator}:{task_id}")


GoldScores = Callable[[str, dict], list[float]]  # (gold model directory, task) -> a score per candidate


def run(
    client: QueueClient,
    profiles: dict[str, Profile],
    seed: int = 0,
    max_per_annotator: int | None = None,
    parallel: bool = True,
    gold: GoldScores | None = None,
) -> SimReport:
    """Every annotator ranks tasks until the queue has none left for it: each in its own thread,
    or (`parallel=False`) taking turns in one thread, so that who ranks which task is fixed too
    (needed when a task wants fewer rankings than there are annotators), in a seeded order that changes
    every turn. `gold` scores tasks for the gold annotators among `profiles`."""
    needs_gold = sorted(n for n, p in profiles.items() if p.gold_model and not p.unreliable)
    if needs_gold and gold is None:
        raise UserError(f"{', '.join(needs_gold)} rank by a gold reward model, and no gold scorer was given")
    counts = dict.fromkeys(profiles, 0)
    errors: list[BaseException] = []

    def one(name: str, profile: Profile) -> bool:
        """Rank one task; False when this annotator is done."""
        if max_per_annotator is not None and counts[name] >= max_per_annotator:
            return False
        task = client.next(name)
        if task is None:
            return False
        scores = (
            gold(profile.gold_model, task) if gold and profile.gold_model and not profile.unreliable else None
        )
        ranks = rank(profile, task["candidates"], ranking_rng(seed, name, task["task_id"]), scores)
        client.submit(name, Submission(task_id=task["task_id"], submission_id=uuid.uuid4().hex, ranks=ranks))
        counts[name] += 1
        return True

    if not parallel:
        # Turns in a new order each pass (seeded): in a fixed order the same annotators would always share
        # a task, and an annotator paired only with a random ranker would look unreliable.
        order, active = random.Random(f"{seed}:turns"), list(profiles)
        while active:
            active = [name for name in order.sample(active, len(active)) if one(name, profiles[name])]
        return SimReport(counts)

    def work(name: str, profile: Profile) -> None:
        try:
            while one(name, profile):
                pass
        except BaseException as e:  # surfaced after join
            errors.append(e)

    threads = [threading.Thread(target=work, args=(name, p), daemon=True) for name, p in profiles.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return SimReport(counts)
