"""`rankloop demo`: the whole loop on a machine with nothing on it.

pretrain the built-in tiny chat model (cached) -> SFT on generated instructions -> one round of
the loop (service/cli/round_steps.py: sample under three system prompts, four simulated
annotators with overlap of whom one ranks at random and is left out, listwise reward model,
DPO or online RL, evaluation against the SFT model through the gate, deploy) -> `rankloop serve`
with the deployed policy behind the OpenAI-compatible gateway, one chat completion through it
with the `openai` client -> the report. It leaves work for a person: blind policy-vs-SFT tasks
in the queue, the annotator app with a login, the API with a client key, and keeps serving until
Ctrl-C (`--no-serve` stops after the report). Running it again reuses what is done.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from reward.checkpoint import is_model_dir, require_model_dir
from service.cli.client import Client, LocalClient, connect, follow
from service.cli.demo_real import real_round
from service.cli.demo_world import DEFAULT_HH, require_hh_file
from service.cli.round_steps import PolicyMethod, RoundPlan, run_round
from service.core.discovery import admin_key
from service.core.enums import JobStatus, ModelKind, ModelStatus, Role
from service.core.errors import CommandFailed, UserError
from service.core.paths import private_dir
from service.core.procs import log_tail, start_group, stop_group
from service.core.registry import find_or_register
from service.core.settings import Settings

T = TypeVar("T")


class DemoRun(BaseModel):
    """`rankloop demo`: what it starts from and how far it goes."""

    model: Path | None = Field(
        None, description="start from this Hugging Face model directory instead of the tiny one"
    )
    method: PolicyMethod = Field("dpo", description="how the policy is trained")
    small: bool = Field(False, description="a smaller, faster run (the test suite's)")
    serve: bool = Field(True, description="keep the annotator app and the API running until Ctrl-C")
    port: int | None = Field(None, description="the service's port (default 8000; 0 = any free port)")
    real: bool = Field(
        False,
        description="SmolLM2-135M-Instruct toward Anthropic HH preferences, judged by a gold reward model "
        "trained on HH pairs the loop never sees, instead of the tiny world",
    )
    hh: Path | None = Field(
        None, description="--real: the HH-RLHF pairs (default: ../shared/data's harmless-base)"
    )


SYSTEM_PROMPTS = ("brief", "detailed", "friendly")
# The tiny world has 72 prompts and holds out 21 for evaluation (RoundPlan.eval_fraction); the gate's
# default needs 50, so the demo's gate decides on 20 and says so (`rankloop loop` keeps the default).
TINY_WORLD_GATE_PROMPTS = 20
SIZES: dict[bool, dict[str, Any]] = {  # --small: the size the test suite runs
    False: {
        "pretrain_steps": 200,
        "sft_steps": 30,
        "plan": RoundPlan(gate_min_prompts=TINY_WORLD_GATE_PROMPTS),
    },
    # Smaller models, the same evaluation: with 6 samples the DPO policy's 95% interval once reached 0.5.
    True: {
        "pretrain_steps": 120,
        "sft_steps": 20,
        "plan": RoundPlan(
            policy={"max_steps": 80, "batch_size": 8, "max_length": 256},
            gate_min_prompts=TINY_WORLD_GATE_PROMPTS,
        ),
    },
}


class Stages:
    """Prints each stage as it starts and keeps its wall time (bench/demo.py reads them)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        print(f"\n== {name}", flush=True)
        t0 = time.monotonic()
        out = fn(*args, **kw)
        self.add({name: round(time.monotonic() - t0, 1)})
        return out

    def add(self, seconds: dict[str, float]) -> None:
        self.seconds.update(seconds)
        self.path.write_text(json.dumps(self.seconds, indent=2))


def build_tiny_model(out: Path, steps: int) -> Path:
    """The built-in chat model, pretrained once and reused (its directory is the cache)."""
    if is_model_dir(out):
        print(f"using the tiny model already built in {out}")
        return out
    from policy.config import PretrainConfig
    from policy.pretrain import main as pretrain

    print(f"pretraining the tiny model into {out} ({steps} steps on the generated corpus)")
    return pretrain(PretrainConfig(output_dir=out, size="tiny", steps=steps, n_transcripts=600))


def seed_data(c: Client, data: Path) -> None:
    """Prompts and system prompts from the built-in corpus (the tiny model was trained on its topics)."""
    from policy.corpus import QUESTION_FORMS, SYSTEM_STYLES, TOPICS

    prompts = data / "demo-prompts.txt"
    prompts.write_text("".join(q.format(t=t) + "\n" for t in TOPICS for q in QUESTION_FORMS))
    added = c.call("prompts.add", file=prompts)["added"]
    styles = data / "demo-system-prompts.yaml"
    styles.write_text("".join(f"{n}: {json.dumps(SYSTEM_STYLES[n])}\n" for n in SYSTEM_PROMPTS))
    c.call("system_prompts.add", file=styles)
    print(f"{added} new prompts; system prompts {', '.join(SYSTEM_PROMPTS)}")


def sft(c: Client, data: Path, base: Path, steps: int, eval_fraction: float) -> int:
    """The SFT model of `base` (reused when one was trained before), on instructions whose questions the
    round's snapshot will not hold out: the evaluation's prompts stay unseen."""
    for m in c.call("models.list", kind=ModelKind.SFT):
        if m["status"] != ModelStatus.FAILED:
            print(f"using SFT model #{m['id']} trained before")
            return m["id"]
    from policy.corpus import training_transcripts

    chats = data / "demo-instructions.jsonl"
    chats.write_text(
        "".join(
            json.dumps({"messages": t}) + "\n"
            for t in training_transcripts(400, seed=7, eval_fraction=eval_fraction)
        )
    )
    job = follow(
        c,
        c.call(
            "jobs.start",
            kind="sft",
            config={
                "base_model": str(base),
                "data": str(chats),
                "max_steps": steps,
                "batch_size": 8,
                "max_length": 256,
            },
        )["job_id"],
        "supervised fine-tuning",
    )
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(f"SFT job {job['id']} {job['status']}: {job['error']}", 1)
    return job["result_model_id"]


def ensure_admin(c: Client) -> str | None:
    """An `admin` account for the person trying the demo; its password is shown once."""
    if any(a["name"] == "admin" for a in c.call("annotators.list")):
        return None
    password = secrets.token_urlsafe(9)
    c.call("annotators.add", name="admin", role=Role.ADMIN, password=password)
    return password


def start_service(settings: Settings, port: int, config: str | None) -> tuple[subprocess.Popen, str]:
    """`rankloop serve` in a child process group with the demo's settings (stopped if this process dies);
    its URL once healthy."""
    env = {
        **os.environ,
        **({"RANKLOOP_CONFIG": config} if config else {}),
        **{
            f"RANKLOOP_VLLM__{k.upper()}": v if isinstance(v, str) else json.dumps(v)
            for k, v in settings.vllm.model_dump(exclude_none=True).items()
        },
    }
    log = settings.data_dir / "demo-serve.log"
    proc = start_group(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--data",
            str(settings.data_dir),
            "serve",
            "--host",
            settings.host,
            "--port",
            str(port),
        ],
        log,
        env,
    )
    info = settings.paths.service_file
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandFailed(f"rankloop serve exited ({proc.returncode}):\n{log_tail(log)}", 1)
        if info.exists():
            url = json.loads(info.read_text())["url"]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    stop_group(proc)
    raise CommandFailed(f"rankloop serve did not become healthy in 120 s; see {log}", 1)


def first_completion(settings: Settings, url: str, question: str, system_prompt: str) -> str:
    """Wait for the deployed model to serve, then one chat completion through the gateway with `openai`."""
    import openai

    with connect(settings) as c:
        key = c.call("keys.create", name=f"demo-{secrets.token_hex(3)}", log_traffic=True)["key"]
    deadline = time.monotonic() + 300
    while True:
        with connect(settings) as c:
            routes = c.call("routes")["routes"] or {}
        if any(r["healthy"] for r in (routes.get("current") or {}).get("replicas", [])):
            break
        if routes.get("error") or time.monotonic() > deadline:
            raise CommandFailed(f"the deployed model did not start: {routes.get('error') or 'timed out'}", 1)
        time.sleep(1)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    answer = client.chat.completions.create(
        model="current",
        messages=[{"role": "user", "content": question}],
        max_tokens=48,
        extra_body={"system_prompt": system_prompt},
    )
    usage = answer.usage
    print(
        f"POST {url}/v1/chat/completions (model 'current' = {answer.model}, system prompt {system_prompt!r})\n"
        f"  user: {question}\n  assistant: {answer.choices[0].message.content!r}\n"
        + (
            f"  usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
            if usage
            else "  usage: not reported"
        )
    )
    return key


def run_demo(settings: Settings, run: DemoRun, config: str | None = None) -> None:
    model, method, small = run.model, run.method, run.small
    if model is not None:
        require_model_dir(
            model,
            "--model",
            "give the directory `save_pretrained` wrote, or leave --model out for the built-in tiny model",
            UserError,
        )
    if run.real and (model is not None or method != "dpo"):
        raise UserError("--real runs DPO from SmolLM2-135M-Instruct; leave out --model and --method")
    if run.hh is not None and not run.real:
        raise UserError("--hh is for --real (the gold-judge world); the tiny world has its own prompts")
    if run.real:
        require_hh_file(run.hh or DEFAULT_HH)  # before anything is stored
    data = settings.data_dir
    wanted = {"model": str(model.resolve()) if model else None, "method": method, "small": small}
    if run.real:
        wanted["real"] = True
    chosen = data / "demo-args.json"  # what an earlier run here was asked for: reuse only the same
    if chosen.exists() and (earlier := json.loads(chosen.read_text())) != wanted:
        raise UserError(
            f"the demo ran in {data} with {earlier}, not {wanted}: what it made is reused only for the "
            "same flags; give another --data, or `rankloop loop --method ...` for a further round"
        )
    private_dir(data)
    with connect(settings) as c:  # before any work: the demo owns its data directory
        if c.remote:
            raise UserError(
                f"a rankloop serve runs on {data}: the demo starts its own; stop it or pass another --data"
            )
    chosen.write_text(json.dumps(wanted))
    stages = Stages(data / "demo-stages.json")
    with connect(settings) as c:
        if run.real:
            row = real_round(c, settings, data, run.hh, small, stages)
        else:
            row = tiny_round(c, settings, run, stages)
        password = ensure_admin(c)
    proc, url = stages.run(
        "starting the service (annotator app, admin API, OpenAI-compatible gateway)",
        start_service,
        settings,
        settings.port if run.port is None else run.port,
        config,
    )
    try:
        question, system_prompt = (
            ("How do I tell a friend that I am upset with them?", "assistant")
            if run.real
            else ("Tell me about the weather in the mountains.", "friendly")
        )
        key = stages.run(
            "a chat completion through the gateway", first_completion, settings, url, question, system_prompt
        )
        with connect(settings) as c:
            report = stages.run("the report", c.call, "report")["path"]
        print(
            f"\nround {row['id']}: {row['note']}\n"
            f"report:          {report}\n"
            f"annotator app:   {url}/annotate  (log in as 'admin'"
            + (f", password {password!r})" if password else "; its password was shown on the first run)")
            + f"\n                 blind tasks (the deployed policy vs its parent) wait in the queue\n"
            f"OpenAI API:      {url}/v1  (client key {key}; model 'current')\n"
            f"admin API key:   {admin_key(settings)[:6]}... in {settings.paths.admin_key}"
        )
        if not run.serve:
            return
        print("\nserving until Ctrl-C", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        print("\nstopping the service")
    finally:
        stop_group(proc, grace_s=60)


def tiny_round(c: Client, settings: Settings, run: DemoRun, stages: Stages) -> dict[str, Any]:
    """The tiny world up to the service: pretrain (cached), SFT, one round. The round's row."""
    model, small, data = run.model, run.small, settings.data_dir
    size = SIZES[small]
    plan: RoundPlan = size["plan"].model_copy(update={"method": run.method})
    base = model or stages.run(
        "pretraining the tiny chat model",
        build_tiny_model,
        settings.paths.model_dir("tiny"),
        size["pretrain_steps"],
    )
    stages.run("prompts and system prompts", seed_data, c, data)
    if model is not None:  # a checkpoint of yours: registered, so jobs may read it from where it is
        assert isinstance(c, LocalClient)  # checked above: no service runs on this data directory
        find_or_register(c.ctx.store, model.resolve())
    sft_id = stages.run(
        "supervised fine-tuning on generated instructions",
        sft,
        c,
        data,
        base,
        size["sft_steps"],
        plan.eval_fraction,
    )
    done = [r for r in c.call("rounds.list") if r["kind"] == "demo" and r["status"] == "done"]
    if done:  # the loop ran before: serve its result (`rankloop loop` runs further rounds)
        row = done[-1]
        print(f"\nusing round {row['id']} of an earlier run ({row['note']}); `rankloop loop` runs another")
    else:
        print(
            f"\nthe tiny world holds out {plan.eval_fraction:.0%} of its prompts for evaluation; its gate "
            f"decides on at least {plan.gate_min_prompts} of them (the default, for real prompt sets, is "
            f"{RoundPlan.model_fields['gate_min_prompts'].default})"
        )
        row = stages.run("one round of the loop", run_round, c, settings, plan, "demo", sft_id)
        stages.add({f"  round step: {k}": v for k, v in row["stages"].items()})
    return row
