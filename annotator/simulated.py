"""Simulated annotators with a known hidden preference, in the spirit of AlpacaFarm's.

Each simulated account scores a response with a hidden utility built from features:
its length against a target, words it likes or dislikes, and whether it follows the
instruction of the system prompt it was sampled under (brief = one sentence,
detailed = three or more, friendly = a greeting first). It ranks a task by sorting
utility / noise + Gumbel noise, which is Plackett-Luce sampling: the chance it puts
a before b is sigmoid((u_a - u_b) / noise), the Bradley-Terry model at temperature
`noise`. An optional position bias favours candidates shown first; an unreliable
annotator ranks at random. Candidates whose utilities are within `tie_margin` tie
(they are ordered as one group, at their mean utility).

The profile is stored with the account, so later stages can score any response with
the ground truth (`utility`).

Two worlds: the rule-based preference above (fast, for tests and the tiny demo), and a gold
one (`gold_model`), as in Gao et al. 2022 and AlpacaFarm: the utility of a response is the
score of a *gold* reward model trained on real human labels the loop never sees, and the same
Bradley-Terry noise, position bias, ties and unreliability apply. This package does not run
models: whoever runs a gold annotator passes the gold scores to `rank`
(`annotator.simulate_run.run(gold=...)`).
"""

from __future__ import annotations

import math
import random
import re

from pydantic import BaseModel, Field


class Preference(BaseModel):
    target_words: int = Field(12, ge=1, description="preferred response length in words")
    length_weight: float = Field(1.0, description="utility lost per target-length of distance from it")
    liked: dict[str, float] = Field(
        default_factory=lambda: {"love": 0.3, "calm": 0.3},
        description="word -> utility per occurrence (at most 3 counted)",
    )
    disliked: dict[str, float] = Field(
        default_factory=lambda: {"ice": 0.5},
        description="word -> utility lost per occurrence (at most 3 counted)",
    )
    instruction_weight: float = Field(
        2.0, description="utility for following the system prompt's instruction"
    )


class Profile(BaseModel):
    """A simulated annotator: hidden preference, noise and bias."""

    preference: Preference = Field(default_factory=Preference)
    noise: float = Field(0.3, gt=0, description="Bradley-Terry temperature (higher = noisier)")
    position_bias: float = Field(
        0.0, description="utility added to the first shown candidate, less to later ones"
    )
    tie_margin: float = Field(0.02, ge=0, description="utilities closer than this tie")
    unreliable: bool = Field(False, description="ranks uniformly at random")
    gold_model: str | None = Field(
        None,
        description="rank by this gold reward model's scores (its directory) instead of the rule-based "
        "preference; its scores are the Bradley-Terry logits, so noise 1 is the model's own confidence",
    )

    @property
    def judge(self) -> str:
        """Which world's truth this annotator follows, in words a figure can cite."""
        return (
            f"the gold reward model {self.gold_model}"
            if self.gold_model
            else "the rule-based simulated preference"
        )


# How a warm answer opens (the built-in corpus's friendly answers start "Happy to help!").
GREETINGS = ("happy to help", "glad to help", "hello", "hi!", "hi,", "hi there", "hey")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_WORD = re.compile(r"[a-z']+")


def sentences(text: str) -> int:
    return len([s for s in _SENTENCE_END.split(text.strip()) if s.strip()])


def follows_instruction(system_prompt: str, response: str) -> bool | None:
    """Whether `response` does what `system_prompt` asks; None when it asks nothing we can check."""
    sp = system_prompt.lower()
    if "one short sentence" in sp:
        return sentences(response) == 1
    if "several sentences" in sp or "in detail" in sp:
        return sentences(response) >= 3
    if "friendly" in sp or "warm" in sp:
        return response.strip().lower().startswith(GREETINGS)
    return None


def utility(pref: Preference, response: str, system_prompt: str | None) -> float:
    """The hidden, noise-free score of a response (higher is better)."""
    words = _WORD.findall(response.lower())
    u = -pref.length_weight * abs(len(words) - pref.target_words) / pref.target_words
    for w, weight in pref.liked.items():
        u += weight * min(words.count(w), 3)
    for w, weight in pref.disliked.items():
        u -= weight * min(words.count(w), 3)
    if system_prompt and follows_instruction(system_prompt, response):
        u += pref.instruction_weight
    return u


def rank(
    profile: Profile, candidates: list[dict], rng: random.Random, gold: list[float] | None = None
) -> list[int]:
    """Ranks (1 = best, ties shared) for candidates shown in this order; each has `text` and
    optionally `system_prompt_text`. A gold annotator needs `gold`, the gold model's scores of them."""
    k = len(candidates)
    if profile.unreliable:
        order = list(range(1, k + 1))
        rng.shuffle(order)
        return order
    if profile.gold_model:
        if gold is None or len(gold) != k:
            raise ValueError(f"a gold annotator ranks by the gold model's scores: give {k} of them")
        true_u = list(gold)
    else:
        true_u = [utility(profile.preference, c["text"], c.get("system_prompt_text")) for c in candidates]
    bias = [profile.position_bias * (k - 1 - i) / max(k - 1, 1) for i in range(k)]
    # Candidates whose true utilities lie within tie_margin of each other form a tie group.
    groups: list[list[int]] = []
    for i in sorted(range(k), key=lambda i: true_u[i]):
        if groups and true_u[i] - true_u[groups[-1][-1]] < profile.tie_margin:
            groups[-1].append(i)
        else:
            groups.append([i])

    def noisy(group: list[int]) -> float:
        u = sum(true_u[i] + bias[i] for i in group) / len(group)
        return u / profile.noise - math.log(-math.log(rng.random() or 1e-12))  # + Gumbel noise

    ranks = [0] * k
    for r, group in enumerate(sorted(groups, key=lambda g: -noisy(g)), 1):
        for i in group:
            ranks[i] = r
    return ranks
