"""The admin's view of the data: agreement, throughput, flags, skips and the leaderboard.

Reads the store and feeds the pure functions of `annotator.agreement` and
`annotator.leaderboard`; returns plain rows (lists of dicts) that the admin tab shows
as tables and charts and `/admin/*` returns as JSON.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from itertools import combinations
from statistics import mean

from annotator.agreement import (
    agreement_with_consensus,
    kendall_tau,
    krippendorff_alpha,
    pairwise_agreement,
    ranking_units,
)
from annotator.leaderboard import RankedTask, leaderboard
from annotator.style_control import StyledTask, style_leaderboard
from service.core.enums import HUMAN_ROLES, Role
from service.core.store import Store

PEOPLE = (*HUMAN_ROLES, Role.SIMULATED)  # whose rankings a model judge is measured against


def _ranked(store: Store, batch: str | None = None) -> list[dict]:
    return store.query(
        """SELECT r.task_id, r.ranks, a.name AS annotator, t.batch FROM rankings r
           JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
           WHERE NOT r.skipped AND (?::VARCHAR IS NULL OR t.batch = ?) ORDER BY r.task_id, r.id""",
        [batch, batch],
    )


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return round(mean(xs), 4) if xs else None


def annotator_report(store: Store, batch: str | None = None) -> list[dict]:
    """Per annotator (over one batch of tasks, or all): volume, throughput, agreement with others,
    with consensus and with gold."""
    by_task: dict[int, list[dict]] = defaultdict(list)
    for r in _ranked(store, batch):
        by_task[r["task_id"]].append(r)
    pair_agree: dict[str, list[float]] = defaultdict(list)
    taus: dict[str, list[float]] = defaultdict(list)
    consensus: dict[str, list[float]] = defaultdict(list)
    for rankings in by_task.values():
        for a, b in combinations(rankings, 2):
            pa, tau = pairwise_agreement(a["ranks"], b["ranks"]), kendall_tau(a["ranks"], b["ranks"])
            for who in (a["annotator"], b["annotator"]):
                pair_agree[who].append(pa)
                taus[who].append(tau)
        if len(rankings) >= 2:
            for r in rankings:
                others = [o["ranks"] for o in rankings if o is not r]
                consensus[r["annotator"]].append(agreement_with_consensus(r["ranks"], others))
    rows = store.query(
        """SELECT a.name AS annotator, a.role, count(r.id) FILTER (WHERE NOT r.skipped) AS rankings,
                  count(r.id) FILTER (WHERE r.skipped) AS skips,
                  sum(json_array_length(r.flags)) AS flags,
                  avg(r.gold_agreement) AS gold_agreement, count(r.gold_agreement) AS gold_tasks,
                  median(r.time_spent_s) AS median_seconds,
                  epoch(max(r.created_at) - min(r.created_at)) AS active_seconds
           FROM annotators a JOIN rankings r ON r.annotator_id = a.id JOIN tasks t ON t.id = r.task_id
           WHERE ?::VARCHAR IS NULL OR t.batch = ? GROUP BY ALL ORDER BY a.name""",
        [batch, batch],
    )
    for row in rows:
        name = row["annotator"]
        n = row["rankings"] + row["skips"]
        hours = max(row.pop("active_seconds") or 0, row["median_seconds"] or 1, 1) / 3600
        row["per_hour"] = round(n / hours, 1)
        row["agreement_with_others"] = _mean(pair_agree[name])
        row["kendall_tau"] = _mean(taus[name])
        row["agreement_with_consensus"] = _mean(consensus[name])
        row["overlap_tasks"] = len(consensus[name])
        row["gold_agreement"] = None if row["gold_agreement"] is None else round(row["gold_agreement"], 4)
        row["median_seconds"] = None if row["median_seconds"] is None else round(row["median_seconds"], 1)
    return rows


def unreliable(rows: list[dict], min_overlap: int = 10, margin: float = 0.1) -> list[str]:
    """Annotators to leave out of training: those whose agreement with the consensus of the others,
    over at least `min_overlap` shared tasks, sits `margin` or more below the median annotator's
    (a random ranker agrees about half the time; careful ones well above that)."""
    scored = [
        r for r in rows if r.get("agreement_with_consensus") is not None and r["overlap_tasks"] >= min_overlap
    ]
    if len(scored) < 3:  # with two, neither can be told from the other
        return []
    values = sorted(r["agreement_with_consensus"] for r in scored)
    median = values[len(values) // 2]
    return [r["annotator"] for r in scored if r["agreement_with_consensus"] <= median - margin]


def batch_alpha(store: Store) -> list[dict]:
    """Krippendorff's alpha (ordinal) per batch of tasks, over tasks ranked by 2+ annotators."""
    by_batch: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for r in _ranked(store):
        by_batch[r["batch"] or "(none)"][r["task_id"]].append(r["ranks"])
    out = []
    for batch, tasks in sorted(by_batch.items()):
        overlapped = [rs for rs in tasks.values() if len(rs) >= 2]
        alpha = krippendorff_alpha(ranking_units(overlapped), "ordinal") if overlapped else math.nan
        out.append(
            {
                "batch": batch,
                "tasks": len(tasks),
                "rankings": sum(len(rs) for rs in tasks.values()),
                "overlap_tasks": len(overlapped),
                "alpha_ordinal": None if math.isnan(alpha) else round(alpha, 4),
            }
        )
    return out


def flagged(store: Store, limit: int = 200) -> list[dict]:
    rows = store.query(
        """SELECT r.task_id, a.name AS annotator, r.flags, t.sample_ids, r.created_at FROM rankings r
           JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
           WHERE json_array_length(r.flags) > 0 ORDER BY r.id DESC LIMIT ?""",
        [limit],
    )
    texts = {}
    ids = [sid for r in rows for sid in r["sample_ids"]]
    if ids:
        texts = {
            s["id"]: s["text"]
            for s in store.query("SELECT id, text FROM samples WHERE list_contains(?, id)", [ids])
        }
    out = []
    for r in rows:
        for f in json.loads(r["flags"]):
            sid = r["sample_ids"][f["position"]]
            out.append(
                {
                    "task_id": r["task_id"],
                    "annotator": r["annotator"],
                    "position": f["position"],
                    "sample_id": sid,
                    "reason": f["reason"],
                    "text": f.get("text"),
                    "response": (texts.get(sid) or "")[:200],
                }
            )
    return out


def skipped(store: Store, limit: int = 200) -> list[dict]:
    return store.query(
        """SELECT r.task_id, a.name AS annotator, r.skip_reason, r.created_at FROM rankings r
           JOIN annotators a ON a.id = r.annotator_id WHERE r.skipped ORDER BY r.id DESC LIMIT ?""",
        [limit],
    )


def judge_report(store: Store) -> list[dict]:
    """Each model judge's agreement with people on the tasks both ranked (and with gold), after a
    first row with the people's agreement with each other: the bar a judge is measured against."""
    rows = store.query(
        """SELECT r.task_id, r.ranks, r.skipped, r.gold_agreement, a.name, a.role FROM rankings r
           JOIN annotators a ON a.id = r.annotator_id ORDER BY r.task_id, a.name"""
    )
    people: dict[int, list[list[int]]] = defaultdict(list)
    for r in rows:
        if r["role"] in PEOPLE and not r["skipped"]:
            people[r["task_id"]].append(r["ranks"])
    among = [pairwise_agreement(a, b) for ranks in people.values() for a, b in combinations(ranks, 2)]
    gold = [r["gold_agreement"] for r in rows if r["role"] != Role.JUDGE and r["gold_agreement"] is not None]
    out = [
        {
            "annotator": "people, with each other",
            "role": "people",
            "rankings": sum(map(len, people.values())),
            "skips": None,
            "agreement_with_people": _mean(among),
            "pairs": len(among),
            "gold_agreement": _mean(gold),
        }
    ]
    judges: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["role"] == Role.JUDGE:
            judges[r["name"]].append(r)
    for name, mine in sorted(judges.items()):
        agree = [
            pairwise_agreement(r["ranks"], p) for r in mine if not r["skipped"] for p in people[r["task_id"]]
        ]
        out.append(
            {
                "annotator": name,
                "role": Role.JUDGE,
                "rankings": sum(not r["skipped"] for r in mine),
                "skips": sum(r["skipped"] for r in mine),
                "agreement_with_people": _mean(agree),
                "pairs": len(agree),
                "gold_agreement": _mean(
                    [r["gold_agreement"] for r in mine if r["gold_agreement"] is not None]
                ),
            }
        )
    return out


def ranked_tasks(store: Store, by: str) -> list[RankedTask]:
    """Every ranking with each candidate's arm: its system prompt (name vN) or its model."""
    return [RankedTask(t.arms, t.ranks) for t in styled_tasks(store, by)]


def styled_tasks(store: Store, by: str) -> list[StyledTask]:
    """Every ranking with each candidate's arm (its system prompt, name vN, or its model) and text."""
    if by not in ("system_prompt", "model"):
        raise ValueError(f"leaderboard by {by!r}: valid are system_prompt, model")
    arm_sql = "sp.name || ' v' || sp.version" if by == "system_prompt" else "m.name || ' #' || m.id"
    arms = {
        r["id"]: (r["arm"], r["text"])
        for r in store.query(
            f"""SELECT s.id, {arm_sql} AS arm, s.text FROM samples s
                JOIN system_prompts sp ON sp.id = s.system_prompt_id JOIN models m ON m.id = s.model_id"""
        )
    }
    rows = store.query(
        "SELECT t.sample_ids, r.ranks FROM rankings r JOIN tasks t ON t.id = r.task_id WHERE NOT r.skipped "
        "ORDER BY r.task_id, r.annotator_id"
    )  # by content, not arrival: the bootstrap resamples by index
    return [
        StyledTask([arms[s][0] for s in r["sample_ids"]], r["ranks"], [arms[s][1] for s in r["sample_ids"]])
        for r in rows
    ]


def leaderboard_rows(
    store: Store, by: str = "system_prompt", n_boot: int = 200, style_control: bool = False
) -> list[dict]:
    """The Bradley-Terry leaderboard; with `style_control`, beside each arm its style-controlled score
    and interval (annotator/style_control.py) and the style coefficients the fit found."""
    raw = _raw_rows(store, by, n_boot)
    if not style_control:
        return raw
    styled = style_leaderboard(styled_tasks(store, by), n_boot=max(n_boot // 2, 20))
    by_arm = {r["arm"]: r for r in styled["arms"]}
    coefficients = ", ".join(f"{f} {g:+.2f}" for f, g in styled["style"].items())
    return [
        r
        | {
            "style_score": by_arm[r["arm"]]["score"],
            "style_ci_low": by_arm[r["arm"]]["ci_low"],
            "style_ci_high": by_arm[r["arm"]]["ci_high"],
            "style_coefficients": coefficients,
        }
        for r in raw
        if r["arm"] in by_arm
    ]


def _raw_rows(store: Store, by: str, n_boot: int) -> list[dict]:
    return [
        {
            "arm": s.arm,
            "score": round(s.score, 1),
            "ci_low": round(s.ci_low, 1),
            "ci_high": round(s.ci_high, 1),
            "comparisons": s.comparisons,
            "win_rate": None if s.win_rate is None else round(s.win_rate, 3),
        }
        for s in leaderboard(ranked_tasks(store, by), n_boot=n_boot)
    ]
