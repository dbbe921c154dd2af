"""Model judges (AI feedback): a reward model, or an instruction-following model served by vLLM,
ranks tasks through the same queue and submit path as people.

    rankloop judge --reward-model 3                       # ranks by the reward model's scores
    rankloop judge --model DIR --template rank            # asks a chat model, with a versioned template
    rankloop judge --endpoint http://host:8000/v1 --served-name m --template rank

A judge is an annotator of role `judge` (its configuration is its profile). Its rankings count
toward a task's required rankings only when `annotation.judges_count` is set; otherwise it
ranks every task beside the people. A generative judge sees the candidates in a fresh random
order on every call (the order is recorded, so position bias can be measured), and its answer
must name every candidate, best first ("2 > 1 > 3"; "=" ties). An answer that does not parse is
asked again (`retries`) and then skipped with the reason recorded. The admin tab reports each
judge's agreement with people and with gold beside the people's agreement with each other.
"""

from __future__ import annotations

import json
import random
import re
import string
import uuid
from dataclasses import dataclass, field

from openai import OpenAI

from annotator.accounts import add_annotator
from annotator.ranking import Submission
from annotator.simulate_run import QueueClient
from reward.conversation import render_plain
from service.core.enums import Role
from service.core.errors import NotFound, UserError
from service.core.store import Store

TEMPLATE_FIELDS = ("conversation", "candidates", "k")
REQUIRED_FIELDS = ("conversation", "candidates")
DEFAULT_TEMPLATE = {
    "rank": """You judge answers to the last user turn of a conversation.

Conversation:
{conversation}

Candidate answers:
{candidates}

Rank all {k} candidates from best to worst. Reply with their numbers only, best first, separated by ">", \
for example: 2 > 1 > 3"""
}
_RANKING = re.compile(r"\d+(?:\s*[>=,]\s*\d+)+")


def check_template(name: str, text: str) -> list[str]:
    """Problems with a judge template: the placeholders it needs, and no unknown ones."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as e:
        return [f"template {name!r}: {e} (write literal braces as {{{{ and }}}})"]
    problems = [f"template {name!r} lacks the placeholder {{{f}}}" for f in REQUIRED_FIELDS if f not in used]
    problems += [
        f"template {name!r} has an unknown placeholder {{{f}}}; valid: "
        f"{', '.join('{' + v + '}' for v in TEMPLATE_FIELDS)}"
        for f in sorted(used - set(TEMPLATE_FIELDS))
    ]
    return problems


def add_templates(store: Store, templates: dict[str, str]) -> list[dict]:
    """Store judge templates; new text under an existing name becomes its next version."""
    problems = [p for name, text in templates.items() for p in check_template(name, text)]
    if problems:
        raise UserError("; ".join(problems) + "; nothing was added")
    report = []
    with store.write() as cur:
        for name, text in templates.items():
            if (
                name in DEFAULT_TEMPLATE
                and not cur.execute("SELECT 1 FROM judge_templates WHERE name = ?", [name]).fetchone()
            ):
                # The built-in is version 1 of its name, so a new text under that name is version 2.
                cur.execute(
                    "INSERT INTO judge_templates (name, version, text) VALUES (?, 1, ?)",
                    [name, DEFAULT_TEMPLATE[name]],
                )
            last = cur.execute(
                "SELECT version, text FROM judge_templates WHERE name = ? ORDER BY version DESC LIMIT 1",
                [name],
            ).fetchone()
            if last and last[1] == text:
                report.append({"name": name, "version": last[0], "change": "unchanged"})
                continue
            version = (last[0] + 1) if last else 1
            cur.execute(
                "INSERT INTO judge_templates (name, version, text) VALUES (?, ?, ?)", [name, version, text]
            )
            report.append({"name": name, "version": version, "change": "new version" if last else "added"})
    return report


def template(store: Store, name: str) -> dict:
    """The newest version of a judge template (the built-in `rank` is its version 1 until another is added)."""
    rows = store.query(
        "SELECT name, version, text FROM judge_templates WHERE name = ? ORDER BY version DESC LIMIT 1", [name]
    )
    if not rows and name in DEFAULT_TEMPLATE:
        return {"name": name, "version": 1, "text": DEFAULT_TEMPLATE[name]}
    if not rows:
        names = sorted(
            {r["name"] for r in store.query("SELECT name FROM judge_templates")} | set(DEFAULT_TEMPLATE)
        )
        raise NotFound(
            f"no judge template named {name!r}; stored: {', '.join(names)} "
            "(add one with `rankloop judge-templates add FILE`)"
        )
    return rows[0]


def ensure_judge(store: Store, name: str, profile: dict) -> dict:
    """The judge's account, created with this profile; an existing judge keeps its own."""
    rows = store.query("SELECT role, profile FROM annotators WHERE name = ?", [name])
    if not rows:
        add_annotator(store, name, Role.JUDGE, profile=json.dumps(profile))
        return profile
    if rows[0]["role"] != Role.JUDGE:
        raise UserError(f"{name!r} exists and is not a judge; pick another --name")
    return json.loads(rows[0]["profile"] or "{}")


def parse_ranking(answer: str, k: int) -> list[int] | None:
    """Ranks per shown position (1 = best) from "2 > 1 = 3"-style text naming each of 1..k once."""
    for match in _RANKING.finditer(answer):
        tokens = re.findall(r"\d+|[>=,]", match.group(0))
        numbers = [int(t) for t in tokens if t.isdigit()]
        if sorted(numbers) != list(range(1, k + 1)):
            continue
        ranks, rank = [0] * k, 1
        for prev, tok in zip([">", *tokens], tokens, strict=False):
            if tok.isdigit():
                if prev in (">", ","):
                    rank = max(ranks) + 1
                ranks[int(tok) - 1] = rank
        return ranks
    return None


def ranks_from_scores(scores: list[float]) -> list[int]:
    """1 for the highest score; equal scores tie."""
    distinct = sorted(set(scores), reverse=True)
    return [distinct.index(s) + 1 for s in scores]


@dataclass
class Verdict:
    ranks: list[int] | None  # per display position; None when the judge gave no usable answer
    note: str  # what the judge said (and in which order it saw the candidates), or why it was skipped
    top_shown_first: bool | None = None


class RewardJudge:
    """Ranks by a reward model's scores of (conversation, candidate)."""

    def __init__(self, model_dir: str):
        from reward.score import RewardScorer

        self.scorer = RewardScorer(model_dir)

    def judge(self, task: dict) -> Verdict:
        scores = self.scorer.score(task["messages"], [c["text"] for c in task["candidates"]])
        return Verdict(ranks_from_scores(scores), f"scores {[round(s, 4) for s in scores]}")


@dataclass
class GenerativeJudge:
    """Asks an OpenAI-compatible chat endpoint (a vLLM server) to rank, with a template."""

    base_url: str
    served_name: str
    template: dict
    api_key: str = "rankloop"
    retries: int = 2
    seed: int = 0
    max_tokens: int = 64
    name: str = "judge"
    _client: OpenAI = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = OpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=120)

    def check(self) -> None:
        """Refuse a judge that does not answer, before anything is stored."""
        try:
            served = [m.id for m in self._client.models.list().data]
        except Exception as e:  # connection refused, timeouts, HTTP errors: all mean "no judge here"
            raise UserError(
                f"the judge endpoint {self.base_url} does not answer ({type(e).__name__}); "
                "check --endpoint, or serve the model with --model DIR"
            ) from None
        if self.served_name not in served:
            raise UserError(
                f"the judge endpoint {self.base_url} serves {', '.join(served) or 'nothing'}, "
                f"not {self.served_name!r}; pass --served-name"
            )

    def prompt(self, task: dict, order: list[int]) -> str:
        candidates = "\n\n".join(f"[{n}] {task['candidates'][i]['text']}" for n, i in enumerate(order, 1))
        return self.template["text"].format(
            conversation=render_plain(task["messages"]), candidates=candidates, k=len(order)
        )

    def judge(self, task: dict) -> Verdict:
        k = len(task["candidates"])
        answers = []
        for attempt in range(self.retries + 1):
            # A fresh order per call, from (seed, judge, task, attempt): reproducible, and position bias shows.
            order = random.Random(f"{self.seed}:{self.name}:{task['task_id']}:{attempt}").sample(range(k), k)
            resp = self._client.chat.completions.create(
                model=self.served_name,
                messages=[{"role": "user", "content": self.prompt(task, order)}],
                max_tokens=self.max_tokens,
                temperature=0.0 if attempt == 0 else 0.7,
            )
            answer = resp.choices[0].message.content or ""
            answers.append(answer)
            shown_ranks = parse_ranking(answer, k)
            if shown_ranks is not None:
                ranks = [0] * k
                for shown_at, i in enumerate(order):
                    ranks[i] = shown_ranks[shown_at]
                return Verdict(
                    ranks,
                    f"template {self.template['name']} v{self.template['version']}, shown order "
                    f"{[i + 1 for i in order]}: {answer[:500]}",
                    shown_ranks[0] == 1,
                )
        tried = "; ".join(repr(a[:120]) for a in answers)
        return Verdict(None, f"judge answer did not parse after {len(answers)} tries: {tried}"[:1900])


@dataclass
class JudgeReport:
    ranked: int = 0
    skipped: int = 0
    top_shown_first: int = 0  # rankings whose best candidate the judge saw first
    chance_top_first: float = 0.0  # what that share would be with no position bias
    skip_reasons: list[str] = field(default_factory=list)


def run_judge(
    client: QueueClient, name: str, judge: RewardJudge | GenerativeJudge, max_tasks: int | None = None
) -> JudgeReport:
    """The judge takes tasks from the queue until none is left for it (or max_tasks), ranking or skipping."""
    report, chance = JudgeReport(), []
    while max_tasks is None or report.ranked + report.skipped < max_tasks:
        task = client.next(name)
        if task is None:
            break
        verdict = judge.judge(task)
        sub_id = uuid.uuid4().hex
        if verdict.ranks is None:
            client.submit(
                name,
                Submission(
                    task_id=task["task_id"],
                    submission_id=sub_id,
                    skip_reason="cannot_judge",
                    skip_text=verdict.note,
                ),
            )
            report.skipped += 1
            report.skip_reasons.append(verdict.note)
            continue
        client.submit(
            name,
            Submission(
                task_id=task["task_id"],
                submission_id=sub_id,
                ranks=verdict.ranks,
                rationale=verdict.note[:5000],
            ),
        )
        report.ranked += 1
        if verdict.top_shown_first is not None:
            report.top_shown_first += verdict.top_shown_first
            chance.append(1 / len(task["candidates"]))
    report.chance_top_first = sum(chance) / len(chance) if chance else 0.0
    return report
