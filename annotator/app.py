"""The Gradio annotator app, mounted at /annotate behind a login.

Rank tab: the conversation so far as chat turns, then its K (2..8) candidates in the
task's recorded display order, blind to their sources unless `annotation.show_sources`
is set, as Markdown with any HTML shown as text (`annotator.render`); a rank per
candidate (equal ranks tie; keyboard: click a candidate or press j/k, a digit sets its
rank, Enter submits), an optional flag per candidate, a rationale, skip with a reason; optionally
how much each rank level beats the next (strength) and ratings on the rubric's attributes. The
current guidelines are shown above the task; a new annotator first gets the qualification quiz.
Each shown task carries a submission id, so a double click or a retry stores
one ranking. Review tab (reviewers and admins): contested tasks (annotator/review_tab.py). Admin tab
(admins only): the quality tables, leaderboards, gold marking and serving buttons (annotator/admin_tab.py).

The service mounts it with what it needs, typed (`AnnotatorServices`):

    services = AnnotatorServices(store, login=auth.login, queue_settings=..., serving=run_serving)
    gr.mount_gradio_app(app, build_ui(services), path="/annotate", auth=gradio_auth(services))
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import gradio as gr
from pydantic import ValidationError

from annotator import queue
from annotator.accounts import get_annotator
from annotator.admin_tab import build_admin_tab
from annotator.rank_form import attributes_from, guidelines_md, quiz_header, quiz_result_md, strengths_from
from annotator.ranking import FLAG_REASONS, SKIP_REASONS, Flag, RankingError, Submission
from annotator.render import chat_turns, escape_html
from annotator.review_tab import build_review_tab
from annotator.services import AnnotatorServices
from reward.strength import RATING_MAX, STRENGTHS
from service.core.enums import REVIEW_ROLES, Role

MAX_K = 8
HIDDEN = "undocumented"  # callable by the page (every handler checks the account), listed nowhere
NO_FLAG = "(no flag)"


def gradio_auth(services: AnnotatorServices) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's login check: `services.login`, behind the failed-login throttle. A coroutine, so that
    Gradio awaits it and the scrypt check runs on a worker thread, not on the event loop."""
    from starlette.concurrency import run_in_threadpool

    async def check(username: str, password: str) -> bool:
        if len(username) > 64 or len(password) > 1024:
            return False
        return await run_in_threadpool(services.login, username, password) is not None

    return check


def _account(services: AnnotatorServices, request: gr.Request) -> dict:
    acct = get_annotator(services.store, request.username or "")
    if acct is None or acct["disabled"]:
        raise gr.Error("your account is unknown or disabled; log out and ask an admin")
    return acct


def _progress_md(p: dict) -> str:
    return f"**Done today:** {p['today']} · **done in total:** {p['total']} · **left in the queue:** {p['queue']}"


def _task_outputs(services: AnnotatorServices, acct: dict, status: str) -> list:
    """Everything the Rank tab shows for the annotator's next task (or an empty queue)."""
    task = queue.next_task(services.store, acct["id"], services.queue_settings)
    prog = _progress_md(queue.progress(services.store, acct["id"], services.queue_settings))
    # Each new task clears the strengths and ratings the last one was given.
    cleared = [gr.update(value=None)] * (MAX_K * (1 + len(services.queue_settings.rubric)))
    if task is None:
        slots: list[Any] = [gr.update(visible=False)] * MAX_K + [gr.update(value="")] * MAX_K
        slots += (
            [gr.update(choices=[], value=None)] * MAX_K + [gr.update(value=NO_FLAG)] * MAX_K + [""] * MAX_K
        )
        return [
            "### The queue is empty. Thank you!",
            gr.update(value=[], visible=False),
            *slots,
            None,
            "",
            prog,
            status,
            "",
            *cleared,
        ]
    k = len(task["candidates"])
    cands = task["candidates"]
    boxes = [gr.update(visible=i < k) for i in range(MAX_K)]
    texts = []
    for i in range(MAX_K):
        if i >= k:
            texts.append("")
            continue
        c = cands[i]
        source = f"\n\n*system prompt: {c['system_prompt']} · model: {c['model']}*" if "model" in c else ""
        texts.append(
            f"**Candidate {i + 1}**\n\n{escape_html(c['text']) if c['text'] else '*(empty response)*'}{source}"
        )
    ranks = [gr.update(choices=list(range(1, k + 1)), value=None) for _ in range(MAX_K)]
    flags = [gr.update(value=NO_FLAG)] * MAX_K
    state_value = {"task_id": task["task_id"], "k": k, "submission_id": uuid.uuid4().hex}
    turns = len(task["messages"])
    header = "### Prompt" if turns == 1 else f"### Conversation so far ({turns} turns)"
    if task.get("quiz"):
        header = f"{quiz_header(task['quiz'])}\n\n{header}"
    return [
        header,
        gr.update(value=chat_turns(task["messages"]), visible=True),
        *boxes,
        *texts,
        *ranks,
        *flags,
        *[""] * MAX_K,
        state_value,
        "",
        prog,
        status,
        guidelines_md(task.get("guidelines")),
        *cleared,
    ]


def _submit(services: AnnotatorServices, acct: dict, task: dict, **fields: Any) -> list:
    try:
        result = queue.submit(
            services.store,
            acct["id"],
            Submission(task_id=task["task_id"], submission_id=task["submission_id"], **fields),
            services.queue_settings,
        )
    except queue.NotLeased as e:
        return _task_outputs(services, acct, f"⚠️ {e}")
    except (RankingError, ValueError) as e:
        raise gr.Error(str(e)) from None
    if result.quiz is not None:
        return _task_outputs(services, acct, quiz_result_md(result.quiz))
    what = "skip" if fields.get("skip_reason") else "ranking"
    return _task_outputs(services, acct, f"✅ Stored your {what} of task {result.task_id}.")


def build_ui(services: AnnotatorServices) -> gr.Blocks:
    with gr.Blocks(title="rankloop annotator") as ui:
        task_state = gr.State(None)
        with gr.Row():
            progress_md = gr.Markdown(elem_id="progress")
            gr.Button("Log out", link="/annotate/logout", size="sm", scale=0)
        with gr.Tab("Rank", id="rank"):
            with gr.Accordion("Guidelines", open=True):
                guidelines_box = gr.Markdown(elem_id="guidelines")
            prompt_md = gr.Markdown(elem_id="prompt")
            chat = gr.Chatbot(
                elem_id="conversation",
                label="Conversation",
                sanitize_html=True,
                render_markdown=True,
                buttons=[],
                height=None,
                max_height=420,
            )
            boxes, texts, ranks, flags, flag_texts = [], [], [], [], []
            rubric = services.queue_settings.rubric
            strengths: list[gr.Dropdown] = []
            ratings: list[list[gr.Radio]] = []
            for i in range(MAX_K):
                with gr.Group(visible=False, elem_id=f"card-{i}", elem_classes="rl-card") as box:
                    texts.append(gr.Markdown(elem_id=f"cand-{i}"))
                    with gr.Row():
                        ranks.append(
                            gr.Radio(
                                choices=[],
                                label=f"Rank of candidate {i + 1} (1 = best)",
                                elem_id=f"rank-{i}",
                                elem_classes="rl-rank",
                                interactive=True,
                            )
                        )
                        flags.append(
                            gr.Dropdown(
                                [NO_FLAG, *FLAG_REASONS],
                                value=NO_FLAG,
                                label="Flag",
                                elem_id=f"flag-{i}",
                                interactive=True,
                            )
                        )
                        flag_texts.append(gr.Textbox(label="Flag details", elem_id=f"flagtext-{i}"))
                        strengths.append(
                            gr.Dropdown(
                                list(STRENGTHS),
                                value=None,
                                label="Better than the next rank by (optional)",
                                elem_id=f"strength-{i}",
                                interactive=True,
                            )
                        )
                    with gr.Accordion("Ratings (optional, 0-4)", open=False, elem_id=f"ratings-{i}"):
                        ratings.append(
                            [
                                gr.Radio(
                                    list(range(RATING_MAX + 1)),
                                    label=name,
                                    elem_id=f"rate-{i}-{name}",
                                    interactive=True,
                                )
                                for name in rubric
                            ]
                        )
                boxes.append(box)
            rationale = gr.Textbox(label="Rationale (optional)", elem_id="rationale", lines=2)
            submit_btn = gr.Button("Submit ranking", variant="primary", elem_id="submit")
            with gr.Row():
                skip_reason = gr.Dropdown(
                    list(SKIP_REASONS), value=None, label="Skip reason", elem_id="skip-reason"
                )
                skip_btn = gr.Button("Skip this task", elem_id="skip")
            status_md = gr.Markdown(elem_id="status")
        review_tab = build_review_tab(services, lambda request: _account(services, request))
        admin_tab = build_admin_tab(services, lambda request: _account(services, request))

        task_outputs = [
            prompt_md,
            chat,
            *boxes,
            *texts,
            *ranks,
            *flags,
            *flag_texts,
            task_state,
            rationale,
            progress_md,
            status_md,
            guidelines_box,
            *strengths,
            *[r for row in ratings for r in row],
        ]

        def on_load(request: gr.Request):
            acct = _account(services, request)
            return [
                gr.update(visible=acct["role"] == Role.ADMIN),
                gr.update(visible=acct["role"] in REVIEW_ROLES),
                *_task_outputs(services, acct, ""),
            ]

        def on_submit(values: dict, request: gr.Request):
            # `values` maps each input component to its value (Gradio's set-of-inputs form).
            acct = _account(services, request)
            task = values[task_state]
            if not task:
                raise gr.Error("there is no task on screen; reload the page")
            k = task["k"]
            given = [values[ranks[i]] for i in range(k)]
            missing = [str(i + 1) for i, v in enumerate(given) if v is None]
            if missing:
                raise gr.Error(f"give every candidate a rank; missing: candidate {', '.join(missing)}")
            flag_list = []
            for i in range(k):
                if values[flags[i]] != NO_FLAG:
                    try:
                        flag_list.append(
                            Flag(position=i, reason=values[flags[i]], text=values[flag_texts[i]] or None)
                        )
                    except ValidationError as e:
                        raise gr.Error(
                            f"candidate {i + 1}: {e.errors()[0]['msg'].removeprefix('Value error, ')}"
                        ) from None
            try:
                chosen = strengths_from([int(v) for v in given], [values[strengths[i]] for i in range(k)])
            except RankingError as e:
                raise gr.Error(str(e)) from None
            rated = attributes_from(rubric, [[values[r] for r in ratings[i]] for i in range(k)])
            return _submit(
                services,
                acct,
                task,
                ranks=[int(v) for v in given],
                flags=flag_list,
                rationale=values[rationale] or None,
                strengths=chosen,
                attributes=rated,
            )

        def on_skip(task, reason, request: gr.Request):
            acct = _account(services, request)
            if not task:
                raise gr.Error("there is no task on screen; reload the page")
            if not reason:
                raise gr.Error(f"choose a skip reason: {', '.join(SKIP_REASONS)}")
            return _submit(services, acct, task, skip_reason=reason)

        ui.load(
            on_load, outputs=[admin_tab, review_tab, *task_outputs], api_name="load", api_visibility=HIDDEN
        )
        submit_btn.click(
            on_submit,
            inputs={
                task_state,
                rationale,
                *ranks,
                *flags,
                *flag_texts,
                *strengths,
                *[r for row in ratings for r in row],
            },
            outputs=task_outputs,
            api_name="submit",
            api_visibility=HIDDEN,
            trigger_mode="once",
        )
        skip_btn.click(
            on_skip,
            inputs=[task_state, skip_reason],
            outputs=task_outputs,
            api_name="skip",
            api_visibility=HIDDEN,
            trigger_mode="once",
        )
    return ui
