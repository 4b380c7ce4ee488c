"""Derivatives of real models, made here, for the value-added tests (`lineage.change`).

Each is built once and cached under ``~/.cache/unshell-tests/derived/`` (``UNSHELL_TEST_CACHE``
moves the root) in a folder named by the hash of its recipe: the recipe's text, the source
file's digest and, for trained models, tools/zoo.py's. A build happens in a temporary folder renamed into place.

* ``qwen_layer_drop()``: Qwen2.5-Coder-0.5B-Instruct (the official Q4_K_M GGUF) dequantized by
  unshell's reader, four middle layers dropped, stored as a Hugging Face folder in bf16. Nothing
  is trained: the only difference from the GGUF, apart from the missing layers, is bf16 rounding.
* ``stories_derivatives()``: Karpathy's stories260K (tests/data/fixtures) renamed, requantized to
  GGUF Q8_0, LoRA-tuned (rank 4 on q_proj and v_proj, merged), fully fine-tuned and continued
  pretrained, with the lineage zoo's training code (tools/zoo.py: AdamW, one torch thread).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artifacts import cache_root, fetch
from zoo_fixture import zoo_module

HERE = Path(__file__).resolve()
FIXTURES = HERE.parent / "data" / "fixtures"


def _digest(*parts: str | bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else part.encode())
        hasher.update(b"\x00")
    return hasher.hexdigest()[:16]


def _built(name: str, recipe: str, make: Callable[[Path], None]) -> Path:
    """``cache/derived/<name>-<hash of the recipe>/``, made by ``make`` into a temporary folder
    renamed into place. The recipe text says everything that decides the result (a change to how
    a model is made must change its recipe)."""
    key = _digest(recipe)
    final = cache_root() / "derived" / f"{name}-{key}"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        make(staging)
        (staging / "recipe.txt").write_text(recipe + "\n", encoding="utf-8")
        try:
            staging.rename(final)
        except OSError:  # another process finished first
            if not final.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


# --- Qwen2.5-Coder-0.5B with four layers dropped -------------------------------------------------

QWEN_DROPPED = (10, 11, 12, 13)
_GGUF_TO_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def qwen_layer_drop() -> Path:
    """A Hugging Face Qwen2 folder: the GGUF's 24 layers less `QWEN_DROPPED`, renumbered, in bf16."""
    source = fetch("qwen05_gguf")
    recipe = f"qwen2.5-coder-0.5b q4_k_m {source.parent.name}: dequantize, drop layers {QWEN_DROPPED}, bf16"

    def make(out: Path) -> None:
        from unshell.formats import open_checkpoint
        from unshell.formats.safetensors import write_safetensors
        from unshell.inspection import inspect_checkpoint

        with open_checkpoint(source) as checkpoint:
            config = inspect_checkpoint(checkpoint).recognition.config
            layers = int(config["num_hidden_layers"])
            kept = [i for i in range(layers) if i not in QWEN_DROPPED]
            arrays: dict[str, np.ndarray] = {}
            for name in checkpoint.tensors:
                parts = name.split(".")
                if parts[0] == "blk":
                    layer = int(parts[1])
                    if layer in QWEN_DROPPED:
                        continue
                    target = f"model.layers.{kept.index(layer)}.{_GGUF_TO_HF[parts[2]]}.{parts[3]}"
                else:
                    target = {
                        "token_embd.weight": "model.embed_tokens.weight",
                        "output_norm.weight": "model.norm.weight",
                        "output.weight": "lm_head.weight",
                    }[name]
                arrays[target] = np.asarray(checkpoint.read(name), dtype=np.float32)
        write_safetensors(
            out / "model.safetensors", arrays, metadata={"format": "pt"}, dtypes=dict.fromkeys(arrays, "BF16")
        )
        hf_config = {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": config["hidden_size"],
            "intermediate_size": config["intermediate_size"],
            "num_hidden_layers": len(kept),
            "num_attention_heads": config["num_attention_heads"],
            "num_key_value_heads": config["num_key_value_heads"],
            "vocab_size": config["vocab_size"],
            "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
            "tie_word_embeddings": "lm_head.weight" not in arrays,
            "torch_dtype": "bfloat16",
        }
        (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")

    return _built("qwen2.5-coder-0.5b-drop4", recipe, make)


# --- stories260K: rename < requantize < LoRA < fine-tune < continued pretraining ----------------

STORIES = FIXTURES / "stories260K.bin"
STORIES_TOKENIZER = FIXTURES / "stories260K.tok512.bin"
# What was done to stories260K, weakest first (the order the value-added report must find).
STORIES_RECIPES = {
    "rename": "every tensor renamed (values untouched), as a Hugging Face folder",
    "requantize": "stored as GGUF Q8_0 (blocks of 32 values on an 8-bit grid) where a row holds whole "
    "blocks, the FFN's 172-wide down_proj rows as F16, norms F32",
    "lora": "LoRA rank 4 (alpha 8) on q_proj and v_proj, 60 steps x 16x64 tokens, AdamW lr 3e-3, merged",
    "finetune": "full fine-tune, 60 steps x 16x64 tokens, AdamW lr 5e-4 (cosine)",
    "continued": "continued pretraining, 400 steps x 16x64 tokens, AdamW lr 3e-3 (constant)",
}
STORIES_ORDER = tuple(STORIES_RECIPES)


def _q8_0_where_possible(name: str, dims: tuple[int, ...]) -> str:
    if len(dims) == 1:
        return "F32"
    return "Q8_0" if dims[-1] % 32 == 0 else "F16"


def stories_derivatives() -> dict[str, Path]:
    """The five derivatives of stories260K (`STORIES_RECIPES`), trained on Python's documentation
    (the zoo's corpus) tokenized with stories260K's own tokenizer."""
    zoo = zoo_module()
    recipe = json.dumps(STORIES_RECIPES) + _digest(
        STORIES.read_bytes(), (HERE.parent.parent / "tools" / "zoo.py").read_bytes()
    )

    def make(out: Path) -> None:
        params, shape = zoo.load_llama2c(STORIES)
        tokens = zoo.Llama2cTokenizer.read(STORIES_TOKENIZER).encode(zoo.corpora().docs)
        bpe, _ = zoo.tokenizers()  # any 512-token vocabulary: the GGUF format wants one
        tuned_recipe = zoo.Recipe(steps=60, lr=5e-4, warmup=10)
        continued_recipe = zoo.Recipe(steps=400, lr=3e-3, warmup=20, schedule="constant")
        lora_settings = dataclasses.replace(
            zoo.SETTINGS, lora=zoo.Recipe(steps=60, lr=3e-3, warmup=10, weight_decay=0.0)
        )
        with zoo.torch_session(1):
            names = list(zoo.tensor_shapes(shape))
            zoo.save_hf(out / "rename", params, shape, None, rename=zoo.random_names(names, 5))
            zoo.save_gguf(
                out / "requantize.gguf", params, shape, bpe, _q8_0_where_possible, "stories260K Q8_0"
            )
            lora, _ = zoo.lora_finetune(params, shape, tokens, lora_settings, 41)
            zoo.save_hf(out / "lora", lora, shape, None)
            tuned, _ = zoo.train_copy(params, shape, tokens, tuned_recipe, 42)
            zoo.save_hf(out / "finetune", tuned, shape, None)
            continued, _ = zoo.train_copy(params, shape, tokens, continued_recipe, 43)
            zoo.save_hf(out / "continued", continued, shape, None)

    root = _built("stories260K-value", recipe, make)
    return {
        "rename": root / "rename",
        "requantize": root / "requantize.gguf",
        "lora": root / "lora",
        "finetune": root / "finetune",
        "continued": root / "continued",
    }


if __name__ == "__main__":  # build both ahead of a test run: python tests/derivatives.py
    os.nice(10)
    print(stories_derivatives())
    print(qwen_layer_drop())
