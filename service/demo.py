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

from pathlib import Path

from service.config import Settings
from service.prompts import add_prompts, add_system_prompts, read_prompt_file, read_system_prompt_file
from service.sample_run import run_sampling
from service.sampler import SamplingParams
from service.store import Store

# service/examples links to the repository's examples/, so the files ship in the package too.
EXAMPLES = Path(__file__).resolve().parent / "examples"


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
    prompts = read_prompt_file(EXAMPLES / "prompts.jsonl")
    system_prompts = read_system_prompt_file(EXAMPLES / "system_prompts.yaml")
    model_dir = model or build_tiny_model(settings.data_dir / "models" / "tiny", steps)
    with Store.open(settings.db_path) as store:
        added, _ = add_prompts(store, prompts, source="seed", source_ref="examples/prompts.jsonl")
        add_system_prompts(store, system_prompts)
        print(f"data directory {settings.data_dir}: {added} new example prompts, "
              f"system prompts {', '.join(system_prompts)}")
        report = run_sampling(store, settings, [model_dir], k, SamplingParams(max_tokens=64, temperature=1.0),
                              required_rankings=2)
        for name, r in report.per_model.items():
            print(f"{name}: {r.generated} new samples, {r.tokens_per_s:.0f} tok/s")
        print(f"built {len(report.task_ids)} ranking tasks (2 rankings each)\n")
        print_stored(store)
        simulate_annotators(store, settings)
        train_reward(store, settings)
        password = ensure_demo_admin(store)
    if serve:
        from service.serve import serve as run_service

        if password:
            print(f"\nlog in to the annotator app as 'admin' with password {password!r}")
        run_service(settings)


def simulate_annotators(store: Store, settings: Settings) -> None:
    from annotator import quality, simulate_run
    from annotator.queue import QueueSettings
    from service.cli import print_table

    profiles = simulate_run.ensure_accounts(store, simulate_run.default_profiles(3, noise=0.3, unreliable=1))
    ann = settings.annotation
    sim = simulate_run.run(simulate_run.LocalQueue(store, QueueSettings(ann.lease_s, ann.gold_rate)), profiles)
    print(f"\nsimulated annotators ranked {sim.total} tasks")
    print("\nsystem prompt leaderboard (Bradley-Terry, 95% CI):")
    print_table(quality.leaderboard_rows(store, "system_prompt"), ["arm", "score", "ci_low", "ci_high", "win_rate"])
    print("\nannotator agreement (sim-u1 ranks at random):")
    print_table(quality.annotator_report(store), ["annotator", "rankings", "agreement_with_consensus", "kendall_tau"])


def train_reward(store: Store, settings: Settings) -> None:
    """Snapshot the rankings and train a listwise reward model on them, as a job."""
    from service import jobs
    from service.registry import get_model
    from service.snapshots import SnapshotFilters, create_snapshot

    snap = create_snapshot(store, settings.data_dir, SnapshotFilters())
    print(f"\nsnapshot {snap.id}: {snap.manifest['counts']['train_rankings']} train / "
          f"{snap.manifest['counts']['eval_rankings']} held-out rankings")
    cfg = jobs.reward_config(store, settings, None, {"snapshot": str(snap.path.parent), "epochs": 4})
    job = jobs.run_job(store, settings, jobs.create_job(store, settings, "reward", cfg))
    if job["status"] != "succeeded":
        raise RuntimeError(f"reward training failed: {job['error']}")
    model = get_model(store, job["result_model_id"])
    ev = model["metrics"]["eval"]
    print(f"reward model #{model['id']} ({model['status']}): held-out pairwise accuracy {ev['pairwise_accuracy']}, "
          f"agreement with the simulated annotators' hidden preference {ev.get('hidden', {}).get('model_vs_hidden')} "
          f"(their own labels: {ev.get('hidden', {}).get('labels_vs_hidden')})")


def ensure_demo_admin(store: Store) -> str | None:
    """An `admin` account for the person trying the demo; its password is shown once."""
    import secrets

    from annotator.accounts import add_annotator

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
