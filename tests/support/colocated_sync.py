"""Run by test_policy_train: does TRL's colocated vLLM see the policy's new weights on CPU?

Builds a GRPO trainer with `use_vllm` (colocate) and rankloop's weight sync, then compares vLLM's
log-probabilities of a fixed reply with transformers' before any change, after perturbing every
weight (vLLM still has the old ones), and after the sync. Prints the three largest differences as
JSON. vLLM's offline engine needs the `__main__` guard, hence a script.

    python tests/support/colocated_sync.py MODEL_DIR WORK_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(model_dir: str, work: str) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer
    from vllm import SamplingParams

    from policy.rl import sync_through_reload

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    chat = [{"role": "user", "content": "Tell me about cats."}]
    args = GRPOConfig(
        output_dir=work,
        use_cpu=True,
        bf16=False,
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        use_vllm=True,
        vllm_mode="colocate",
        report_to=[],
        max_completion_length=8,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": chat}] * 8),
        processing_class=tok,
    )
    sync_through_reload(trainer)
    llm = trainer.vllm_generation.llm
    seq = (
        tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"]
        + tok("Cats have whiskers and paws. Many love cats.", add_special_tokens=False)["input_ids"]
    )

    def gap() -> float:
        out = llm.generate(
            [{"prompt_token_ids": seq}], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
        )
        served = torch.tensor([next(iter(d.values())).logprob for d in out[0].prompt_logprobs[1:]])
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, :-1].log_softmax(-1)
        return float((served - logits.gather(1, torch.tensor(seq[1:])[:, None])[:, 0]).abs().max())

    result = {"before": gap()}
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    result["stale"] = gap()
    trainer.vllm_generation.sync_weights()
    result["synced"] = gap()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
