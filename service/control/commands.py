"""Every operation an admin or an ML engineer runs, as one table: name -> HTTP route, parameters,
and the one domain function that does it.

The `rankloop` command calls an operation in its own process when no service runs, and
through the running service's admin API when one does (`service.cli.client`); the service
exposes each row as a route (`service.web.admin`). Both ends read this table, so there is
no hand-written remote/local pair per command. A row may read a file (`upload`: the
parameter names a file that travels as the request body) or write one (`download`: the
parameter names where the caller wants it; the service streams it back).
Long work is a job (`sample`, `jobs.start`): the call returns its id and the caller follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from annotator import accounts, quality
from annotator.dashboard import dashboard
from annotator.queue import mark_gold
from annotator.simulate_run import ensure_accounts
from reward.conversation import check_messages
from service.control import annotation_ops, judges, serving_ops, webhooks
from service.control.annotation_ops import (
    AnnotatorName,
    Board,
    Gold,
    JudgeAccount,
    NewAnnotator,
    Simulated,
    TemplateName,
)
from service.control.context import Context
from service.control.jobs_ops import JobId, JobLog, StartJob, job_log, start_job
from service.control.packaged_models import MODEL_FIELD, add_packaged
from service.control.paging import paged
from service.control.params import Params
from service.control.scoring import prioritize
from service.core import registry
from service.core.enums import JobStatus, ModelKind
from service.core.errors import UserError
from service.core.store import Store
from service.data import exchange, lineage, prompts, rounds
from service.data.backup import backup_name, make_backup
from service.data.snapshots import SnapshotFilters, create_snapshot
from service.jobs import runner
from service.jobs.sample_job import SampleJobConfig


@dataclass(frozen=True)
class Command:
    method: Literal["GET", "POST"]
    path: str  # under /admin; {field} segments are parameters
    params: type[BaseModel]
    run: Callable[[Context, Any], Any]
    upload: str | None = None
    download: str | None = None


# -- parameters -------------------------------------------------------------


class BackupParams(Params):
    to: Path | None = Field(
        None, description="a new directory for the backup (default <data>/backups/<UTC time>)"
    )
    models: bool = Field(False, description="also copy the model checkpoints kept in the data directory")


def _backup(ctx: Context, p: BackupParams) -> dict:
    paths = ctx.settings.paths
    return make_backup(ctx.store, paths, p.to or paths.root / "backups" / backup_name(), p.models)


class NoParams(Params):
    pass


class FileParams(Params):
    file: Path = Field(description="the file to read")
    source_ref: str | None = Field(
        None, description="recorded as where the data came from (default the file name)"
    )


class HHFileParams(FileParams):
    file: Path = Field(description="HH-RLHF JSONL: chosen/rejected transcripts, plain or gzip-compressed")
    strict: bool = Field(
        False, description="reject the whole file if any line is unreadable (default: skip it, say why)"
    )
    batch: str = Field(
        "import",
        min_length=1,
        description="the tasks' batch; HH's harmless pairs go to hh-harmless, where a harmlessness "
        "reward model reads them (reward config objective)",
    )


class PromptFile(FileParams):
    file: Path = Field(description="the prompt file")
    source: Literal["seed", "import"] = Field("seed", description="recorded origin")


class KindFilter(Params):
    kind: ModelKind | None = Field(None, description="only this kind")


class ModelId(Params):
    model_id: int = Field(description="model id")


class PackagedModel(Params):
    model: Literal["smollm2"] = MODEL_FIELD


class Promote(ModelId):
    reason: str = Field(min_length=1, description="why (recorded in the registry)")


class Export(Params):
    format: Literal["trl", "hh", "jsonl"] = Field(
        description="trl (prompt/chosen/rejected pairs), hh (chosen/rejected transcripts) or jsonl rankings"
    )
    out: Path = Field(description="the file to write")


class Rewards(Params):
    prompt: str = Field(description="the user prompt (a one-message conversation), unless messages is given")
    messages: list[dict[str, str]] | None = Field(
        None, description="the whole conversation the responses answer"
    )
    responses: list[str] = Field(min_length=1, max_length=64, description="the responses to score")


# -- operations that are more than one call ----------------------------------


def _status(ctx: Context, _: NoParams) -> dict:
    return {
        "data_dir": str(ctx.settings.data_dir),
        "schema_version": ctx.store.schema_version(),
        **ctx.store.counts(),
        "jobs_running": len(
            ctx.store.query(
                "SELECT id FROM jobs WHERE status IN (?, ?)", [JobStatus.QUEUED, JobStatus.RUNNING]
            )
        ),
        **serving_ops.routes(ctx, None),
    }


def _logout(ctx: Context, p: AnnotatorName) -> dict:
    accounts.revoke_sessions(ctx.store, p.name)
    return {"name": p.name, "logged_out": True}


def _prompts_add(ctx: Context, p: PromptFile) -> dict:
    texts = prompts.read_prompt_file(p.file)  # validated whole before the database is touched
    added, skipped = prompts.add_prompts(
        ctx.store, texts, source=p.source, source_ref=p.source_ref or p.file.name
    )
    return {"added": added, "skipped": skipped}


def _promote(ctx: Context, p: Promote) -> dict:
    registry.promote(ctx.store, p.model_id, f"promoted by hand: {p.reason}")
    return registry.get_model(ctx.store, p.model_id)


def _snapshot(ctx: Context, p: SnapshotFilters) -> dict:
    s = create_snapshot(ctx.store, ctx.settings.data_dir, p)
    return {"id": s.id, "created": s.created, "path": str(s.path), **s.manifest}


def _import_hh(ctx: Context, p: HHFileParams) -> dict:
    return exchange.import_hh(
        ctx.store, p.file, source_ref=p.source_ref or p.file.name, strict=p.strict, batch=p.batch
    )


def _prioritize(ctx: Context, _: NoParams) -> dict:
    model_id, scorer = ctx.scorers.get(ctx.store)
    return {"model_id": model_id, "tasks": prioritize(ctx.store, scorer)}


def _rewards(ctx: Context, p: Rewards) -> dict:
    model_id, scorer = ctx.scorers.get(ctx.store)
    problems = check_messages(p.messages) if p.messages is not None else []
    if problems:
        raise UserError("; ".join(problems))
    return {"model_id": model_id, "scores": scorer.score(p.messages or p.prompt, p.responses)}


def _annotator_add(ctx: Context, p: NewAnnotator) -> dict:
    new_id = accounts.add_annotator(ctx.store, p.name, p.role, p.password, p.profile)
    return {"id": new_id, "name": p.name, "role": p.role}


def _disable(ctx: Context, p: AnnotatorName) -> dict:
    accounts.set_disabled(ctx.store, p.name, True)
    return {"name": p.name, "disabled": True}


def _gold(ctx: Context, p: Gold) -> dict:
    mark_gold(ctx.store, p.task_id, p.ranks)
    return {"task_id": p.task_id, "ranks": p.ranks}


def _templates_add(ctx: Context, p: FileParams) -> list[dict]:
    return judges.add_templates(ctx.store, prompts.read_system_prompt_file(p.file))


class QualityFilter(Params):
    batch: str | None = Field(
        None, max_length=200, description="annotators' figures over this batch of tasks only"
    )


def _quality(store: Store, batch: str | None) -> dict:
    rows = quality.annotator_report(store, batch)
    return {
        "annotators": rows,
        "unreliable": quality.unreliable(rows),
        "batches": quality.batch_alpha(store),
        "judges": quality.judge_report(store),
        "flagged": quality.flagged(store),
        "skipped": quality.skipped(store),
    }


def _report(ctx: Context) -> dict:
    from service.report.report import write_report  # its charts load only when a report is made

    return {"path": str(write_report(ctx.store, ctx.settings.paths.report))}


COMMANDS: dict[str, Command] = {
    "status": Command("GET", "/status", NoParams, _status),
    "prompts.add": Command("POST", "/prompts", PromptFile, _prompts_add, upload="file"),
    "system_prompts.add": Command(
        "POST",
        "/system-prompts",
        FileParams,
        lambda ctx, p: prompts.add_system_prompts(ctx.store, prompts.read_system_prompt_file(p.file)),
        upload="file",
    ),
    "system_prompts.list": paged(
        Command(
            "GET",
            "/system-prompts",
            NoParams,
            lambda ctx, p: ctx.store.query(
                "SELECT name, version, text, created_at FROM system_prompts ORDER BY name, version"
            ),
        )
    ),
    "sample": Command(
        "POST",
        "/jobs/sample",
        SampleJobConfig,
        lambda ctx, p: {"job_id": ctx.jobs.submit("sample", p.model_dump(mode="json"))},
    ),
    "jobs.start": Command("POST", "/jobs", StartJob, start_job),
    "jobs.list": paged(Command("GET", "/jobs", NoParams, lambda ctx, p: runner.list_jobs(ctx.store))),
    "jobs.show": Command("GET", "/jobs/{job_id}", JobId, lambda ctx, p: runner.get_job(ctx.store, p.job_id)),
    "jobs.log": Command("GET", "/jobs/{job_id}/log", JobLog, job_log),
    "jobs.cancel": Command("POST", "/jobs/{job_id}/cancel", JobId, lambda ctx, p: ctx.jobs.cancel(p.job_id)),
    "models.list": paged(
        Command("GET", "/models", KindFilter, lambda ctx, p: registry.list_models(ctx.store, p.kind))
    ),
    "models.show": Command(
        "GET", "/models/{model_id}", ModelId, lambda ctx, p: lineage.describe(ctx.store, p.model_id)
    ),
    "models.promote": Command("POST", "/models/{model_id}/promote", Promote, _promote),
    "models.add": Command(
        "POST", "/models/packaged", PackagedModel, lambda ctx, p: add_packaged(ctx, p.model)
    ),
    "snapshot": Command("POST", "/snapshots", SnapshotFilters, _snapshot),
    "export": Command(
        "POST",
        "/export",
        Export,
        lambda ctx, p: {"rows": exchange.export(ctx.store, p.format, p.out)},
        download="out",
    ),
    "import.hh": Command("POST", "/import/hh", HHFileParams, _import_hh, upload="file"),
    "prioritize": Command("POST", "/prioritize", NoParams, _prioritize),
    "rewards": Command("POST", "/rewards", Rewards, _rewards),
    "annotators.add": Command("POST", "/annotators", NewAnnotator, _annotator_add),
    "annotators.list": paged(
        Command("GET", "/annotators", NoParams, lambda ctx, p: accounts.list_annotators(ctx.store))
    ),
    "annotators.disable": Command("POST", "/annotators/{name}/disable", AnnotatorName, _disable),
    "annotators.logout": Command(
        "POST",
        "/annotators/{name}/logout",
        AnnotatorName,
        _logout,
    ),
    "simulated.ensure": Command(
        "POST", "/simulated", Simulated, lambda ctx, p: ensure_accounts(ctx.store, p.profiles)
    ),
    "judges.ensure": Command(
        "POST", "/judges", JudgeAccount, lambda ctx, p: judges.ensure_judge(ctx.store, p.name, p.profile)
    ),
    "judge_templates.add": Command("POST", "/judge-templates", FileParams, _templates_add, upload="file"),
    "judge_templates.get": Command(
        "GET", "/judge-templates/{name}", TemplateName, lambda ctx, p: judges.template(ctx.store, p.name)
    ),
    "judge_templates.list": paged(
        Command(
            "GET",
            "/judge-templates",
            NoParams,
            lambda ctx, p: ctx.store.query(
                "SELECT name, version, text, created_at FROM judge_templates ORDER BY name, version"
            ),
        )
    ),
    "tasks.gold": Command("POST", "/tasks/{task_id}/gold", Gold, _gold),
    "leaderboard": Command(
        "GET",
        "/leaderboard",
        Board,
        lambda ctx, p: quality.leaderboard_rows(ctx.store, p.by, style_control=p.style_control),
    ),
    "keys.create": Command("POST", "/keys", serving_ops.NewKey, serving_ops.create_key),
    "keys.list": paged(Command("GET", "/keys", NoParams, serving_ops.list_keys)),
    "keys.revoke": Command("POST", "/keys/{name}/revoke", serving_ops.KeyName, serving_ops.revoke_key),
    "deploy": Command("POST", "/deploy", serving_ops.Deploy, serving_ops.deploy),
    "deploy.promote": Command("POST", "/deploy/promote", NoParams, serving_ops.promote),
    "rollback": Command("POST", "/rollback", NoParams, serving_ops.rollback),
    "routes": Command("GET", "/routes", NoParams, serving_ops.routes),
    "webhooks.add": Command("POST", "/webhooks", webhooks.NewWebhook, webhooks.add_webhook),
    "webhooks.list": paged(Command("GET", "/webhooks", NoParams, webhooks.list_webhooks)),
    "webhooks.remove": Command(
        "POST", "/webhooks/{webhook_id}/remove", webhooks.WebhookId, webhooks.remove_webhook
    ),
    "webhooks.deliveries": Command(
        "GET", "/webhook-deliveries", webhooks.DeliveryFilter, webhooks.list_deliveries
    ),
    "prompts.from_traffic": Command(
        "POST", "/prompts/from-traffic", serving_ops.FromTraffic, serving_ops.from_traffic
    ),
    "rounds.open": Command(
        "POST", "/rounds", rounds.RoundStart, lambda ctx, p: rounds.open_round(ctx.store, p)
    ),
    "rounds.step": Command(
        "POST", "/rounds/{round_id}/step", rounds.RoundStep, lambda ctx, p: rounds.finish_step(ctx.store, p)
    ),
    "rounds.job": Command(
        "POST", "/rounds/{round_id}/job", rounds.RoundJob, lambda ctx, p: rounds.set_job(ctx.store, p)
    ),
    "rounds.batch": Command(
        "GET", "/rounds/batch", rounds.BatchName, lambda ctx, p: rounds.batch_progress(ctx.store, p)
    ),
    "rounds.list": paged(Command("GET", "/rounds", NoParams, lambda ctx, p: rounds.list_rounds(ctx.store))),
    "report": Command("POST", "/report", NoParams, lambda ctx, p: _report(ctx)),
    "quality": Command("GET", "/quality", QualityFilter, lambda ctx, p: _quality(ctx.store, p.batch)),
    "quality.dashboard": Command("GET", "/quality/dashboard", NoParams, lambda ctx, p: dashboard(ctx.store)),
    "backup": Command("POST", "/backup", BackupParams, _backup),
    **annotation_ops.commands(Command),
}
