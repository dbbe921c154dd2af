"""The annotator app in a real browser: Debian's Chromium driven by Playwright's Python package."""

import json
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from annotator.accounts import add_annotator
from service.core.registry import register_model
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data.prompts import add_prompts, add_system_prompts, latest_system_prompts
from service.data.tasks import build_tasks
from tests.support.browser import CHROMIUM, choose, log_in, rank
from tests.support.seeding import seed_tasks
from tests.support.servicectl import running_service

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path: Path) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    d = tmp_path / "data"
    with Store.open(d / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=3, k=4)
        add_annotator(store, "alice", "annotator", "alice-password")
        add_annotator(store, "boss", "admin", "boss-password")
    return d


def call_handler_as(url: str, name: str, password: str, api_name: str) -> dict:
    """Trigger one of the app's event handlers through Gradio's queue, as a logged-in user would."""
    with httpx.Client(base_url=url, timeout=30) as c:
        c.post("/annotate/login", data={"username": name, "password": password}).raise_for_status()
        dep = next(
            d for d in c.get("/annotate/config").json()["dependencies"] if d.get("api_name") == api_name
        )
        c.post(
            "/annotate/gradio_api/queue/join",
            json={
                "data": [],
                "event_data": None,
                "fn_index": dep["id"],
                "trigger_id": None,
                "session_hash": "t3st",
            },
        ).raise_for_status()
        with c.stream("GET", "/annotate/gradio_api/queue/data", params={"session_hash": "t3st"}) as events:
            for line in events.iter_lines():
                if line.startswith("data:") and (msg := json.loads(line[5:]))["msg"] == "process_completed":
                    return msg
    raise AssertionError("no result")


def test_annotator_ranks_with_a_tie_and_a_flag(data: Path, browser) -> None:
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 1800})
        log_in(page, url, "alice", "wrong-password")
        page.get_by_text("Incorrect credentials").wait_for()
        log_in(page, url, "alice", "alice-password")
        page.wait_for_selector("#cand-0")
        page.wait_for_function("document.querySelector('#progress').innerText.includes('left in the queue')")
        shown = [page.locator(f"#cand-{i}").inner_text() for i in range(4)]
        assert page.get_by_role("tab").all_inner_texts() == ["Rank"]  # no Admin tab for an annotator
        for i, value in enumerate(["2", "1", "1", "3"]):  # candidates 2 and 3 tie for best
            rank(page, i, value)
        choose(page, "flag-3", "off_topic")
        page.locator("#flagtext-3 textarea, #flagtext-3 input").first.fill("talks about trains")
        page.locator("#rationale textarea").fill("2 and 3 are equally good")
        page.locator("#submit").click()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Stored your ranking')")
        assert "Done today: 1" in page.locator("#progress").inner_text()
        # Submitting an incomplete ranking on the next task is refused with a message.
        page.locator("#submit").click()
        page.get_by_text("give every candidate a rank").first.wait_for()
        refused = call_handler_as(url, "alice", "alice-password", "admin_refresh")
        assert refused["success"] is False and refused["output"]["error"] == "admins only"
    with Store.open(data / "rankloop.duckdb") as store:
        rows = store.query("SELECT r.*, t.sample_ids FROM rankings r JOIN tasks t ON t.id = r.task_id")
        assert len(rows) == 1
        row = rows[0]
        assert row["ranks"] == [2, 1, 1, 3] and not row["skipped"]
        assert json.loads(row["flags"]) == [
            {"position": 3, "reason": "off_topic", "text": "talks about trains"}
        ]
        assert row["rationale"] == "2 and 3 are equally good" and row["time_spent_s"] > 0
        texts = {r["id"]: r["text"] for r in store.query("SELECT id, text FROM samples")}
        for i, sid in enumerate(row["sample_ids"]):  # the page showed the recorded display order
            assert texts[sid] in shown[i]


def test_admin_tab_is_for_admins(data: Path, browser) -> None:
    with Store.open(data / "rankloop.duckdb") as store:
        from annotator import queue, simulate_run
        from annotator.ranking import Submission
        from annotator.simulated import Profile

        who = store.scalar("SELECT id FROM annotators WHERE name = 'alice'")
        while (t := queue.next_task(store, who, AnnotationOptions(gold_rate=0))) is not None:
            queue.submit(
                store,
                who,
                Submission(task_id=t["task_id"], submission_id=str(t["task_id"]), ranks=[1, 2, 3, 4]),
            )
        # Three simulated annotators then rank 24 more tasks; "lefty" is planted with a position bias.
        seed_tasks(store, n_prompts=12, k=4, required=3, seed=1)
        planted = {"fair-1": Profile(), "fair-2": Profile(), "lefty": Profile(position_bias=6.0)}
        simulate_run.run(
            simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)),
            simulate_run.ensure_accounts(store, planted),
            seed=1,
            parallel=False,
        )

    with running_service(data) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 2400})
        log_in(page, url, "boss", "boss-password")
        page.wait_for_selector("#prompt")
        page.get_by_role("tab", name="Admin").click()
        page.wait_for_function("document.querySelector('#leaderboard').innerText.includes('brief v1')")
        board = page.locator("#leaderboard").inner_text()
        assert "detailed v1" in board and "win_rate" in board
        styled = page.locator("#leaderboard-style").inner_text()  # beside the raw one
        assert "style_score" in styled and "brief v1" in styled and "length" in styled
        assert "alice" in page.locator("#annotator-report").inner_text()
        # The dashboard shows the planted bias, and nothing of the kind for the fair ones.
        attention = page.locator("#needs-attention").inner_text()
        assert "lefty: position bias: the first shown is ranked best" in attention, attention
        assert "fair-1: position bias" not in attention and "fair-2: position bias" not in attention
        assert "lefty" in page.locator("#annotator-weeks").inner_text()
        ok = call_handler_as(url, "boss", "boss-password", "admin_refresh")
        assert ok["success"] is True
        # The serving buttons run the same operations as `rankloop deploy` / `rollback`, with their errors.
        page.locator("#rollback").click()
        page.get_by_text("nothing is deployed, so there is nothing to roll back").first.wait_for()
        page.locator("#deploy-model input").fill("999")
        page.locator("#deploy").click()
        page.get_by_text("no model with id 999").first.wait_for()
        assert (
            call_handler_as(url, "alice", "alice-password", "admin_promote")["output"]["error"]
            == "admins only"
        )
        # The admin tab links to the loop's report, rebuilt on each visit; only admins may read it.
        with page.context.expect_page() as opened:
            page.locator("#report-link").click()
        report = opened.value
        report.wait_for_load_state()
        assert report.title() == "rankloop report" and "No round has run yet" in report.content()
        assert report.locator("svg[aria-label='System prompts'] .mark").count() >= 2  # alice's rankings
        assert httpx.get(f"{url}/report").status_code == 403  # no session


THREE_TURNS = [
    {"role": "user", "content": "I am baking today."},
    {"role": "assistant", "content": "What will you bake?"},
    {"role": "user", "content": "Bread. How long should it rise?"},
]
CANDIDATES = [
    "About an hour, until it doubles. <b>Not</b> longer.",
    "Rise times:\n\n```python\nminutes = 60  # <until doubled>\n```",
    "Two days.",
    "I don't know.",
]


def test_a_three_turn_conversation_ranked_with_the_keyboard(tmp_path: Path, browser) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        add_prompts(store, [THREE_TURNS])
        add_system_prompts(store, {"plain": "Answer helpfully."})
        (sp,) = latest_system_prompts(store, ["plain"])
        model_id = register_model(store, "pretrained", tmp_path / "m", name="m")
        prompt_id = store.scalar("SELECT id FROM prompts")
        with store.write() as cur:
            store.insert_arrow(
                cur,
                "samples",
                pa.Table.from_pylist(
                    [
                        {
                            "prompt_id": prompt_id,
                            "system_prompt_id": sp["id"],
                            "model_id": model_id,
                            "params": "{}",
                            "params_hash": "p",
                            "sample_index": i,
                            "text": t,
                        }
                        for i, t in enumerate(CANDIDATES)
                    ]
                ),
            )
        build_tasks(store, [prompt_id], {(sp["id"], model_id): 1.0}, "p", size=4)
        add_annotator(store, "alice", "annotator", "alice-password")
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 2400})
        log_in(page, url, "alice", "alice-password")
        page.wait_for_selector("#cand-0")
        page.wait_for_function(
            "document.querySelector('#conversation').innerText.includes('How long should it rise')"
        )
        chat = page.locator("#conversation").inner_text()
        positions = [chat.index(m["content"]) for m in THREE_TURNS]
        assert positions == sorted(positions), chat  # every turn, in order, above the candidates
        assert "Conversation so far (3 turns)" in page.locator("#prompt").inner_text()
        shown = [page.locator(f"#cand-{i}").inner_text() for i in range(4)]
        html_one = next(i for i, t in enumerate(shown) if "doubles" in t)
        assert "<b>Not</b>" in shown[html_one]  # HTML is shown as text...
        assert page.locator(f"#cand-{html_one} b").count() == 0  # ... and never becomes markup
        code_one = next(i for i, t in enumerate(shown) if "minutes = 60" in t)
        assert page.locator(f"#cand-{code_one} pre code").count() == 1  # code blocks are kept
        assert "<until doubled>" in page.locator(f"#cand-{code_one} pre code").inner_text()
        # Keyboard: click the first candidate, then digits rank it and move on; Enter submits.
        page.locator("#cand-0").click()
        wanted = {i: {True: 1, False: 3}[i == html_one] for i in range(4)}
        wanted[code_one] = 2
        for i in range(4):
            page.keyboard.press(str(wanted[i]))
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#status').innerText.includes('Stored your ranking')")
    with Store.open(data / "rankloop.duckdb") as store:
        (row,) = store.query("SELECT ranks FROM rankings")
        assert row["ranks"] == [wanted[i] for i in range(4)]
