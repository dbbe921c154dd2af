"""A small generated world of questions and answers, so the loop runs with no download.

The tiny built-in model is pretrained on chat transcripts drawn from this world, and
the example prompts and system prompts in `examples/` speak about the same topics.
Answers depend on the system prompt (brief answers are short, detailed ones long,
friendly ones open with a greeting), so system prompts measurably change what the
model says and simulated annotators have something real to prefer.

    python -m policy.corpus --n 5 --seed 0     # print a few transcripts
"""

from __future__ import annotations

import argparse
import random

TOPICS: dict[str, list[str]] = {
    "cats": ["whiskers", "purr", "paws", "naps", "mice", "fur"],
    "rain": ["clouds", "drops", "puddles", "storms", "umbrellas", "wet"],
    "bread": ["flour", "yeast", "oven", "crust", "dough", "baker"],
    "music": ["songs", "rhythm", "drums", "melody", "notes", "guitar"],
    "trees": ["leaves", "roots", "bark", "branches", "forest", "shade"],
    "the sea": ["waves", "salt", "fish", "tides", "boats", "sand"],
    "the moon": ["night", "craters", "light", "orbit", "phases", "sky"],
    "coffee": ["beans", "cups", "morning", "roast", "aroma", "milk"],
    "bees": ["honey", "hives", "flowers", "wings", "queen", "buzz"],
    "trains": ["tracks", "stations", "engines", "tickets", "rails", "speed"],
    "snow": ["winter", "flakes", "cold", "sleds", "ice", "white"],
    "gardens": ["seeds", "soil", "water", "weeds", "blooms", "sun"],
}

QUESTION_FORMS = [
    "Tell me about {t}.",
    "What do you know about {t}?",
    "Describe {t}.",
    "Why do people like {t}?",
    "Explain {t} to a child.",
    "Write a few words on {t}.",
]

SENTENCE_FORMS = [
    "{T} have {w1} and {w2}.",
    "People think of {w1} when they see {t}.",
    "{T} are known for {w1}.",
    "The {w1} of {t} is simple and the {w2} is calm.",
    "Many love {t} because of the {w1}.",
    "With {t} you notice {w1}, {w2} and more.",
    "{T} bring {w1} to every day.",
]

# Style name -> the system prompt text that asks for it.
SYSTEM_STYLES: dict[str, str] = {
    "brief": "Answer in one short sentence.",
    "detailed": "Answer in detail, with several sentences.",
    "friendly": "Answer in a warm and friendly way.",
    "plain": "You are a helpful assistant.",
}
GREETING = "Happy to help!"


def question(topic: str, rng: random.Random) -> str:
    return rng.choice(QUESTION_FORMS).format(t=topic)


def _sentence(topic: str, rng: random.Random) -> str:
    w1, w2 = rng.sample(TOPICS[topic], 2)
    s = rng.choice(SENTENCE_FORMS).format(t=topic, T=topic.capitalize(), w1=w1, w2=w2)
    return s[0].upper() + s[1:]


def answer(topic: str, style: str, rng: random.Random) -> str:
    """An answer about `topic` shaped by the system prompt style it was asked under."""
    n = {"brief": 1, "detailed": rng.randint(3, 5)}.get(style, rng.randint(1, 3))
    text = " ".join(_sentence(topic, rng) for _ in range(n))
    return f"{GREETING} {text}" if style == "friendly" else text


def transcripts(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """`n` chat transcripts (system, user, assistant) drawn from the world."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic = rng.choice(list(TOPICS))
        style = rng.choice(list(SYSTEM_STYLES))
        out.append(
            [
                {"role": "system", "content": SYSTEM_STYLES[style]},
                {"role": "user", "content": question(topic, rng)},
                {"role": "assistant", "content": answer(topic, style, rng)},
            ]
        )
    return out


def training_transcripts(n: int, seed: int = 0, eval_fraction: float = 0.2) -> list[list[dict[str, str]]]:
    """`n` transcripts whose question lands on the training side of a snapshot split at `eval_fraction`
    (`reward.data.split_of`, by the question's normalized opening): supervised fine-tuning on them leaves
    the held-out prompts unseen, so an evaluation on those prompts measures what it says."""
    from reward.data import split_of

    out: list[list[dict[str, str]]] = []
    batch = 0
    while len(out) < n:
        out += [
            t
            for t in transcripts(n, seed + 1000 * batch)
            if split_of(t[1]["content"], eval_fraction) == "train"
        ]
        batch += 1
    return out[:n]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5, help="how many transcripts to print")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    args = ap.parse_args(argv)
    for t in transcripts(args.n, args.seed):
        print(" | ".join(f"{m['role']}: {m['content']}" for m in t))


if __name__ == "__main__":
    main()
