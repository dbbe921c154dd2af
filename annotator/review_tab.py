"""The annotator app's Review tab (reviewers and admins): the oldest contested task, its candidates and
every raw ranking, and a form for the final ranking and its rationale (annotator/review.py)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
import pandas as pd

from annotator import review
from annotator.rank_form import guidelines_md
from annotator.render import escape_html
from annotator.services import AnnotatorServices
from service.core.enums import REVIEW_ROLES
from service.core.errors import UserError

HIDDEN = "undocumented"
RANKING_COLUMNS = ["annotator", "ranks", "strengths", "rationale"]


def _task_md(task: dict) -> str:
    cands = "\n\n".join(
        f"**Candidate {i + 1}**\n\n{escape_html(c['text']) or '*(empty response)*'}"
        for i, c in enumerate(task["candidates"])
    )
    return (
        f"### Contested task {task['task_id']} ({task['waiting']} waiting)\n\n"
        f"**Prompt:** {escape_html(task['prompt'])}\n\n{cands}\n\n{guidelines_md(task['guidelines'])}"
    )


def build_review_tab(services: AnnotatorServices, account: Callable[[gr.Request], dict]) -> gr.Tab:
    with gr.Tab("Review", id="review", visible=False) as tab:
        task_state = gr.State(None)
        next_btn = gr.Button("Next contested task", elem_id="review-next")
        task_md = gr.Markdown(elem_id="review-task")
        rankings_df = gr.Dataframe(elem_id="review-rankings", label="The annotators' rankings")
        ranks_box = gr.Textbox(label="Final ranks in display order (e.g. 2,1,3)", elem_id="review-ranks")
        why_box = gr.Textbox(label="Rationale (required)", elem_id="review-rationale", lines=2)
        resolve_btn = gr.Button("Resolve", variant="primary", elem_id="review-resolve")
        status_md = gr.Markdown(elem_id="review-status")

    def reviewer(request: gr.Request) -> dict:
        acct = account(request)
        if acct["role"] not in REVIEW_ROLES:
            raise gr.Error("reviewers and admins only")
        return acct

    def show(acct: dict, status: str) -> list:
        task = review.next_review(services.store, acct["id"], services.queue_settings)
        if task is None:
            return [None, "### No contested task is waiting.", pd.DataFrame(columns=RANKING_COLUMNS), status]
        rows = [{c: str(r[c]) if r[c] is not None else "" for c in RANKING_COLUMNS} for r in task["rankings"]]
        return [task["task_id"], _task_md(task), pd.DataFrame(rows, columns=RANKING_COLUMNS), status]

    def on_next(request: gr.Request) -> list:
        return show(reviewer(request), "")

    def on_resolve(task_id: int | None, ranks_text: str, why: str, request: gr.Request) -> list:
        acct = reviewer(request)
        if task_id is None:
            raise gr.Error("there is no contested task on screen; press Next contested task")
        try:
            ranks = [int(x) for x in str(ranks_text).replace(" ", "").split(",") if x]
            done = review.adjudicate(
                services.store, acct["id"], int(task_id), ranks, why, settings=services.queue_settings
            )
        except UserError as e:  # before ValueError: a RankingError is both
            raise gr.Error(str(e)) from None
        except ValueError:
            raise gr.Error(
                f"final ranks {ranks_text!r}: give comma-separated integers such as 2,1,3"
            ) from None
        return show(acct, f"✅ Task {done['task_id']} resolved with final ranks {done['ranks']}.")

    outputs = [task_state, task_md, rankings_df, status_md]
    next_btn.click(on_next, outputs=outputs, api_name="review_next", api_visibility=HIDDEN)
    tab.select(on_next, outputs=outputs, api_name="review_open", api_visibility=HIDDEN)
    resolve_btn.click(
        on_resolve,
        inputs=[task_state, ranks_box, why_box],
        outputs=outputs,
        api_name="review_resolve",
        api_visibility=HIDDEN,
        trigger_mode="once",
    )
    return tab
