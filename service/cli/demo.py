"""`rankloop demo`: the loop on a machine with nothing on it.

Creates the data directory, loads the example prompts and system prompts shipped in
`examples/`, builds and pretrains the tiny built-in model (or uses `--model DIR`),
serves it with vLLM, samples from it under every system prompt, has simulated
annotators (three reliable, one random) rank every task twice, prints the system
prompt leaderboard and the annotators' agreement, snapshots the rankings and trains a
reward model on them (a job, through the promotion gate), and finally serves the annotator
app for a person to try (`--no-serve` stops before that). Running it again reuses
the model and fills in only what is missing.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from annotator import simulate_run
from annotator.accounts import add_annotator
from service.cli.client import LocalClient, connect, follow
from service.cli.output import print_table, report_job
from service.core.errors import StoreError
from service.core.settings import Settings
from service.core.store import Store

# service/examples links to the repository's examples/, so the files ship in the package too.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def build_tiny_model(out: Path, steps: int) -> Path:
    """The built-in model, pretrained once and reused (its directory is the cache)."""
    if (out / "config.json").exists():
        print(f"using the tiny model already built in {out}")
        return out
    from policy.pretrain import PretrainConfig
    from policy.pretrain import main as pretrain

    print(f"building the tiny model in {out} ({steps} pretraining steps on the generated corpus)")
    return pretrain(PretrainConfig(output_dir=out, size="small", steps=steps))


def run_demo(settings: Settings, model: Path | None = None, k: int = 4, steps: int = 150, serve: bool = True) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model_dir = model or build_tiny_model(settings.paths.model_dir("tiny"), steps)
    with connect(settings) as c:
        if c.remote:
            raise StoreError(f"a rankloop serve runs on {settings.data_dir}: the demo builds its own; stop the "
                             "service or pass another --data")
        added = c.call("prompts.add", file=EXAMPLES / "prompts.jsonl")["added"]
        c.call("system_prompts.add", file=EXAMPLES / "system_prompts.yaml")
        names = [r["name"] for r in c.call("system_prompts.list")]
        print(f"data directory {settings.data_dir}: {added} new example prompts, system prompts {', '.join(names)}")
        job_id = c.call("sample", models=[model_dir], k=k, params={"max_tokens": 64, "temperature": 1.0},
                        rankings_per_task=2)["job_id"]
        report_job(follow(c, job_id, "sampling"))
        print()
        print_stored(c.ctx.store)
        simulate_annotators(c, settings)
        train_reward(c)
        password = ensure_demo_admin(c.ctx.store)
    if serve:
        from service.web.serve import serve as run_service

        if password:
            print(f"\nlog in to the annotator app as 'admin' with password {password!r}")
        run_service(settings)


def simulate_annotators(c: LocalClient, settings: Settings) -> None:
    profiles = simulate_run.ensure_accounts(c.ctx.store, simulate_run.default_profiles(3, noise=0.3, unreliable=1))
    sim = simulate_run.run(simulate_run.LocalQueue(c.ctx.store, settings.annotation), profiles)
    print(f"\nsimulated annotators ranked {sim.total} tasks")
    print("\nsystem prompt leaderboard (Bradley-Terry, 95% CI):")
    print_table(c.call("leaderboard"), ["arm", "score", "ci_low", "ci_high", "win_rate"])
    print("\nannotator agreement (sim-u1 ranks at random):")
    print_table(c.call("quality")["annotators"], ["annotator", "rankings", "agreement_with_consensus", "kendall_tau"])


def train_reward(c: LocalClient) -> None:
    """Snapshot the rankings and train a listwise reward model on them, as a job."""
    snap = c.call("snapshot")
    print(f"\nsnapshot {snap['id']}: {snap['counts']['train_rankings']} train / "
          f"{snap['counts']['eval_rankings']} held-out rankings")
    job_id = c.call("jobs.start", kind="reward", config={"snapshot": str(Path(snap["path"]).parent), "epochs": 4}
                    )["job_id"]
    job = follow(c, job_id, "training the reward model")
    if job["status"] != "succeeded":
        raise RuntimeError(f"reward training failed: {job['error']}")
    model = c.call("models.show", model_id=job["result_model_id"])
    ev = model["metrics"]["eval"]
    print(f"reward model #{model['id']} ({model['status']}): held-out pairwise accuracy {ev['pairwise_accuracy']}, "
          f"agreement with the simulated annotators' hidden preference {ev.get('hidden', {}).get('model_vs_hidden')} "
          f"(their own labels: {ev.get('hidden', {}).get('labels_vs_hidden')})")


def ensure_demo_admin(store: Store) -> str | None:
    """An `admin` account for the person trying the demo; its password is shown once."""
    if store.scalar("SELECT count(*) FROM annotators WHERE name = 'admin'"):
        return None
    password = secrets.token_urlsafe(9)
    add_annotator(store, "admin", "admin", password)
    return password


def print_stored(store: Store) -> None:
    """What the run left in the database: counts, and one sample per system prompt."""
    for name, n in store.counts().items():
        print(f"  {name:15} {n}")
    rows = store.query(
        """SELECT sp.name AS system_prompt, p.text AS prompt, s.text AS response, s.completion_tokens
           FROM samples s JOIN prompts p ON p.id = s.prompt_id JOIN system_prompts sp ON sp.id = s.system_prompt_id
           QUALIFY row_number() OVER (PARTITION BY sp.name ORDER BY s.id) = 1 ORDER BY sp.name"""
    )
    print()
    for r in rows:
        print(f"[{r['system_prompt']}] {r['prompt']}\n  -> {r['response']!r} ({r['completion_tokens']} tokens)")
