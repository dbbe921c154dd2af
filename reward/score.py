"""Score responses with a reward model: one forward pass per response, batched.

A response is scored as the chat the annotators judged: the conversation so far and the
assistant's answer, rendered with the model's chat template (the same encoding the
trainers use). The score is the sequence-classification head's output. The reward model
scores text: a policy with another tokenizer is fine, the text is re-tokenized here.

    scorer = RewardScorer("models/reward-3")
    scorer.score("Tell me about cats.", ["Cats purr.", "Bread."])   # [1.3, -0.4]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward.checkpoint import read_metrics
from reward.conversation import Messages, render_plain
from reward.data import conversation


def encode(tokenizer, prompt: str | Messages, response: str, max_length: int) -> list[int]:
    """Token ids of (conversation, assistant response); a string prompt is a one-message
    conversation. The end is kept when it is too long, since the score is read at the last token.
    A base checkpoint without a chat template gets the plain rendering ("prompt, blank line,
    response" for one turn; "User: ... / Assistant: ..." paragraphs for several) and end-of-text."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if tokenizer.chat_template:
        chat = messages + [{"role": "assistant", "content": response}]
        ids = tokenizer.apply_chat_template(chat, tokenize=True)["input_ids"]
    else:
        ids = tokenizer(render_plain(messages, response) + (tokenizer.eos_token or ""))["input_ids"]
    return ids[-max_length:]


def distinct(sequences: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """(each distinct sequence once, in first-seen order; for each input, the index of its sequence)."""
    index: dict[tuple[int, ...], int] = {}
    where = [index.setdefault(tuple(s), len(index)) for s in sequences]
    return [list(s) for s in index], where


def ensure_pad_token(tokenizer) -> int:
    """Many base checkpoints have no pad token; like TRL, pad with end-of-text then."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an end-of-text token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad_token_id


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def load_reward_model(model_dir: str | Path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Output 0 is the reward; a model rankloop trained with attribute heads has one more output per
    # attribute and names its outputs (reward, helpfulness, ...). Any other checkpoint is read with one.
    config_file = Path(model_dir) / "config.json"
    labels = json.loads(config_file.read_text()).get("id2label") or {} if config_file.exists() else {}
    heads = {} if labels.get("0") == "reward" else {"num_labels": 1}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **heads)
    model.config.pad_token_id = ensure_pad_token(tokenizer)
    return model.to(local_device()).eval(), tokenizer


def local_device() -> torch.device:
    """This process's GPU (its LOCAL_RANK's, when `accelerate launch` started N of them), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


DEFAULT_MAX_LENGTH = 1024


def trained_max_length(model_dir: str | Path) -> int:
    """The tokens per (conversation, response) a reward model was trained on (its metrics.json config):
    it scores best as it learned, since its score is read at the last token of what it sees. 1024 for a
    model rankloop did not train."""
    try:
        config = (read_metrics(model_dir) or {}).get("config") or {}
    except (ValueError, OSError):
        config = {}
    length = config.get("max_length")
    return length if isinstance(length, int) and length > 0 else DEFAULT_MAX_LENGTH


class RewardScorer:
    """Scores with a reward model; `max_length` None reads inputs as long as the model was trained on."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, max_length: int | None = None):
        self.model_dir = Path(model_dir)
        self.model, self.tokenizer = load_reward_model(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length or trained_max_length(model_dir)

    @torch.inference_mode()
    def score_pairs(self, items: list[tuple[str | Messages, str]]) -> list[float]:
        """Scores of (prompt or conversation, response) items, in order. An item that recurs (one answer
        in several pairs or rankings) is read once, and inputs of similar length go together."""
        unique, where = distinct([encode(self.tokenizer, p, r, self.max_length) for p, r in items])
        order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
        scores = [0.0] * len(unique)
        for at in range(0, len(order), self.batch_size):
            idx = order[at : at + self.batch_size]
            ids, mask = pad_batch([unique[i] for i in idx], self.tokenizer.pad_token_id)
            logits = self.model(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)
            ).logits
            for i, score in zip(idx, logits.float()[:, 0].tolist(), strict=True):
                scores[i] = score
        return [scores[i] for i in where]

    def score(self, prompt: str | Messages, responses: list[str]) -> list[float]:
        return self.score_pairs([(prompt, r) for r in responses])

    def score_rankings(self, rows: list[dict]) -> list[list[float]]:
        """Every candidate of every snapshot row, each scored once."""
        flat: list[tuple[str | Messages, str]] = [(conversation(r), t) for r in rows for t in r["texts"]]
        scores = self.score_pairs(flat)
        out, at = [], 0
        for r in rows:
            out.append(scores[at : at + len(r["texts"])])
            at += len(r["texts"])
        return out
