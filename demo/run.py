"""The README's first command: unshell's commands on real checkpoints shipped in the repo.

Makes a Yi-style copy of the real stories260K model (Hugging Face Llama names, with the two norms
renamed ``ln1``/``ln2`` as Yi-34B shipped in November 2023, a config claiming "Yi", and a card
that names no base) and a copy with every name replaced by random tokens, then runs
``unshell inspect`` on each, names a real tokenizer's family, compares two independently trained
real models, audits the Yi-style copy's disclosure, looks the scrambled copy up in a
fingerprint library of the real models, and audits the Yi-style copy again with that library.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "fixtures"

META_TO_HF = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
}


def hf_name(meta_name: str) -> str:
    if meta_name in META_TO_HF:
        return META_TO_HF[meta_name]
    _, index, rest = meta_name.split(".", 2)
    module, _, suffix = rest.rpartition(".")
    return f"model.layers.{index}.{META_TO_HF[module]}.{suffix}"


def make_copies(directory: Path) -> tuple[Path, Path]:
    with open_checkpoint(FIXTURES / "stories260K.bin") as source:
        header = source.metadata["llama2c"]
        weights = {
            name: source.read(name) for name in source.tensors if not source.tensors[name].extra.get("buffer")
        }
    yi = {
        hf_name(n).replace("input_layernorm", "ln1").replace("post_attention_layernorm", "ln2"): v
        for n, v in weights.items()
    }
    config = {
        "architectures": ["YiForCausalLM"],
        "model_type": "Yi",
        "hidden_size": header["dim"],
        "num_hidden_layers": header["n_layers"],
        "num_attention_heads": header["n_heads"],
        "num_key_value_heads": header["n_kv_heads"],
        "intermediate_size": header["hidden_dim"],
        "vocab_size": abs(header["vocab_size"]),
        "tie_word_embeddings": True,
    }
    yi_dir = directory / "yi-style"
    yi_dir.mkdir()
    write_safetensors(yi_dir / "model.safetensors", yi)
    (yi_dir / "config.json").write_text(json.dumps(config, indent=2))
    (yi_dir / "README.md").write_text(
        "---\nlicense: mit\n---\n# Yi-style\n\nOur own model, trained from scratch.\n"
    )

    rng = random.Random(2023)
    tokens: dict[str, str] = {}

    def scramble(name: str) -> str:
        return ".".join(
            p if p.isdigit() else tokens.setdefault(p, f"x{rng.getrandbits(28):07x}") for p in name.split(".")
        )

    scrambled_dir = directory / "scrambled"
    scrambled_dir.mkdir()
    write_safetensors(
        scrambled_dir / "model.safetensors", {scramble(hf_name(n)): v for n, v in weights.items()}
    )
    return yi_dir, scrambled_dir


KNOWN = ("stories260K.bin", "llama2xs.model.bin", "llama-2-tiny-random.gguf")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="unshell-demo-") as tmp:
        yi_dir, scrambled_dir = make_copies(Path(tmp))
        library = str(Path(tmp) / "library.sqlite")
        targets = [
            ("a real llama2.c export (Karpathy's stories260K)", FIXTURES / "stories260K.bin"),
            (
                "a real PyTorch training checkpoint, read without running its pickle",
                FIXTURES / "llama2xs.ckpt.pt",
            ),
            ("a real GGUF carrying Meta's Llama-2 tokenizer", FIXTURES / "llama-2-tiny-random.gguf"),
            ("stories260K renamed the way Yi-34B was (ln1/ln2), config says 'Yi'", yi_dir),
            ("stories260K with every name replaced by random tokens, no config", scrambled_dir),
        ]
        commands = [(title, ["inspect", str(path)]) for title, path in targets]
        commands += [
            (
                "a real tokenizer on its own: which known family is it?",
                ["inspect", str(FIXTURES / "llama2.tokenizer.model")],
            ),
            (
                "two real models of the same shape, trained independently: did one come from the other?",
                ["compare", str(FIXTURES / "stories260K.bin"), str(FIXTURES / "llama2xs.model.bin")],
            ),
            ("the Yi-style copy's disclosure: its card names no base", ["audit", str(yi_dir)]),
            (
                "a fingerprint library of three real models (weights read once, a few hundred KiB each)",
                ["library", "add", "--library", library, *(str(FIXTURES / name) for name in KNOWN)],
            ),
            (
                "the scrambled copy looked up in the library: whose weights are these?",
                ["search", "--library", library, str(scrambled_dir)],
            ),
            (
                "the Yi-style copy audited with the library: a base found that its card never names",
                ["audit", "--library", library, str(yi_dir)],
            ),
        ]
        for title, arguments in commands:
            shown = " ".join(Path(a).name if "/" in a else a for a in arguments)
            print(f"\n=== {title}\n$ unshell {shown}", flush=True)
            code = subprocess.call([sys.executable, "-m", "unshell", *arguments])
            if code != 0:
                return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
