"""What the annotator app's Admin tab shows, read from the store (annotator/quality.py,
annotator/dashboard.py), in the order of its components; admins only."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from annotator import quality, quiz, review
from annotator.dashboard import WEEK_COLUMNS, dashboard
from annotator.services import AnnotatorServices
from service.core.enums import Role


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """A table for the admin tab; an empty one keeps its column names."""
    return pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame({c: [] for c in columns})


LEADERBOARD_COLUMNS = ["arm", "score", "ci_low", "ci_high", "comparisons", "win_rate"]
QUIZ_COLUMNS = ["name", "attempt", "answered", "score", "passed", "disagreed_tasks", "last_answer_at"]
CONTESTED_COLUMNS = ["task_id", "batch", "rankings", "reviewer", "final_ranks", "rationale", "resolved_at"]
STYLE_COLUMNS = ["arm", "score", "style_score", "style_ci_low", "style_ci_high", "style_coefficients"]
JUDGE_COLUMNS = ["annotator", "role", "rankings", "skips", "agreement_with_people", "pairs", "gold_agreement"]


def admin_tables(services: AnnotatorServices, acct: dict) -> list:
    if acct["role"] != Role.ADMIN:
        raise gr.Error("admins only")
    store = services.store
    report = quality.annotator_report(store)
    report_cols = [
        "annotator",
        "role",
        "rankings",
        "skips",
        "flags",
        "per_hour",
        "median_seconds",
        "agreement_with_others",
        "kendall_tau",
        "agreement_with_consensus",
        "overlap_tasks",
        "gold_agreement",
        "gold_tasks",
    ]
    agree = [r for r in report if r["agreement_with_consensus"] is not None]
    lb_sp = quality.leaderboard_rows(store, "system_prompt")
    board = dashboard(store)
    attention = "\n".join(
        f"* **{n['annotator']}**: {'; '.join(n['reasons'])}" for n in board["needs_attention"]
    )
    return [
        _frame(report, report_cols),
        _frame(quality.batch_alpha(store), ["batch", "tasks", "overlap_tasks", "alpha_ordinal"]),
        "Needs attention:\n\n" + attention if attention else "Nobody needs attention.",
        _frame(board["weeks"], WEEK_COLUMNS),
        _frame(agree, ["annotator", "agreement_with_consensus"]),
        _frame(report, ["annotator", "per_hour"]),
        _frame(lb_sp, LEADERBOARD_COLUMNS),
        _frame(
            quality.leaderboard_rows(store, "system_prompt", n_boot=50, style_control=True), STYLE_COLUMNS
        ),
        _frame(lb_sp, ["arm", "score"]),
        _frame(quality.leaderboard_rows(store, "model"), LEADERBOARD_COLUMNS),
        _frame(
            quality.flagged(store),
            ["task_id", "annotator", "position", "sample_id", "reason", "text", "response"],
        ),
        _frame(quality.skipped(store), ["task_id", "annotator", "skip_reason", "created_at"]),
        _frame(quality.judge_report(store), JUDGE_COLUMNS),
        _frame(quiz.results(store, services.queue_settings), QUIZ_COLUMNS),
        _frame(review.contested(store, resolved=True), CONTESTED_COLUMNS),
    ]
