"""Answers side by side: the baseline and the policy on the same held-out prompts, so a person sees what
training changed in the text, not only in a win rate.

An evaluation keeps a few of its comparisons (`policy.evaluate.pick_examples`); the report shows them
per round, with each judge's score of either answer (not the scores of a reward model the policy was
trained against: service/jobs/evaluate_job.py drops those).
"""

from __future__ import annotations

from html import escape


def _conversation(messages: list[dict]) -> str:
    return "<br>".join(
        f"<b>{escape(m['role'])}</b>: {escape(m['content'])}" for m in messages
    )  # the system prompt too: it is part of what was asked


def _answer(text: str, scores: dict[str, list[float]], side: int) -> str:
    judged = "; ".join(f"{escape(judge)} {s[side]:.2f}" for judge, s in scores.items())
    return f"{escape(text) or '<i>(empty)</i>'}" + (
        f'<br><span class="note">{judged}</span>' if judged else ""
    )


def answers_table(examples: list[dict], baseline: str, candidate: str) -> str:
    """An HTML table: the conversation, the baseline's answer, the candidate's (and the judges' scores)."""
    if not examples:
        return ""
    rows = "".join(
        f'<tr><td class="text">{_conversation(e["messages"])}</td>'
        f'<td class="text">{_answer(e["baseline"], e.get("scores") or {}, 1)}</td>'
        f'<td class="text">{_answer(e["candidate"], e.get("scores") or {}, 0)}</td></tr>'
        for e in examples
    )
    return (
        f"<h3>Answers side by side ({len(examples)} held-out prompts)</h3>"
        f'<table class="answers"><tr><th>prompt</th><th>{escape(baseline)}</th><th>{escape(candidate)}</th></tr>'
        f"{rows}</table>"
    )
