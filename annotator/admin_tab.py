"""The annotator app's Admin tab (admins only, checked in every handler): agreement, throughput, the
weekly dashboard, the raw and style-controlled leaderboards, judges, flags, skips, gold marking, and the
serving buttons (deploy, promote a canary, roll back: the operations `rankloop deploy` runs). What it
shows is read by annotator/admin_tables.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import gradio as gr

from annotator import queue
from annotator.admin_tables import admin_tables
from annotator.services import AnnotatorServices
from service.core.enums import Role
from service.core.errors import UserError, describe

HIDDEN = "undocumented"  # callable by the page (every handler checks the account), listed nowhere


def build_admin_tab(services: AnnotatorServices, account: Callable[[gr.Request], dict]) -> gr.Tab:
    with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
        refresh = gr.Button("Refresh", elem_id="admin-refresh")
        gr.Markdown("### Annotators: agreement, gold, throughput")
        report_df = gr.Dataframe(elem_id="annotator-report")
        alpha_df = gr.Dataframe(label="Krippendorff's alpha (ordinal) per batch")
        gr.Markdown("### Annotators by week: pace, time on task, ties, position bias (rankloop dashboard)")
        attention_md = gr.Markdown(elem_id="needs-attention")
        weeks_df = gr.Dataframe(elem_id="annotator-weeks")
        with gr.Row():
            agree_plot = gr.BarPlot(
                x="annotator",
                y="agreement_with_consensus",
                title="Agreement with consensus (leave-one-out)",
                y_lim=[0, 1],
            )
            speed_plot = gr.BarPlot(x="annotator", y="per_hour", title="Throughput (tasks per hour)")
        gr.Markdown("### Leaderboard (Bradley-Terry, 95% bootstrap CI)")
        lb_sp_df = gr.Dataframe(label="System prompts", elem_id="leaderboard")
        lb_style_df = gr.Dataframe(
            label="System prompts, style-controlled (length and markdown as covariates, as Chatbot Arena)",
            elem_id="leaderboard-style",
        )
        lb_plot = gr.BarPlot(x="arm", y="score", title="System prompt score (Elo scale)")
        lb_m_df = gr.Dataframe(label="Models")
        gr.Markdown("### Model judges against people (the first row: people with each other)")
        judges_df = gr.Dataframe(elem_id="judges")
        gr.Markdown("### Qualification quiz attempts, and contested tasks (rankers kept disagreeing)")
        quiz_df = gr.Dataframe(elem_id="quiz-results")
        contested_df = gr.Dataframe(elem_id="contested")
        gr.Markdown("### Flagged candidates and skipped tasks")
        flagged_df = gr.Dataframe(label="Flagged candidates", elem_id="flagged")
        skipped_df = gr.Dataframe(label="Skipped tasks")
        gr.Markdown("### Gold tasks")
        with gr.Row():
            gold_task = gr.Number(label="Task id", precision=0)
            gold_ranks = gr.Textbox(label="Correct ranks, in display order (e.g. 1,2,2,3)")
            gold_btn = gr.Button("Mark as gold")
        gold_status = gr.Markdown()
        gr.HTML(
            '<a id="report-link" href="/report" target="_blank">Open the loop report</a> (rebuilt from '
            "the database: agreement, reward model, policy win rates, lineage)"
        )
        gr.Markdown("### Serving: deploy, promote a canary, roll back")
        with gr.Row():
            deploy_model = gr.Number(label="Model id", precision=0, elem_id="deploy-model")
            deploy_canary = gr.Number(label="Canary % (empty: all traffic)", elem_id="deploy-canary")
            deploy_btn = gr.Button("Deploy", elem_id="deploy")
            promote_btn = gr.Button("Promote canary", elem_id="promote")
            rollback_btn = gr.Button("Roll back", elem_id="rollback")
        serving_md = gr.Markdown(elem_id="serving")

    admin_outputs = [
        report_df,
        alpha_df,
        attention_md,
        weeks_df,
        agree_plot,
        speed_plot,
        lb_sp_df,
        lb_style_df,
        lb_plot,
        lb_m_df,
        flagged_df,
        skipped_df,
        judges_df,
        quiz_df,
        contested_df,
    ]

    def on_refresh(request: gr.Request):
        return admin_tables(services, account(request))

    def on_gold(task_id, ranks_text, request: gr.Request):
        acct = account(request)
        if acct["role"] != Role.ADMIN:
            raise gr.Error("admins only")
        try:
            ranks_list = [int(x) for x in str(ranks_text).replace(" ", "").split(",") if x]
            queue.mark_gold(services.store, int(task_id or 0), ranks_list)
        except (ValueError, UserError) as e:
            raise gr.Error(str(e)) from None
        return f"Task {int(task_id)} is now a gold task with ranks {ranks_list}."

    def serving(action: str, request: gr.Request, **params: object) -> str:
        # The same operations as `rankloop deploy|deploy promote|rollback` (services.serving runs them).
        if account(request)["role"] != Role.ADMIN:
            raise gr.Error("admins only")
        try:
            result = services.serving(action, **params)
        except (UserError, ValueError, RuntimeError) as e:
            raise gr.Error(describe(e)) from None
        return f"**{action} done.** Serving now:\n\n```json\n{json.dumps(result['routes'], indent=2)}\n```"

    def on_deploy(model_id, canary, request: gr.Request):
        return serving("deploy", request, model_id=int(model_id or 0), canary=canary or None)

    def on_promote(request: gr.Request):
        return serving("deploy.promote", request)

    def on_rollback(request: gr.Request):
        return serving("rollback", request)

    deploy_btn.click(
        on_deploy,
        inputs=[deploy_model, deploy_canary],
        outputs=serving_md,
        api_name="admin_deploy",
        api_visibility=HIDDEN,
    )
    promote_btn.click(on_promote, outputs=serving_md, api_name="admin_promote", api_visibility=HIDDEN)
    rollback_btn.click(on_rollback, outputs=serving_md, api_name="admin_rollback", api_visibility=HIDDEN)
    refresh.click(on_refresh, outputs=admin_outputs, api_name="admin_refresh", api_visibility=HIDDEN)
    admin_tab.select(on_refresh, outputs=admin_outputs, api_name="admin_open", api_visibility=HIDDEN)
    gold_btn.click(
        on_gold,
        inputs=[gold_task, gold_ranks],
        outputs=gold_status,
        api_name="admin_gold",
        api_visibility=HIDDEN,
    )
    return admin_tab
