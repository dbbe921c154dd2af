"""Annotation throughput: rankings/s and submit latency through the real service, vs plain DuckDB inserts.

Starts `rankloop serve` (uvicorn + FastAPI + Gradio, DuckDB on disk) on a data
directory seeded with tasks, then runs 1, 8 and 32 concurrent clients that each loop
"next task, submit ranking" over HTTP (`/api/annotate/*`, as simulated annotators do)
until `--rankings` rankings per level are stored; then the levels again with the labelling
workflow on: a guideline shown with every task and stored with every ranking, and each
submission carrying strengths and ratings on all five rubric attributes for every
candidate. The baseline, in the same run, is
the same number of ranking rows inserted straight into the same DuckDB file, one
committed transaction per row (what an acknowledged submit costs at the bottom).

    python -m bench.annotate [--rankings 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path
from statistics import quantiles

import httpx

# bench/ holds scripts named like the packages (policy.py, reward.py): the repository comes first instead.
from annotator.accounts import add_annotator
from reward.strength import DEFAULT_RUBRIC
from service.core.store import Store
from service.sdk import Rankloop
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service

LEVELS = (1, 8, 32)


def labelled(body: dict, k: int) -> dict:
    """A submission with strengths between its rank levels and every attribute rated per candidate."""
    return body | {
        "strengths": ["clearly"] * (k - 1),
        "attributes": [{a: (i + j) % 5 for j, a in enumerate(DEFAULT_RUBRIC)} for i in range(k)],
    }


def run_level(url: str, data: Path, clients: int, target: int, labelling: bool = False) -> dict:
    latencies: list[float] = []
    done = 0
    lock = threading.Lock()

    def client(i: int) -> None:
        nonlocal done
        who = f"bench-{'l' if labelling else 'p'}{clients}-{i}"
        headers = {**admin_headers(data), "X-Rankloop-Annotator": who}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            while True:
                with lock:
                    if done >= target:
                        return
                    done += 1
                task = c.get("/api/annotate/next").json()["task"]
                body = {
                    "task_id": task["task_id"],
                    "submission_id": uuid.uuid4().hex,
                    "ranks": list(range(1, len(task["candidates"]) + 1)),
                }
                if labelling:
                    assert task["guidelines"] is not None
                    body = labelled(body, len(task["candidates"]))
                t0 = time.perf_counter()
                r = c.post("/api/annotate/submit", json=body)
                elapsed = time.perf_counter() - t0
                r.raise_for_status()
                with lock:
                    latencies.append(elapsed)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = quantiles(latencies, n=100)
    return {
        "clients": clients,
        "labelling": labelling,
        "rankings": len(latencies),
        "seconds": wall,
        "per_s": len(latencies) / wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


def direct_inserts(db: Path, n: int) -> dict:
    """The same rows, one INSERT and COMMIT each, straight into the DuckDB file."""
    with Store.open(db) as store:
        rows = store.query("SELECT task_id, annotator_id, ranks FROM rankings LIMIT ?", [n])
        cur = store.cursor()
        t0 = time.perf_counter()
        for r in rows:
            cur.execute("BEGIN TRANSACTION")
            cur.execute(
                """INSERT INTO rankings (task_id, annotator_id, ranks, flags, submission_id, time_spent_s)
                   VALUES (?, ?, ?, '[]', ?, 0)""",
                [r["task_id"], r["annotator_id"], r["ranks"], uuid.uuid4().hex],
            )
            cur.execute("COMMIT")
        wall = time.perf_counter() - t0
    return {"rankings": len(rows), "seconds": wall, "per_s": len(rows) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rankings", type=int, default=1000, help="rankings per concurrency level")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with Store.open(data / "rankloop.duckdb") as store:
            # Tasks of 4 candidates, 2 per prompt; room for every level's rankings, twice (R = 1).
            seed_tasks(store, n_prompts=args.rankings * len(LEVELS) + 8, k=4)
            for mode in ("p", "l"):
                for level in LEVELS:
                    for i in range(level):
                        add_annotator(store, f"bench-{mode}{level}-{i}", "simulated")
        guideline = Path(tmp) / "guidelines.md"
        guideline.write_text("Prefer the correct answer; then the clearer one; then the shorter one.\n" * 20)
        with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
            levels = [run_level(url, data, c, args.rankings) for c in LEVELS]
            with Rankloop(url, key=admin_headers(data)["Authorization"].split()[1]) as rl:
                rl.guidelines_set(file=guideline)
            levels += [run_level(url, data, c, args.rankings, labelling=True) for c in LEVELS]
        baseline = direct_inserts(data / "rankloop.duckdb", args.rankings)
    print(f"direct DuckDB inserts (one transaction each): {baseline['per_s']:8.1f} rankings/s")
    for lv in levels:
        lv["ratio_to_direct"] = lv["per_s"] / baseline["per_s"]
        print(
            f"{'labelling ' if lv['labelling'] else 'plain     '}"
            f"{lv['clients']:2d} clients: {lv['per_s']:7.1f} rankings/s  p50 {lv['p50_ms']:6.1f} ms  "
            f"p99 {lv['p99_ms']:7.1f} ms  service/direct {lv['ratio_to_direct']:.3f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"direct": baseline, "levels": levels}, indent=2))


if __name__ == "__main__":
    main()
