"""The command table's rows for annotation as labelling teams run it: guidelines, the qualification
quiz's results, and contested tasks with their adjudication (merged into service/control/commands.py);
and the parameters of the table's account, gold and leaderboard rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from annotator import guidelines, quiz, review
from annotator.accounts import get_annotator
from annotator.simulated import Profile
from service.control.context import Context
from service.control.paging import paged
from service.control.params import Params
from service.core.enums import Role
from service.core.errors import UserError


class NewAnnotator(Params):
    name: str = Field(description="login name")
    role: Role = Field(
        Role.ANNOTATOR,
        description="annotator (ranks) or admin (also manages); simulated, import and judge accounts "
        "are made by rankloop",
    )
    password: str | None = Field(None, description="a person's password (annotator and admin accounts)")
    profile: str | None = Field(None, description="simulated annotators: their profile as JSON")


class AnnotatorName(Params):
    name: str = Field(description="the account's login name")


class Simulated(Params):
    profiles: dict[str, Profile] = Field(description="simulated annotators by name, with their profiles")


class Gold(Params):
    task_id: int = Field(description="the task's id")
    ranks: list[int] = Field(description="ranks in display order, e.g. 1,2,2,3")


class JudgeAccount(Params):
    name: str = Field(description="the judge's account name")
    profile: dict[str, Any] = Field(description="what judges: its kind, model and template")


class TemplateName(Params):
    name: str = Field(description="the judge template's name")


class Board(Params):
    by: Literal["system_prompt", "model"] = Field(
        "system_prompt", description="rank system prompts, or model versions"
    )
    style_control: bool = Field(
        False,
        description="also the style-controlled score beside each (length and markdown as covariates, "
        "as Chatbot Arena does)",
    )


class GuidelineFile(Params):
    file: Path = Field(description="the guideline as a Markdown file")
    batch: str | None = Field(None, description="a batch's own guideline (default: the whole project's)")


class BatchFilter(Params):
    batch: str | None = Field(None, description="only this batch's versions")


class QuizFilter(Params):
    name: str | None = Field(None, description="only this account's attempts")


class ContestedFilter(Params):
    resolved: bool = Field(False, description="also list contested tasks a reviewer resolved")


class Resolve(Params):
    task_id: int = Field(description="the contested task")
    reviewer: str = Field(description="the reviewer (or admin) account the final ranking is recorded for")
    ranks: list[int] = Field(description="the final ranks in display order, e.g. 1,3,2")
    rationale: str = Field(min_length=1, max_length=5000, description="why this ranking settles it")
    strengths: list[str] | None = Field(
        None,
        description="how much each rank level beats the next (significantly/clearly/slightly/negligibly)",
    )


def _set_guideline(ctx: Context, p: GuidelineFile) -> dict:
    try:
        text = p.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the guideline {p.file}: {e}") from None
    return guidelines.add_guideline(ctx.store, text, p.batch)


def _resolve(ctx: Context, p: Resolve) -> dict:
    acct = get_annotator(ctx.store, p.reviewer)
    if acct is None:
        raise UserError(f"there is no account {p.reviewer!r}; `rankloop annotators list` shows them")
    return review.adjudicate(ctx.store, acct["id"], p.task_id, p.ranks, p.rationale, p.strengths)


def commands(command: type) -> dict:
    """The rows, built with the table's own `Command` (passed in: the table imports this module)."""
    return {
        "guidelines.set": command("POST", "/guidelines", GuidelineFile, _set_guideline, upload="file"),
        "guidelines.list": paged(
            command(
                "GET",
                "/guidelines",
                BatchFilter,
                lambda ctx, p: guidelines.list_guidelines(ctx.store, p.batch),
            )
        ),
        "quiz.results": paged(
            command(
                "GET",
                "/quiz/results",
                QuizFilter,
                lambda ctx, p: quiz.results(ctx.store, ctx.settings.annotation, p.name),
            )
        ),
        "review.contested": paged(
            command(
                "GET",
                "/review/contested",
                ContestedFilter,
                lambda ctx, p: review.contested(ctx.store, p.resolved),
            )
        ),
        "review.resolve": command("POST", "/review/{task_id}", Resolve, _resolve),
    }
