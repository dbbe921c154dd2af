"""Build and pretrain the tiny built-in chat model, so the whole loop runs with no download.

A byte-level BPE tokenizer is trained with `tokenizers` on transcripts from
`policy.corpus`, a small Llama (head_dim 64: vLLM's CPU attention rejects 16) is
initialised and pretrained with transformers' `Trainer`, and both are saved with
`save_pretrained` into a plain Hugging Face directory that vLLM and transformers load
as they are. The chat template renders system prompts. The config is `policy.config.PretrainConfig`.

    python -m policy.pretrain --output-dir models/tiny --size tiny --steps 200
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DataCollatorForLanguageModeling,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from policy import corpus
from policy.config import PretrainConfig
from reward.checkpoint import write_metrics
from reward.configfile import parse_cli

SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
EOS = "<|end|>"
PAD = "<|pad|>"
# Each message is <|role|>text<|end|>; generation starts after <|assistant|> and stops at <|end|>.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

# hidden, layers, heads, intermediate, vocab: "tiny" is ~0.5M parameters (tests),
# "small" ~4M (the demo), "bench" ~20M (bench/sampling.py).
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (128, 2, 2, 256, 1024),
    "small": (256, 4, 4, 704, 2048),
    "bench": (512, 6, 8, 1408, 2048),
}


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, wrapped for transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(
    size: str, tokenizer: PreTrainedTokenizerBase, max_positions: int, seed: int
) -> LlamaForCausalLM:
    hidden, layers, heads, inter, _ = SIZES[size]
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def _train(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    cfg: PretrainConfig,
    workdir: Path,
) -> list[float]:
    """Causal-LM pretraining on packed blocks of the corpus; returns the logged losses."""
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t)["input_ids"])
    blocks = [ids[i : i + cfg.seq_len] for i in range(0, len(ids) - cfg.seq_len, cfg.seq_len)]
    args = TrainingArguments(
        output_dir=str(workdir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.steps // 20),
        logging_steps=max(1, cfg.steps // 20),
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        use_cpu=True,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": blocks}),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def main(cfg: PretrainConfig) -> Path:
    """Build (and unless steps=0, pretrain) the model; write it, its tokenizer and metrics.json."""
    convs = corpus.transcripts(cfg.n_transcripts, seed=cfg.seed)
    tokenizer = build_tokenizer([m["content"] for c in convs for m in c], vocab_size=SIZES[cfg.size][4])
    texts = [str(tokenizer.apply_chat_template(c, tokenize=False)) for c in convs]
    model = build_model(cfg.size, tokenizer, cfg.max_position_embeddings, cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:  # Trainer wants a directory; we keep nothing of it
        losses = _train(model, tokenizer, texts, cfg, Path(workdir)) if cfg.steps else []
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    metrics = {
        "kind": "pretrained",
        "parameters": n_params,
        "loss_curve": losses,
        "config": cfg.model_dump(mode="json"),
    }
    write_metrics(out, metrics)
    (out / "README.md").write_text(
        f"# rankloop tiny model ({cfg.size})\n\nPretrained from scratch on rankloop's generated corpus "
        f"(`policy.corpus`), {n_params:,} parameters, {cfg.steps} steps, seed {cfg.seed}.\n"
        f"Final loss: {losses[-1] if losses else 'n/a (random init)'}.\n"
    )
    return out


if __name__ == "__main__":
    print(main(parse_cli(PretrainConfig, None, __doc__)))
