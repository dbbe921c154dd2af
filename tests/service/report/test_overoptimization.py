"""The reward-overoptimization picture: one point per policy evaluation judged by both the gold and the
proxy reward model, at its KL to the parent, with the parent at the origin; nothing in the rule-based world."""

import json
from pathlib import Path

import pytest

from service.core.registry import register_model
from service.core.store import Store
from service.report.overoptimization import TITLE, points, section


def judge(candidate: float, baseline: float, win: float) -> dict:
    return {"mean_candidate": candidate, "mean_baseline": baseline, "win_rate": win}


def evaluation(kl: float, gold: tuple[float, float], proxy: tuple[float, float]) -> dict:
    return {
        "judges": {"gold": judge(*gold, 0.4), "reward": judge(*proxy, 0.7)},
        "kl": {"estimate": kl, "ci": [kl / 2, kl * 2]},
    }


def test_gold_and_proxy_against_kl_per_checkpoint(store: Store, tmp_path: Path) -> None:
    base = register_model(store, "pretrained", tmp_path / "base")
    late = register_model(store, "policy", tmp_path / "late", parent_id=base)
    early = register_model(store, "policy", tmp_path / "early", parent_id=base)
    rule = register_model(store, "policy", tmp_path / "rule", parent_id=base)
    metrics = {
        late: [evaluation(6.0, (0.1, 0.3), (2.0, 0.5))],  # the proxy climbs, gold falls: overoptimized
        early: [evaluation(1.5, (0.5, 0.3), (0.9, 0.5))],
        rule: [{"judges": {"hidden": judge(1, 0, 0.6), "reward": judge(1, 0, 0.6)}, "kl": {"estimate": 2.0}}],
    }
    with store.write() as cur:
        for model_id, evaluations in metrics.items():
            cur.execute(
                "UPDATE models SET metrics = ? WHERE id = ?",
                [json.dumps({"evaluations": evaluations}), model_id],
            )
    got = points(store)
    assert [p["model_id"] for p in got] == [
        early,
        late,
    ]  # by KL; the rule-based world's evaluation is no point
    assert [(p["gold"], p["proxy"]) for p in got] == [pytest.approx((0.2, 0.4)), pytest.approx((-0.2, 1.5))]
    html = section(store)
    assert TITLE in html and html.count("<polyline") == 2  # gold and proxy, each from the origin
    assert f"policy #{late}</td><td>6.00</td><td>+1.500</td><td>-0.200</td>" in html


def test_no_picture_without_a_gold_judge(store: Store) -> None:
    assert points(store) == [] and section(store) == ""
