"""What an annotator sees of a task: the conversation (`prompt` is its last user turn) and the
candidates in display order, with their sources only where they are shown. Cached, since a task's
candidates never change."""

from __future__ import annotations

from itertools import groupby

from annotator.queue_book import VIEWS, book_for
from annotator.ranking import RankingError
from reward.conversation import from_row
from service.core.store import Store


def task_view(store: Store, task_id: int, show_sources: bool = False) -> dict:
    """What the annotator sees: the conversation (`prompt` is its last user turn) and the candidates
    in display order (sources only if shown)."""
    view = task_views(store, [task_id], show_sources).get(task_id)
    if view is None:
        raise RankingError(f"there is no task {task_id}")
    return view


def task_views(store: Store, task_ids: list[int], show_sources: bool = False) -> dict[int, dict]:
    """Views of several tasks; cached, since a task's candidates never change, and read in one query
    (a query costs about as much for 64 tasks as for one)."""
    book = book_for(store)
    with book.lock:
        views = {tid: v for tid in task_ids if (v := book.views.get((tid, show_sources))) is not None}
    missing = [tid for tid in task_ids if tid not in views]
    if not missing:
        return views
    rows = store.query(
        """WITH c AS (SELECT t.id, t.prompt_id, unnest(t.sample_ids) AS sample_id,
                             generate_subscripts(t.sample_ids, 1) - 1 AS position FROM tasks t
                      WHERE list_contains(?, t.id))
           SELECT c.id AS task_id, c.position, p.text AS prompt, p.messages, s.text, sp.name AS system_prompt,
                  sp.text AS system_prompt_text, m.name AS model
           FROM c JOIN prompts p ON p.id = c.prompt_id JOIN samples s ON s.id = c.sample_id
           JOIN system_prompts sp ON sp.id = s.system_prompt_id LEFT JOIN models m ON m.id = s.model_id
           ORDER BY c.id, c.position""",
        [missing],
    )
    keep = (
        ("position", "text", "system_prompt", "system_prompt_text", "model")
        if show_sources
        else ("position", "text")
    )
    for tid, grouped in groupby(rows, key=lambda r: r["task_id"]):
        group = list(grouped)
        # The conversation so far (a one-message one for a plain prompt), then the candidate answers.
        messages = from_row(group[0]["prompt"], group[0]["messages"])
        views[tid] = {
            "task_id": tid,
            "prompt": messages[-1]["content"],
            "messages": messages,
            "candidates": [{k: r[k] for k in keep} for r in group],
        }
    with book.lock:
        for tid in missing:
            if tid in views:
                book.views[(tid, show_sources)] = views[tid]
        while len(book.views) > VIEWS:
            book.views.popitem(last=False)
    return views
