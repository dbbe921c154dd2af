"""Test data for the annotation stage without a vLLM run: prompts, system prompts, samples and
tasks written through the store's own paths, with responses drawn from the generated corpus
(so simulated annotators have real preferences to act on)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from policy.corpus import SYSTEM_STYLES, TOPICS, answer, question
from service.core.registry import register_model
from service.core.store import Store
from service.data.prompts import add_prompts, add_system_prompts, latest_system_prompts
from service.data.tasks import build_tasks


def seed_tasks(
    store: Store,
    n_prompts: int = 6,
    k: int = 4,
    styles: tuple[str, ...] = ("brief", "detailed"),
    required: int = 1,
    seed: int = 0,
    model_name: str = "tiny",
) -> list[int]:
    """n_prompts x len(styles) x k samples, grouped into tasks of k candidates mixing the styles."""
    rng = random.Random(seed)
    topics = list(TOPICS)
    prompts = [question(topics[i % len(topics)], rng) + f" #{seed}-{i}" for i in range(n_prompts)]
    add_prompts(store, prompts)
    add_system_prompts(store, {s: SYSTEM_STYLES[s] for s in styles})
    sps = latest_system_prompts(store, list(styles))
    model_id = register_model(store, "pretrained", Path(f"/models/{model_name}-{seed}"), name=model_name)
    rows = []
    for p in store.query("SELECT id, text FROM prompts WHERE list_contains(?, text) ORDER BY id", [prompts]):
        topic = next(t for t in topics if t in p["text"])
        for sp in sps:
            for i in range(k):
                # Mostly in the style asked for, sometimes another: some candidates ignore their instruction.
                style = sp["name"] if rng.random() < 0.6 else rng.choice(list(SYSTEM_STYLES))
                rows.append(
                    {
                        "prompt_id": p["id"],
                        "system_prompt_id": sp["id"],
                        "model_id": model_id,
                        "params": "{}",
                        "params_hash": f"seed{seed}",
                        "sample_index": i,
                        "text": answer(topic, style, rng),
                    }
                )
    with store.write() as cur:
        store.insert_arrow(cur, "samples", pa.Table.from_pylist(rows))
    prompt_ids = [
        r["id"]
        for r in store.query("SELECT id FROM prompts WHERE list_contains(?, text) ORDER BY id", [prompts])
    ]
    return build_tasks(
        store,
        prompt_ids,
        {(sp["id"], model_id): 1.0 for sp in sps},
        f"seed{seed}",
        size=k,
        required_rankings=required,
        seed=seed,
        batch=f"batch-{seed}",
    )


def seed_rankings(
    store: Store,
    n_prompts: int = 100,
    annotators: int = 3,
    noise: float = 0.3,
    required: int = 1,
    seed: int = 0,
) -> int:
    """Tasks ranked by simulated annotators whose hidden preference a reward model can see:
    length near 12 words and liked/disliked words (no instruction-following, which depends on
    the system prompt the reward model is not shown). Annotators take turns, so the same seed gives
    the same rankings however the machine is loaded. Returns the number of rankings."""
    from annotator import simulate_run
    from annotator.simulated import Preference, Profile
    from service.core.settings import AnnotationOptions

    seed_tasks(
        store,
        n_prompts=n_prompts,
        k=4,
        styles=("brief", "detailed", "friendly"),
        required=required,
        seed=seed,
    )
    wanted = {
        f"sim-{i}": Profile(preference=Preference(instruction_weight=0.0), noise=noise)
        for i in range(annotators)
    }
    profiles = simulate_run.ensure_accounts(store, wanted)
    return simulate_run.run(
        simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, seed=seed, parallel=False
    ).total  # the same rankings on every run
