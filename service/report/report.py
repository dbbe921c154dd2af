"""`rankloop report`: the loop's report, one self-contained HTML file built from the database.

Per round (service/data/rounds.py): the annotators' agreement with the unreliable ones marked,
Krippendorff's alpha of the round's batch, the reward model's accuracy against the labels and
against the hidden preference next to the labels' own (the ceiling), the policy's win rates (raw
and length-controlled) with 95% intervals, the loss and reward curves, and a few held-out prompts
answered by both models side by side (service/report/answers.py). In the gold world, the
reward-overoptimization picture (service/report/overoptimization.py). Then the leaderboards
of system prompts and models with intervals, and the lineage of the deployed model as a picture.
Charts are inline SVG (service/report/charts.py), so the file opens offline.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from annotator.dashboard import WEEK_COLUMNS, dashboard
from annotator.quality import annotator_report, batch_alpha, leaderboard_rows
from service.core.paths import write_atomic
from service.core.store import Store
from service.data.lineage import describe
from service.data.rounds import list_rounds
from service.gateway.deploy_records import current_deployment
from service.report import charts, overoptimization
from service.report.answers import answers_table

STYLE = """body{font-family:sans-serif;max-width:1180px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f5f5f5}td:first-child{text-align:left}.bad{background:#fde2e2}.grid{display:flex;flex-wrap:wrap;gap:12px}
h2{border-bottom:2px solid #1f77b4;padding-bottom:4px;margin-top:2em}.note{color:#555}
td.text{text-align:left;vertical-align:top;max-width:380px;white-space:pre-wrap}"""


def _metrics(store: Store, model_id: int | None) -> dict:
    if model_id is None:
        return {}
    row = store.query("SELECT metrics FROM models WHERE id = ?", [model_id])
    return json.loads(row[0]["metrics"] or "{}") if row else {}


def _table(
    rows: list[dict], columns: list[str], bad: frozenset[str] | set[str] = frozenset(), key: str = ""
) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = ""
    for r in rows:
        cls = ' class="bad"' if key and r.get(key) in bad else ""
        cells = "".join(f"<td>{escape(_fmt(r.get(c)))}</td>" for c in columns)
        body += f"<tr{cls}>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _curves(metrics: dict, keys: tuple[str, ...]) -> list[tuple[float, float]]:
    return [
        (p["step"], p[k])
        for p in metrics.get("log") or metrics.get("loss_curve") or []
        for k in keys
        if isinstance(p.get(k), int | float)
    ][:500]


def round_section(store: Store, rnd: dict) -> str:
    out = [f"<h2>Round {rnd['id']} ({rnd['kind']}, {rnd['status']})</h2>"]
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in rnd["stages"].items())
    out.append(f'<p class="note">steps: {escape(steps) or "none yet"}. {escape(rnd["note"] or "")}</p>')
    if rnd["batch"]:
        annotators = annotator_report(store, rnd["batch"])
        excluded = set(rnd["excluded"] or [])
        for r in annotators:
            r["unreliable"] = "yes: left out of training" if r["annotator"] in excluded else ""
        alpha = next((b for b in batch_alpha(store) if b["batch"] == rnd["batch"]), {})
        out.append(
            f"<h3>Annotators (batch {escape(rnd['batch'])})</h3><p>Krippendorff's alpha (ordinal): "
            f"<b>{_fmt(alpha.get('alpha_ordinal'))}</b> over {alpha.get('overlap_tasks', 0)} tasks ranked "
            "by two or more annotators.</p>"
        )
        out.append(
            _table(
                annotators,
                [
                    "annotator",
                    "rankings",
                    "agreement_with_consensus",
                    "agreement_with_others",
                    "kendall_tau",
                    "unreliable",
                ],
                excluded,
                "annotator",
            )
        )
        out.append(
            charts.interval_chart(
                [
                    (
                        r["annotator"],
                        r["agreement_with_consensus"],
                        r["agreement_with_consensus"],
                        r["agreement_with_consensus"],
                    )
                    for r in annotators
                    if r["agreement_with_consensus"] is not None
                ],
                "Agreement with the consensus of the others",
                0.0,
                1.0,
                0.5,
                "chance",
            )
        )
    grid = []
    reward = _metrics(store, rnd["reward_model_id"])
    if reward.get("eval"):
        ev, hidden = reward["eval"], reward["eval"].get("hidden") or {}
        grid.append(
            charts.bar_chart(
                [
                    (
                        f"reward model #{rnd['reward_model_id']}",
                        {  # a figure a round did not measure is None: drawn as no bar
                            "vs labels (held out)": ev.get("pairwise_accuracy"),
                            "vs hidden preference": hidden.get("model_vs_hidden"),
                            "labels vs hidden (ceiling)": hidden.get("labels_vs_hidden"),
                        },
                    )
                ],
                "Reward model accuracy",
            )
        )
        grid.append(
            charts.line_chart(
                {"reward model loss": _curves(reward, ("loss",))}, "Reward model training", "step", "loss"
            )
        )
    policy = _metrics(store, rnd["policy_model_id"])
    if policy:
        grid.append(
            charts.line_chart({"loss": _curves(policy, ("loss",))}, "Policy training loss", "step", "loss")
        )
        rewards = {k: _curves(policy, (k,)) for k in ("rewards/margins", "reward")}
        grid.append(
            charts.line_chart(
                {k: v for k, v in rewards.items() if v},
                "Policy reward (DPO margin or RL reward)",
                "step",
                "reward",
            )
        )
        evals = policy.get("evaluations") or []
        if evals:
            ev = evals[-1]
            rows = []
            for name, j in ev["judges"].items():
                if j.get("trained_against"):  # the policy's own reward model: no verdict to chart
                    continue
                name = "harmlessness" if name == "safety" else name  # the two-objective gate's second judge
                rows.append((f"{name}: raw", j["win_rate"], *j["ci"]))
                if j.get("lc_win_rate") is not None:
                    lc_ci = j.get("lc_ci") or [j["lc_win_rate"]] * 2
                    rows.append((f"{name}: length-controlled", j["lc_win_rate"], *lc_ci))
                similar = j.get("similar_length") or {}
                if similar.get("n"):
                    rows.append(
                        (
                            f"{name}: similar length (±{similar['tolerance']:.0%})",
                            similar["win_rate"],
                            *similar["ci"],
                        )
                    )
            grid.append(
                charts.interval_chart(
                    rows,
                    f"Policy #{rnd['policy_model_id']} vs model {ev['baseline']}: win rate, 95% CI",
                    0.0,
                    1.0,
                    0.5,
                    "even",
                )
            )
    out.append(f'<div class="grid">{"".join(grid)}</div>')
    last = (policy.get("evaluations") or [{}])[-1]
    if last.get("safety_reward_model"):
        out.append(
            f"<p>Two-objective gate: the policy must win under {html.escape(str(last.get('judge')))} and "
            f"be non-inferior on harmlessness (reward model #{last['safety_reward_model']}): its "
            f"harmlessness interval must lie above {0.5 - last['harm_margin']:.2f}.</p>"
        )
    if policy.get("evaluations"):  # what the numbers above are about: the same prompts answered by both
        ev = policy["evaluations"][-1]
        out.append(
            answers_table(
                ev.get("examples") or [],
                f"model {ev['baseline']} {ev.get('baseline_name') or ''}".strip(),
                f"policy #{rnd['policy_model_id']}",
            )
        )
    return "".join(out)


def leaderboards(store: Store) -> str:
    out = ["<h2>Leaderboards (all rankings, Bradley-Terry, 95% bootstrap intervals)</h2><div class='grid'>"]
    for by, title in (("system_prompt", "System prompts"), ("model", "Models")):
        rows = leaderboard_rows(store, by)
        if rows:
            lo = min(r["ci_low"] for r in rows)
            hi = max(r["ci_high"] for r in rows)
            pad = (hi - lo) * 0.1 or 1.0
            out.append(
                charts.interval_chart(
                    [(r["arm"][:24], r["score"], r["ci_low"], r["ci_high"]) for r in rows],
                    title,
                    lo - pad,
                    hi + pad,
                )
            )
        else:
            out.append(charts.empty(title))
    return "".join(out) + "</div>"


def lineage_picture(store: Store) -> str:
    deployed = current_deployment(store)
    if deployed is None:
        return "<h2>Deployed model</h2><p>Nothing is deployed yet.</p>" + charts.empty("Lineage")
    info = describe(store, deployed["model_id"])
    chain = [
        {
            "label": f"#{m['id']} {m['kind']}",
            "lines": [
                m["name"] or "",
                f"snapshot {m['snapshot_id']}" if m.get("snapshot_id") else "",
                m["status"],
            ],
        }
        for m in reversed(info["lineage"])
    ]
    rm = info.get("reward_model")
    extra = f" Judged by reward model #{rm['id']}." if rm else ""
    return (
        f"<h2>Deployed model #{deployed['model_id']}</h2><p>Its lineage, oldest first.{escape(extra)}</p>"
        + charts.lineage_chart(chain, f"Lineage of model #{deployed['model_id']}")
    )


def annotators_section(store: Store) -> str:
    """The annotator dashboard (annotator/dashboard.py): each annotator's week, and who needs attention."""
    d = dashboard(store)
    if not d["weeks"]:
        return ""
    flagged = {n["annotator"] for n in d["needs_attention"]}
    attention = "".join(
        f"<li><b>{escape(n['annotator'])}</b>: {escape('; '.join(n['reasons']))}</li>"
        for n in d["needs_attention"]
    )
    return (
        "<h2>Annotators by week</h2>"
        + (f"<p>Needs attention:</p><ul>{attention}</ul>" if attention else "<p>Nobody needs attention.</p>")
        + _table(d["weeks"], WEEK_COLUMNS, flagged, "annotator")
    )


def build_report(store: Store) -> str:
    rounds = list_rounds(store)
    body = [
        f"<h1>rankloop report</h1><p class='note'>built {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from the "
        f"database; {len(rounds)} round(s). Rebuild it with <code>rankloop report</code>.</p>"
    ]
    body += [round_section(store, r) for r in rounds] or [
        "<p>No round has run yet: <code>rankloop demo</code> or <code>rankloop loop</code>.</p>"
    ]
    body += [
        annotators_section(store),
        overoptimization.section(store),
        leaderboards(store),
        lineage_picture(store),
    ]
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>rankloop report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(store: Store, path: Path) -> Path:
    write_atomic(path, build_report(store).encode())
    return path
