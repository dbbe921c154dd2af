"""The annotator dashboard on a real DuckDB file: a planted position-biased simulated annotator is shown
as biased and needs attention; fair ones do not; the weekly rows and the CSV carry the figures."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

from annotator import simulate_run
from annotator.dashboard import dashboard, first_shown_share
from annotator.simulated import Profile
from service.cli.main import main
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.report.report import build_report
from tests.support.seeding import seed_tasks


def test_first_shown_share_counts_ties() -> None:
    assert first_shown_share([1, 2, 3]) == 1.0
    assert first_shown_share([1, 1, 3, 1]) == 1 / 3
    assert first_shown_share([2, 1, 3]) == 0.0


def test_a_planted_position_bias_is_found(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=15, k=4, styles=("brief", "detailed"), required=3, seed=3)
        profiles = simulate_run.ensure_accounts(
            store,
            {"fair-1": Profile(), "fair-2": Profile(), "lefty": Profile(position_bias=6.0)},
        )
        simulate_run.run(
            simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, seed=3, parallel=False
        )
        d = dashboard(store)
        html = build_report(store)
    assert "Annotators by week" in html and "<b>lefty</b>: position bias" in html
    people = {p["annotator"]: p for p in d["annotators"]}
    assert people["lefty"]["rankings"] == people["fair-1"]["rankings"] == 30
    assert people["lefty"]["first_shown_expected"] == 0.25
    assert people["lefty"]["first_shown_wins"] > 0.6 and people["lefty"]["position_z"] > 4
    assert all(abs(people[f]["position_z"]) < 2.58 for f in ("fair-1", "fair-2")), people
    flagged = {n["annotator"]: n["reasons"] for n in d["needs_attention"]}
    assert "lefty" in flagged and flagged["lefty"][0].startswith(
        "position bias: the first shown is ranked best"
    )
    assert not any(r.startswith("position bias") for f in ("fair-1", "fair-2") for r in flagged.get(f, []))
    (week,) = {w["week"] for w in d["weeks"]}
    assert week.count("-W") == 1

    out, table = tmp_path / "dashboard.csv", io.StringIO()
    with contextlib.redirect_stdout(table):
        assert main(["--data", str(data), "dashboard", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["annotator"] for r in rows} == {"fair-1", "fair-2", "lefty"}
    assert "needs attention: lefty: position bias" in table.getvalue()
