"""`unshell probe`'s transformers backend agrees with its llama.cpp backend on the same model.

The real SmolLM2-135M-Instruct (Q4_1 GGUF) is dequantized once and written twice with the same
float32 values: as an F32 GGUF (``tools/smollm2_finetune.write_gguf``: llama.cpp's layout, q/k
rows in its interleaved rotary order) and as a Hugging Face folder by ``unshell convert``
(``--dtype f32``; rotate-half rows, tokenizer rebuilt from the GGUF). llama.cpp and transformers
then run the same weights in full precision, so their greedy answers and first-token
log-probabilities must agree.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import unshell
from artifacts import fetch
from unshell.behaviour.backends import LlamaCppBackend, TransformersBackend, open_backend
from unshell.behaviour.prompts import load_prompts
from unshell.behaviour.statistics import exact_match, first_token_distance

pytestmark = pytest.mark.slow

PROMPTS = 12
MAX_TOKENS = 8
TOOL = Path(__file__).resolve().parents[1] / "tools" / "smollm2_finetune.py"


def _tool() -> object:
    spec = importlib.util.spec_from_file_location("unshell_tools_smollm2_finetune", TOOL)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def test_transformers_and_llama_cpp_answer_alike_on_the_same_weights(tmp_path: Path) -> None:
    source = fetch("smollm2_gguf")
    tool = _tool()
    gguf_f32 = tmp_path / "smollm2-f32.gguf"
    tool.write_gguf(source, gguf_f32, tool.read_weights(source), matrices="F32", name="SmolLM2 F32")  # type: ignore[attr-defined]
    folder = tmp_path / "smollm2-hf"
    unshell.convert(source, to="llama", output=folder, verify=False, dtype="f32")
    transformers_side = open_backend(str(folder), threads=1)
    assert isinstance(transformers_side, TransformersBackend)
    llama_side = LlamaCppBackend(gguf_f32, threads=1)
    identical, distances = [], []
    try:
        for prompt in load_prompts("general-v1", PROMPTS, 0).prompts:
            ours = transformers_side.complete(prompt, MAX_TOKENS, "completion")
            theirs = llama_side.complete(prompt, MAX_TOKENS, "completion")
            identical.append(exact_match(ours.text, theirs.text))
            distances.append(first_token_distance(theirs.first_top_logprobs, ours.first_top_logprobs))
    finally:
        llama_side.close()
    assert np.mean(identical) >= 0.9, identical
    assert None not in distances and float(np.median(distances)) < 0.05, distances  # type: ignore[arg-type]
