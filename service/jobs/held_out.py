"""Which prompts an evaluation may use: held out from everything behind the candidate and the judge.

The snapshot's eval split at the smallest eval fraction of the snapshots in the candidate's lineage
and the reward model's (a split is by a prompt's normalized opening, `reward.conversation.split_key`,
so near-duplicates fall on one side); prompts from a file (stored with source 'eval', never sampled for
training) unless a training pool holds the same opening; and from both, any prompt whose opening is in
the supervised fine-tuning data of a model behind the candidate or the baseline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from annotator.simulated import Profile
from reward.conversation import conversation_key, normalized, split_key
from reward.data import read_snapshot
from service.core.enums import ModelKind, PromptSource, Role
from service.core.errors import UserError
from service.core.registry import get_model, lineage
from service.core.store import Store
from service.data.prompts import add_prompts, latest_system_prompts, read_prompt_file
from service.jobs.evaluate_config import EvalJobConfig


def snapshot_for(store: Store, cfg: EvalJobConfig, candidate: dict) -> dict | None:
    snap_id = cfg.snapshot or candidate["snapshot_id"]
    sql = "SELECT id, path FROM snapshots " + (
        "WHERE id = ?" if snap_id else "ORDER BY created_at DESC LIMIT 1"
    )
    rows = store.query(sql, [snap_id] if snap_id else [])
    if snap_id and not rows:
        raise UserError(f"no snapshot {snap_id!r}; `rankloop snapshot` takes one")
    return rows[0] if rows else None


def profiles(rows: list[dict]) -> list[Profile]:
    """The hidden preferences of the simulated annotators behind a snapshot (unreliable ones left out)."""
    seen = {
        r["annotator"]: r["annotator_profile"]
        for r in rows
        if r["annotator_role"] == Role.SIMULATED and r["annotator_profile"]
    }
    profiles = [Profile.model_validate_json(p) for p in seen.values()]
    return [p for p in profiles if not p.unreliable]


def gold_models(profiles: list[Profile]) -> list[str]:
    """The gold reward models behind the gold simulated annotators among `profiles`."""
    return sorted({p.gold_model for p in profiles if p.gold_model})


def rule_profiles(profiles: list[Profile]) -> list[Profile]:
    """The simulated annotators who follow the rule-based preference (the `hidden` judge)."""
    return [p for p in profiles if not p.gold_model]


def held_out_fraction(store: Store, cfg: EvalJobConfig, snapshot_id: str) -> float:
    """The smallest eval fraction among the snapshots the candidate, its ancestors and the reward models
    learned from: a prompt held out at it was held out from all of them."""
    ids = {m["snapshot_id"] for m in lineage(store, cfg.candidate) if m["snapshot_id"]} | {snapshot_id}
    for judge in (cfg.reward_model, cfg.safety_reward_model):
        if judge is not None:
            ids.add(get_model(store, judge)["snapshot_id"])
    rows = store.query("SELECT filters FROM snapshots WHERE list_contains(?, id)", [[i for i in ids if i]])
    return min(json.loads(r["filters"]).get("eval_fraction", 0.2) for r in rows)


def eval_rows(store: Store, cfg: EvalJobConfig, snap: dict | None) -> list[dict]:
    return (
        read_snapshot(snap["path"], "eval", held_out_at=held_out_fraction(store, cfg, snap["id"]))
        if snap
        else []
    )


def system_prompt_names(cfg: EvalJobConfig, rows: list[dict]) -> list[str] | None:
    return (
        cfg.system_prompts
        or sorted({n.rsplit(" v", 1)[0] for r in rows for n in r["system_prompts"]})
        or None
    )


@dataclass(frozen=True)
class HeldOut:
    prompts: list[dict]
    system_prompts: list[dict]
    profiles: list[Profile]  # the simulated annotators' hidden preferences (the `hidden` judge)
    left_out_of_file: int  # file prompts whose opening a training pool holds
    left_out_as_trained_on: int  # prompts whose opening is in supervised fine-tuning data behind the models
    unchecked_sft_data: list[str]  # SFT data files that are gone, so could not be checked


def sft_openings(store: Store, model_ids: list[int]) -> tuple[set[str], list[str]]:
    """The normalized openings (`split_key`) of every conversation in the SFT data behind these models,
    and the data files that could not be read."""
    keys: set[str] = set()
    missing: list[str] = []
    seen: set[int] = set()
    for model_id in model_ids:
        for m in lineage(store, model_id):
            data = (m.get("config") or {}).get("data") if m["kind"] == ModelKind.SFT else None
            if m["id"] in seen or not data:
                continue
            seen.add(m["id"])
            try:
                lines = Path(data).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                missing.append(str(data))
                continue
            for line in lines:
                try:
                    chat = json.loads(line)["messages"]
                    keys.add(split_key(next(t["content"] for t in chat if t["role"] == "user")))
                except (ValueError, KeyError, TypeError, StopIteration):
                    continue  # not a chat line: the trainer skips it too
    return keys, missing


def held_out(store: Store, cfg: EvalJobConfig) -> HeldOut:
    """The prompts, system prompts and hidden preferences of this evaluation, and what was left out."""
    snap = (
        store.query("SELECT id, path FROM snapshots WHERE id = ?", [cfg.snapshot])[0]
        if cfg.snapshot
        else None
    )
    rows = eval_rows(store, cfg, snap)
    texts = list(dict.fromkeys(r["prompt"] for r in rows))
    left_file = 0
    if cfg.prompt_file is not None:
        convs = read_prompt_file(cfg.prompt_file)
        add_prompts(store, convs, source=PromptSource.EVAL, source_ref=str(cfg.prompt_file))
        keys = list(dict.fromkeys(conversation_key(normalized(c)) for c in convs))
        # A file's prompt whose opening a training pool holds (source seed/import/served), even written
        # differently ("what is a cat #2"), is not held out; the snapshot's own eval prompts are.
        training = {
            split_key(r["text"])
            for r in store.query("SELECT text FROM prompts WHERE source <> ?", [PromptSource.EVAL])
            if r["text"] not in texts
        }
        kept = [k for k in keys if split_key(k) not in training]
        left_file = len(keys) - len(kept)
        texts += kept
    trained, unchecked = sft_openings(store, [cfg.candidate, *([cfg.baseline] if cfg.baseline else [])])
    prompts = [
        p
        for p in store.query(
            "SELECT id, text, messages FROM prompts WHERE list_contains(?, text) ORDER BY id",
            [list(dict.fromkeys(texts))],
        )
        if split_key(p["text"]) not in trained
    ]
    left_trained = len(set(texts)) - len(prompts)
    return HeldOut(
        prompts[: cfg.max_prompts],
        latest_system_prompts(store, system_prompt_names(cfg, rows)),
        profiles(rows),
        left_file,
        left_trained,
        unchecked,
    )
