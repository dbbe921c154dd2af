"""The labelling workflow in a real browser (Debian's Chromium): the guidelines above each task, the
qualification quiz failed then passed, a ranking with strengths and ratings, and a reviewer resolving
a contested task."""

import json
from pathlib import Path

import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.guidelines import add_guideline
from annotator.ranking import Submission
from service.core.settings import AnnotationOptions
from service.core.store import Store
from tests.support.browser import CHROMIUM, choose, log_in, pick, rank
from tests.support.servicectl import running_service

pytestmark = pytest.mark.slow

QUIZ = {
    "RANKLOOP_ANNOTATION__GOLD_RATE": "0",
    "RANKLOOP_ANNOTATION__QUIZ_SIZE": "2",
    "RANKLOOP_ANNOTATION__QUIZ_PASS": "0.75",
}


def status_says(page, text: str, elem: str = "status") -> None:
    page.wait_for_function(
        f"document.querySelector('#{elem}').innerText.includes({json.dumps(text)})", timeout=30_000
    )


def test_guidelines_quiz_strengths_ratings_and_review(tmp_path: Path, browser) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from tests.support.seeding import seed_tasks

    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        ids = seed_tasks(store, n_prompts=4, k=3, styles=("brief",))
        queue.mark_gold(store, ids[0], [1, 2, 3])
        queue.mark_gold(store, ids[1], [3, 2, 1])
        add_guideline(store, "Old advice.")
        add_guideline(store, "Prefer the answer that is *correct*; length comes second.")
        add_annotator(store, "alice", "annotator", "alice-password")
        add_annotator(store, "rita", "reviewer", "rita-password")
        with store.write() as cur:  # she passed the quiz before
            cur.execute("UPDATE annotators SET qualified_at = now() WHERE name = 'rita'")
        add_annotator(store, "boss", "admin", "boss-password")
        # Two simulated rankers split on one task, at an overlap cap of 2: it is contested.
        with store.write() as cur:
            cur.execute("UPDATE tasks SET required_rankings = 2, priority = 9 WHERE id = ?", [ids[2]])
        split = AnnotationOptions(gold_rate=0, overlap_tau=0.5, overlap_cap=2)
        for name, ranks in (("s1", [1, 2, 3]), ("s2", [3, 2, 1])):
            who = add_annotator(store, name, "simulated")
            t = queue.next_task(store, who, split)
            queue.submit(store, who, Submission(task_id=t["task_id"], submission_id=name, ranks=ranks), split)
        assert store.scalar("SELECT contested FROM tasks WHERE id = ?", [ids[2]])

    with running_service(data, env=QUIZ) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 2400})
        log_in(page, url, "alice", "alice-password")
        page.wait_for_selector("#cand-0")
        assert "correct" in page.locator("#guidelines").inner_text()
        assert "version 2" in page.locator("#guidelines").inner_text()
        assert "Review" not in page.get_by_role("tab").all_inner_texts()

        def answer(ranks: list[str]) -> None:
            for i, value in enumerate(ranks):
                rank(page, i, value)
            page.locator("#submit").click()

        status_says(page, "question 1 of 2 (attempt 1)", "prompt")
        answer(["1", "2", "3"])  # right
        status_says(page, "question 2 of 2", "prompt")
        answer(["1", "2", "3"])  # wrong: the reference is 3, 2, 1
        status_says(page, "below the pass mark")
        assert "Where you differed from the reference" in page.locator("#status").inner_text()
        status_says(page, "question 1 of 2 (attempt 2)", "prompt")
        answer(["1", "2", "3"])
        status_says(page, "question 2 of 2 (attempt 2)", "prompt")
        answer(["3", "2", "1"])
        status_says(page, "You passed the qualification quiz")
        page.wait_for_function("!document.querySelector('#prompt').innerText.includes('quiz')")

        # A real task: candidate 2 best, then 1, then 3; strengths per level and two ratings.
        for i, value in enumerate(["2", "1", "3"]):
            rank(page, i, value)
        choose(page, "strength-1", "significantly")
        choose(page, "strength-0", "slightly")
        page.locator("#ratings-1").get_by_text("Ratings (optional, 0-4)").click()
        pick(page, "rate-1-helpfulness", "4")
        pick(page, "rate-1-harmlessness", "3")
        page.locator("#submit").click()
        status_says(page, "Stored your ranking")

        reviewer = browser.new_page(viewport={"width": 1200, "height": 2000})
        log_in(reviewer, url, "rita", "rita-password")
        reviewer.wait_for_selector("#prompt")
        reviewer.get_by_role("tab", name="Review").click()
        status_says(reviewer, "Contested task", "review-task")
        shown = reviewer.locator("#review-rankings").inner_text()
        assert "s1" in shown and "s2" in shown
        reviewer.locator("#review-ranks textarea, #review-ranks input").first.fill("1,2,3")
        reviewer.locator("#review-resolve").click()
        reviewer.get_by_text("needs a rationale").first.wait_for()
        reviewer.locator("#review-rationale textarea").fill("Candidate 1 is the only correct one.")
        reviewer.locator("#review-resolve").click()
        status_says(reviewer, "resolved with final ranks [1, 2, 3]", "review-status")
        assert "No contested task is waiting" in reviewer.locator("#review-task").inner_text()

        # Admins see the quiz attempts and the contested task's outcome.
        admin = browser.new_page(viewport={"width": 1200, "height": 3000})
        log_in(admin, url, "boss", "boss-password")
        admin.wait_for_selector("#prompt")
        admin.get_by_role("tab", name="Admin").click()
        admin.wait_for_function("document.querySelector('#quiz-results').innerText.includes('alice')")
        attempts = admin.locator("#quiz-results").inner_text()
        assert "false" in attempts.lower() and "true" in attempts.lower()
        assert "Candidate 1 is the only correct one." in admin.locator("#contested").inner_text()

    with Store.open(data / "rankloop.duckdb") as store:
        (row,) = store.query(
            "SELECT r.ranks, r.strengths, r.attributes, g.version FROM rankings r JOIN annotators a "
            "ON a.id = r.annotator_id JOIN guidelines g ON g.id = r.guideline_id WHERE a.name = 'alice'"
        )
        assert row["ranks"] == [2, 1, 3] and row["strengths"] == ["significantly", "slightly"]
        assert json.loads(row["attributes"]) == [{}, {"helpfulness": 4, "harmlessness": 3}, {}]
        assert row["version"] == 2
        assert store.scalar("SELECT count(*) FROM quiz_answers") == 4
        assert store.scalar("SELECT qualified_at IS NOT NULL FROM annotators WHERE name = 'alice'")
        (adj,) = store.query("SELECT task_id, ranks, rationale FROM adjudications")
        assert adj["task_id"] == ids[2] and adj["ranks"] == [1, 2, 3]
