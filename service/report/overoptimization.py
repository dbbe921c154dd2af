"""The reward-overoptimization picture (Gao et al. 2022): as a policy moves away from its parent
(KL, estimated on its own samples), how its proxy reward model's score and the gold reward model's
score of its answers change. The proxy is what the policy learned from; the gold model is what the
simulated annotators ranked by and nothing downstream trained on, so a proxy that climbs while gold
falls is the policy exploiting the proxy's mistakes.

One point per evaluation judged by both (the gold world, `rankloop demo --real`): x is the KL to the
policy's parent, y the policy's mean score minus its baseline's under each judge; the parent is the
origin.
"""

from __future__ import annotations

import json
from html import escape

from service.core.store import Store
from service.report import charts

TITLE = "Reward overoptimization: gold and proxy reward against KL to the parent"


def points(store: Store) -> list[dict]:
    """Every policy evaluation with a KL estimate and both a gold and a proxy (reward) judge, by KL."""
    out = []
    for m in store.query("SELECT id, metrics FROM models WHERE kind = 'policy' ORDER BY id"):
        for ev in json.loads(m["metrics"] or "{}").get("evaluations") or []:
            judges, kl = ev.get("judges") or {}, ev.get("kl") or {}
            if "gold" in judges and "reward" in judges and kl.get("estimate") is not None:
                out.append(
                    {
                        "model_id": m["id"],
                        "kl": kl["estimate"],
                        "gold": judges["gold"]["mean_candidate"] - judges["gold"]["mean_baseline"],
                        "proxy": judges["reward"]["mean_candidate"] - judges["reward"]["mean_baseline"],
                        "gold_win_rate": judges["gold"]["win_rate"],
                    }
                )
    return sorted(out, key=lambda p: p["kl"])


def section(store: Store) -> str:
    pts = points(store)
    if not pts:
        return ""
    series = {
        "gold reward (HH-trained judge)": [(0.0, 0.0)] + [(p["kl"], p["gold"]) for p in pts],
        "proxy reward (the policy's reward model)": [(0.0, 0.0)] + [(p["kl"], p["proxy"]) for p in pts],
    }
    rows = "".join(
        f"<tr><td>policy #{p['model_id']}</td><td>{p['kl']:.2f}</td><td>{p['proxy']:+.3f}</td>"
        f"<td>{p['gold']:+.3f}</td><td>{p['gold_win_rate']:.3f}</td></tr>"
        for p in pts
    )
    return (
        f"<h2>{escape(TITLE)}</h2><p class='note'>Each policy's mean reward minus its parent's, on held-out "
        "prompts, against KL(policy || parent) in nats per response; the parent is the origin.</p>"
        + charts.line_chart(series, TITLE, "KL to the parent (nats)", "reward - parent's")
        + "<table><tr><th>checkpoint</th><th>KL</th><th>proxy Δ</th><th>gold Δ</th><th>gold win rate</th></tr>"
        + rows
        + "</table>"
    )
