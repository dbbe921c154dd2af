"""`rankloop` commands of the reward stage: snapshot, train reward, jobs, models promote, prioritize.

Each goes through a running `rankloop serve`'s admin API when one holds the data
directory (training then runs in the service's job runner and this command follows
its progress), and straight to the database otherwise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from service.config import Settings
from service.configfile import read_yaml
from service.remote import admin_client, call, service_or_store
from service.store import Store


def _table(rows: list[dict], columns: list[str]) -> None:
    from service.cli import print_table

    print_table(rows, columns)


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> None:
    from service.snapshots import SnapshotFilters, create_snapshot

    filters = SnapshotFilters(exclude_flagged=args.exclude_flagged, min_gold_agreement=args.min_gold_agreement,
                              exclude_annotators=args.exclude_annotator or [], eval_fraction=args.eval_fraction)
    def local(store: Store) -> dict:
        s = create_snapshot(store, settings.data_dir, filters)
        return {"id": s.id, "created": s.created, "counts": s.manifest["counts"], "path": str(s.path)}

    snap = service_or_store(settings, lambda c: call(c, "POST", "/admin/snapshots", json=filters.model_dump()), local)
    snap_id, created, counts, path = snap["id"], snap["created"], snap["counts"], snap["path"]
    print(f"snapshot {snap_id} {'written' if created else 'unchanged (same data as before)'}: {path}")
    print(f"  {counts['rankings']} rankings ({counts['train_rankings']} train / {counts['eval_rankings']} eval), "
          f"{counts['prompts']} prompts ({counts['train_prompts']} / {counts['eval_prompts']}), dropped {counts['dropped']}")


def _follow(get_job: Callable[[], dict]) -> dict:
    bar = tqdm(total=100, desc="training", unit="%")
    while True:
        job = get_job()
        bar.update(round(job["progress"] * 100) - bar.n)
        if job["status"] in ("succeeded", "failed"):
            bar.close()
            return job
        time.sleep(1)


def _report(job: dict, model: dict | None) -> None:
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} failed: {job['error']}")
    ev = model["metrics"]["eval"]
    print(f"job {job['id']} succeeded: reward model #{model['id']} at {model['path']}")
    print(f"  held-out pairwise accuracy {ev['pairwise_accuracy']} on {ev['pairs']} pairs, ECE {ev['ece']}")
    if "hidden" in ev:
        h = ev["hidden"]
        print(f"  agreement with the simulated annotators' hidden preference {h['model_vs_hidden']} "
              f"(the labels themselves: {h['labels_vs_hidden']})")
    side = model["metrics"].get("compared_to_active")
    if side:
        print(f"  side by side with the active reward model #{side['model_id']} on the {side['active']['pairs']} "
              f"pairs both snapshots hold out: accuracy {side['candidate']['pairwise_accuracy']} vs "
              f"{side['active']['pairwise_accuracy']}, ECE {side['candidate']['ece']} vs {side['active']['ece']}")
    print(f"  status {model['status']}: {model['status_reason']}")


def cmd_train_reward(args: argparse.Namespace, settings: Settings) -> None:
    from service import jobs
    from service.registry import get_model

    overrides = {"mode": args.mode}
    client = admin_client(settings)
    if client:
        body = {"config": {**(read_yaml(args.job_config) if args.job_config else {}),
                           **{k: v for k, v in overrides.items() if v is not None}},
                "min_accuracy": args.min_accuracy}
        job_id = call(client, "POST", "/admin/jobs/reward", json=body)["job_id"]
        print(f"job {job_id} runs in the service; following it (Ctrl-C stops following, not the job)")
        job = _follow(lambda: call(client, "GET", f"/admin/jobs/{job_id}"))
        model = call(client, "GET", f"/admin/models/{job['result_model_id']}") if job["result_model_id"] else None
        _report(job, model)
        return
    with Store.open(settings.db_path) as store:
        jobs.reap_stale(store)
        cfg = jobs.reward_config(store, settings, Path(args.job_config) if args.job_config else None, overrides)
        job_id = jobs.create_job(store, settings, "reward", cfg)
        print(f"job {job_id}: {cfg.mode} reward model on {cfg.base_model}, snapshot {cfg.snapshot}")
        bar = tqdm(total=1, desc="training", unit="step")

        def progress(step: int, total: int) -> None:
            bar.total = total
            bar.update(step - bar.n)

        job = jobs.run_job(store, settings, job_id, progress, args.min_accuracy)
        bar.close()
        _report(job, get_model(store, job["result_model_id"]) if job["result_model_id"] else None)


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    from service.jobs import reap_stale

    def local(store: Store) -> list[dict]:
        reap_stale(store)
        return store.query("SELECT id, kind, status, progress, result_model_id, error, created_at FROM jobs ORDER BY id")

    rows = service_or_store(settings, lambda c: call(c, "GET", "/admin/jobs"), local)
    for r in rows:
        r["error"] = (r["error"] or "").split("\n")[0][:80]
    _table(rows, ["id", "kind", "status", "progress", "result_model_id", "error", "created_at"])


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> None:
    from service.registry import promote

    service_or_store(settings, lambda c: call(c, "POST", f"/admin/models/{args.id}/promote", json={"reason": args.reason}),
                     lambda store: promote(store, args.id, f"promoted by hand: {args.reason}"))
    print(f"model {args.id} is active ({args.reason})")


def cmd_prioritize(args: argparse.Namespace, settings: Settings) -> None:
    from service.scoring import ScorerCache, prioritize

    def local(store: Store) -> dict:
        model_id, scorer = ScorerCache().get(store)
        return {"model_id": model_id, "tasks": prioritize(store, scorer)}

    result = service_or_store(settings, lambda c: call(c, "POST", "/admin/prioritize"), local)
    model_id, n = result["model_id"], result["tasks"]
    print(f"set the priority of {n} open tasks from reward model #{model_id}'s uncertainty")


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser], models_sub) -> None:
    p = add("snapshot", cmd_snapshot, "freeze the rankings into a Parquet snapshot with a prompt-disjoint split")
    p.add_argument("--exclude-flagged", action="store_true", help="drop rankings that flag a candidate")
    p.add_argument("--min-gold-agreement", type=float, default=None,
                   help="drop annotators whose agreement with gold tasks is below this (0..1)")
    p.add_argument("--exclude-annotator", action="append", metavar="NAME", help="drop this annotator (repeat)")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share of prompts held out (default 0.2)")

    train = sub.add_parser("train", help="training jobs").add_subparsers(dest="kind", required=True)
    p = add("reward", cmd_train_reward, "train a reward model from the newest snapshot as a job", train,
            settings_flag=False)
    p.add_argument("--config", dest="job_config", metavar="FILE",
                   help="YAML with reward.train fields (snapshot, base_model, epochs, lora, ...)")
    p.add_argument("--mode", choices=["listwise", "pairwise"], default=None, help="loss (default listwise)")
    p.add_argument("--min-accuracy", type=float, default=0.55,
                   help="held-out accuracy the first reward model needs to become active (default 0.55)")

    jobs = sub.add_parser("jobs", help="training jobs").add_subparsers(dest="action", required=True)
    add("list", cmd_jobs_list, "list jobs with their status", jobs)

    p = add("promote", cmd_models_promote, "make a model active by hand, recording why", models_sub)
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True, help="why (recorded in the registry)")

    add("prioritize", cmd_prioritize, "order the queue by the active reward model's uncertainty")

