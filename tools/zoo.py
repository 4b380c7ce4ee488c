"""The lineage zoo: tiny Llama models whose ancestry is known, to test ``unshell.compare``.

Everything is made here, on CPU, deterministically, from text that ships with Python:

* corpora: Python's own documentation (``pydoc_data.topics``) for pretraining, and the docstrings
  of a fixed list of standard-library modules for fine-tuning (split in two halves);
* a byte-level BPE tokenizer (256 bytes + 256 merges learned on the documentation), written as a
  Hugging Face ``tokenizer.json``;
* a minimal Llama forward pass in torch (RMSNorm, rotate-half RoPE, grouped-query attention,
  SwiGLU), trained with AdamW. transformers is not needed, but the checkpoints are
  ``LlamaForCausalLM`` directories (``config.json`` + ``model.safetensors``) that it loads;
* bases (same data and recipe, different seeds: the hardest negatives; plus other data and another
  recipe), derivatives of ``base-s0`` (fine-tune, heavy continued pretraining, LoRA merge, width and
  depth pruning, layer duplication, vocabulary extension, GGUF quantization, a merge of two
  fine-tunes), function-preserving obfuscations of derivatives, and the real ``stories260K``
  fine-tuned and obfuscated;
* null models: many briefly trained models from different seeds, every pair independent.

The build is cached under ``~/.cache/unshell-tests/zoo/<key>/`` (``UNSHELL_TEST_CACHE`` moves the
root), where ``<key>`` hashes this file, the settings, the corpora, the Python and torch versions
and the real fixtures used. A build happens in a temporary folder renamed into place, under a
lock, so concurrent test processes build once.

    python tools/zoo.py build [--out DIR] [--null N]
    python tools/zoo.py pairs

The manifest ``zoo.json`` records every model's recipe, its relative weight change from its
source (``relative_change``, ||W' - W|| / ||W|| over the tensors they share, measured before any
obfuscation), the layer of its root model each of its layers descends from (``layer_source``),
and, for renamed files, the true name of every tensor (``renamed``: stored -> Hugging Face name).
Pairs come as ``derived`` (with ``how`` in `unshell.compare`'s vocabulary), ``identical`` (same
values stored differently: shards, names, GGUF F32) and ``independent``; ``Pair.layers`` gives,
where known, the layer of ``a`` behind each layer of ``b``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "data" / "fixtures"

MANIFEST = "zoo.json"
FORMAT_VERSION = 1
CACHE_ENV = "UNSHELL_TEST_CACHE"
THREADS_ENV = "UNSHELL_ZOO_THREADS"

Params = dict[str, "torch.Tensor"]

# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One training run: AdamW, linear warmup, then cosine decay (or a constant rate)."""

    steps: int
    lr: float
    batch: int = 16
    seq: int = 64
    warmup: int = 20
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1


@dataclass(frozen=True)
class Settings:
    """Every number that decides what the zoo holds; part of the cache key."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    # 256 (not the usual ~8/3 x hidden) so that ffn_down's rows can be Q4_K (a multiple of 256).
    intermediate: int = 256
    bpe_merges: int = 256
    extra_merges: int = 64
    max_positions: int = 512
    rms_eps: float = 1e-5
    same_recipe_seeds: tuple[int, ...] = (0, 1, 2, 3)
    pretrain: Recipe = Recipe(steps=500, lr=2e-3)
    other_recipe: Recipe = Recipe(steps=260, lr=8e-4, batch=8, seq=128, warmup=40, weight_decay=0.0)
    finetune: Recipe = Recipe(steps=150, lr=2e-4, warmup=10)
    continued: Recipe = Recipe(steps=400, lr=4e-3, warmup=30, schedule="constant")
    lora: Recipe = Recipe(steps=150, lr=3e-3, warmup=10, weight_decay=0.0)
    lora_rank: int = 4
    lora_alpha: float = 8.0
    heal: Recipe = Recipe(steps=150, lr=6e-4, warmup=10)
    upscale: Recipe = Recipe(steps=150, lr=6e-4, warmup=10)
    vocab: Recipe = Recipe(steps=150, lr=6e-4, warmup=10)
    stories: Recipe = Recipe(steps=300, lr=1e-3, warmup=20)
    null: Recipe = Recipe(steps=40, lr=3e-3, warmup=8)
    null_models: int = 28


SETTINGS = Settings()

# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------

DOCSTRING_MODULES_1 = [
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "imaplib",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
]
DOCSTRING_MODULES_2 = [
    "locale",
    "logging",
    "mailbox",
    "math",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "pstats",
    "queue",
    "random",
    "re",
    "runpy",
    "sched",
    "secrets",
    "selectors",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "stat",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "tomllib",
    "trace",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zipimport",
]


def docs_corpus() -> str:
    """Python's reference documentation topics (shipped with every CPython), in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


def docstring_corpus(modules: Sequence[str]) -> str:
    """Docstrings of the modules and of what they define, deduplicated, in a fixed order.

    A module that this interpreter lacks (a minimal build without ssl, say) is skipped; the corpus
    hash is part of the cache key, so that only changes which zoo is built.
    """
    seen: set[str] = set()
    parts: list[str] = []

    def add(obj: object) -> None:
        try:
            with warnings.catch_warnings():  # deprecated aliases (typing.re...) warn when touched
                warnings.simplefilter("ignore")
                doc = inspect.getdoc(obj)
        except Exception:  # some descriptors raise on attribute access
            return
        if doc and len(doc) > 40 and doc not in seen:
            seen.add(doc)
            parts.append(doc)

    for module_name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(module_name)
        except ImportError:
            continue
        add(module)
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            add(obj)
            if inspect.isclass(obj):
                for member_name, member in sorted(vars(obj).items()):
                    if not member_name.startswith("_"):
                        add(member)
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Corpora:
    docs: str
    docstrings_1: str
    docstrings_2: str

    @property
    def docstrings(self) -> str:
        return self.docstrings_1 + "\n\n" + self.docstrings_2

    def digest(self) -> str:
        text = "\x00".join((self.docs, self.docstrings_1, self.docstrings_2))
        return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def corpora() -> Corpora:
    return Corpora(
        docs_corpus(), docstring_corpus(DOCSTRING_MODULES_1), docstring_corpus(DOCSTRING_MODULES_2)
    )


# --------------------------------------------------------------------------------------------
# Byte-level BPE
# --------------------------------------------------------------------------------------------


def _merge_pair(seq: np.ndarray, a: int, b: int, new: int) -> np.ndarray:
    """Replace every non-overlapping occurrence of (a, b), leftmost first, by ``new``."""
    hits = np.flatnonzero((seq[:-1] == a) & (seq[1:] == b))
    if hits.size == 0:
        return seq
    if a == b:  # "aaa" holds two overlapping hits; only the leftmost of each run merges
        kept, last = [], -2
        for hit in hits.tolist():
            if hit != last + 1:
                kept.append(hit)
                last = hit
        hits = np.asarray(kept, dtype=np.int64)
    seq = seq.copy()
    seq[hits] = new
    return np.delete(seq, hits + 1)


@dataclass(frozen=True)
class ByteBPE:
    """Token ``i < 256`` is byte ``i``; token ``256 + r`` joins the pair of merge ``r``.

    Applying the merges in rank order over the whole text equals the usual lowest-rank-first BPE
    (a pair made by merge ``r`` can only be joined by a later merge), so Hugging Face's BPE model
    with a byte-level pre-tokenizer that does not split on a regex gives the same ids.
    """

    merges: tuple[tuple[int, int], ...]

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def encode(self, text: str) -> np.ndarray:
        seq = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
        for rank, (a, b) in enumerate(self.merges):
            seq = _merge_pair(seq, a, b, 256 + rank)
        return seq

    def token_bytes(self) -> list[bytes]:
        table = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            table.append(table[a] + table[b])
        return table

    def decode(self, ids: Sequence[int]) -> str:
        table = self.token_bytes()
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    def token_strings(self) -> list[str]:
        """Tokens in GPT-2's byte-to-unicode spelling, as tokenizer.json and GGUF store them."""
        mapping = _bytes_to_unicode()
        return ["".join(mapping[byte] for byte in token) for token in self.token_bytes()]

    def tokenizer_json(self) -> dict[str, Any]:
        strings = self.token_strings()
        byte_level = {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": False,
        }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": None,
            "decoder": byte_level,
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {s: i for i, s in enumerate(strings)},
                "merges": [[strings[a], strings[b]] for a, b in self.merges],
            },
        }


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def learn_bpe(text: str, merges: int, start: ByteBPE | None = None) -> ByteBPE:
    """Learn ``merges`` more merges on ``text``; ties go to the smallest (left, right) pair.

    A pair whose bytes already spell an existing token is skipped, so that every token's string
    is unique (a tokenizer.json vocabulary needs that).
    """
    base = start or ByteBPE(())
    seq = base.encode(text)
    learned = list(base.merges)
    spelled = {token: i for i, token in enumerate(base.token_bytes())}
    table = base.token_bytes()
    width = base.vocab_size + merges
    for _ in range(merges):
        counts = np.bincount(seq[:-1].astype(np.int64) * width + seq[1:], minlength=width * width)
        while True:
            code = int(np.argmax(counts))
            a, b = divmod(code, width)
            if counts[code] <= 0:
                raise RuntimeError("corpus too small for the requested number of merges")
            if table[a] + table[b] not in spelled:
                break
            counts[code] = -1
        new = len(table)
        learned.append((a, b))
        table.append(table[a] + table[b])
        spelled[table[-1]] = new
        seq = _merge_pair(seq, a, b, new)
    return ByteBPE(tuple(learned))


# --------------------------------------------------------------------------------------------
# A minimal Llama in torch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The architecture numbers of one Llama checkpoint (``LlamaConfig`` fields)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_positions: int = 512

    def config_json(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": self.tied,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Shape:
        heads = int(config["num_attention_heads"])
        rope = config.get("rope_parameters") or {}
        return cls(
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads", heads)),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            rope_theta=float(config.get("rope_theta", rope.get("rope_theta", 10000.0))),
            rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            max_positions=int(config.get("max_position_embeddings", 2048)),
        )


def layer_names(i: int) -> dict[str, str]:
    prefix = f"model.layers.{i}"
    return {
        "q": f"{prefix}.self_attn.q_proj.weight",
        "k": f"{prefix}.self_attn.k_proj.weight",
        "v": f"{prefix}.self_attn.v_proj.weight",
        "o": f"{prefix}.self_attn.o_proj.weight",
        "gate": f"{prefix}.mlp.gate_proj.weight",
        "up": f"{prefix}.mlp.up_proj.weight",
        "down": f"{prefix}.mlp.down_proj.weight",
        "norm1": f"{prefix}.input_layernorm.weight",
        "norm2": f"{prefix}.post_attention_layernorm.weight",
    }


EMBED, FINAL_NORM, LM_HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


def tensor_shapes(shape: Shape) -> dict[str, tuple[int, ...]]:
    """Every tensor of ``LlamaForCausalLM`` (no lm_head when tied), in state-dict order."""
    s = shape
    out: dict[str, tuple[int, ...]] = {EMBED: (s.vocab, s.hidden)}
    for i in range(s.layers):
        n = layer_names(i)
        out[n["q"]] = (s.heads * s.head_dim, s.hidden)
        out[n["k"]] = (s.kv_heads * s.head_dim, s.hidden)
        out[n["v"]] = (s.kv_heads * s.head_dim, s.hidden)
        out[n["o"]] = (s.hidden, s.heads * s.head_dim)
        out[n["gate"]] = (s.intermediate, s.hidden)
        out[n["up"]] = (s.intermediate, s.hidden)
        out[n["down"]] = (s.hidden, s.intermediate)
        out[n["norm1"]] = (s.hidden,)
        out[n["norm2"]] = (s.hidden,)
    out[FINAL_NORM] = (s.hidden,)
    if not s.tied:
        out[LM_HEAD] = (s.vocab, s.hidden)
    return out


def init_params(shape: Shape, seed: int) -> Params:
    """Hugging Face's Llama initialization: N(0, 0.02) matrices, unit norm gains."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    params: Params = {}
    for name, dims in tensor_shapes(shape).items():
        if len(dims) == 1:
            params[name] = torch.ones(dims)
        else:
            params[name] = torch.randn(dims, generator=generator) * 0.02
    return params


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_tables(shape: Shape, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of Hugging Face's rotate-half RoPE, ``[length, head_dim]``."""
    import torch

    inv_freq = 1.0 / (
        shape.rope_theta ** (torch.arange(0, shape.head_dim, 2, dtype=torch.float32) / shape.head_dim)
    )
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    both = torch.cat((angles, angles), dim=-1)
    return both.cos(), both.sin()


def forward(params: Mapping[str, torch.Tensor], shape: Shape, ids: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, time, vocab]`` of ``LlamaForCausalLM`` for token ids ``[batch, time]``."""
    import torch.nn.functional as F

    batch, length = ids.shape
    s = shape
    cos, sin = rope_tables(s, length)
    x = params[EMBED][ids]
    for i in range(s.layers):
        n = layer_names(i)
        h = _rms_norm(x, params[n["norm1"]], s.rms_eps)
        q = (h @ params[n["q"]].T).view(batch, length, s.heads, s.head_dim).transpose(1, 2)
        k = (h @ params[n["k"]].T).view(batch, length, s.kv_heads, s.head_dim).transpose(1, 2)
        v = (h @ params[n["v"]].T).view(batch, length, s.kv_heads, s.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        group = s.heads // s.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + attention.transpose(1, 2).reshape(batch, length, s.heads * s.head_dim) @ params[n["o"]].T
        h = _rms_norm(x, params[n["norm2"]], s.rms_eps)
        x = x + (F.silu(h @ params[n["gate"]].T) * (h @ params[n["up"]].T)) @ params[n["down"]].T
    x = _rms_norm(x, params[FINAL_NORM], s.rms_eps)
    head = params[EMBED] if s.tied else params[LM_HEAD]
    logits: torch.Tensor = x @ head.T
    return logits


def thread_count() -> int:
    """1 unless ``UNSHELL_ZOO_THREADS`` says otherwise.

    On an idle 2-core machine 2 threads train these models only 1.35x faster (46 against 62 ms a
    step), but on a machine busy with other work OpenMP's spinning threads made a step 50 to 80
    times slower (3 to 5 s), which would turn a 6-minute build into hours.

    The count is not part of the cache key: another count may round a few sums differently, which
    changes no property the zoo is used for. The manifest records the count used."""
    return int(os.environ.get(THREADS_ENV) or 1)


@contextlib.contextmanager
def torch_session(threads: int | None = None) -> Iterator[None]:
    """Deterministic kernels on a fixed thread count; the caller's settings come back afterwards."""
    import torch

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads or thread_count())
    torch.use_deterministic_algorithms(True)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _learning_rate(recipe: Recipe, step: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    floor = recipe.lr * recipe.min_lr_ratio
    return floor + (recipe.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def sample_batches(tokens: np.ndarray, recipe: Recipe, seed: int) -> torch.Tensor:
    """``[steps, batch, seq + 1]`` windows at random offsets (the seed decides the data order)."""
    import torch

    generator = torch.Generator().manual_seed(seed + 7_919)
    data = torch.from_numpy(tokens.astype(np.int64))
    starts = torch.randint(
        0, data.numel() - recipe.seq - 1, (recipe.steps, recipe.batch), generator=generator
    )
    offsets = torch.arange(recipe.seq + 1)
    return data[starts[..., None] + offsets]


def train(
    leaves: Params,
    build: Callable[[], Mapping[str, torch.Tensor]],
    shape: Shape,
    tokens: np.ndarray,
    recipe: Recipe,
    seed: int,
) -> list[float]:
    """Train ``leaves`` in place; ``build`` makes the full parameter set from them (LoRA adds to
    frozen weights there). Returns the loss of every step."""
    import torch
    import torch.nn.functional as F

    for tensor in leaves.values():
        tensor.requires_grad_(True)
    decay = [t for t in leaves.values() if t.ndim > 1]
    no_decay = [t for t in leaves.values() if t.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=recipe.lr, betas=(0.9, 0.95), eps=1e-8
    )
    batches = sample_batches(tokens, recipe, seed)
    losses = []
    with torch.enable_grad():
        for step in range(recipe.steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(recipe, step)
            window = batches[step]
            logits = forward(build(), shape, window[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, shape.vocab), window[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(leaves.values()), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
    for tensor in leaves.values():
        tensor.requires_grad_(False)
    return losses


def clone(params: Mapping[str, torch.Tensor]) -> Params:
    return {name: tensor.detach().clone() for name, tensor in params.items()}


def train_copy(
    params: Mapping[str, torch.Tensor], shape: Shape, tokens: np.ndarray, recipe: Recipe, seed: int
) -> tuple[Params, list[float]]:
    """A trained copy of ``params`` (the input is left as it was)."""
    leaves = clone(params)
    losses = train(leaves, lambda: leaves, shape, tokens, recipe, seed)
    return leaves, losses


# --------------------------------------------------------------------------------------------
# Derivations (each returns new parameters, never touching its input)
# --------------------------------------------------------------------------------------------


def lora_finetune(
    params: Mapping[str, torch.Tensor], shape: Shape, tokens: np.ndarray, settings: Settings, seed: int
) -> tuple[Params, list[float]]:
    """Train rank-r adapters on q_proj and v_proj of frozen weights, then merge W += (alpha/r) B A."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    rank, scale = settings.lora_rank, settings.lora_alpha / settings.lora_rank
    frozen = clone(params)
    adapters: Params = {}
    for i in range(shape.layers):
        for role in ("q", "v"):
            name = layer_names(i)[role]
            rows, cols = frozen[name].shape
            adapters[name + ".A"] = torch.randn(rank, cols, generator=generator) / math.sqrt(cols)
            adapters[name + ".B"] = torch.zeros(rows, rank)

    def build() -> Params:
        merged = dict(frozen)
        for i in range(shape.layers):
            for role in ("q", "v"):
                name = layer_names(i)[role]
                merged[name] = frozen[name] + scale * adapters[name + ".B"] @ adapters[name + ".A"]
        return merged

    losses = train(adapters, build, shape, tokens, settings.lora, seed)
    return clone(build()), losses


def prune_width(params: Mapping[str, torch.Tensor], shape: Shape, keep: float = 0.75) -> tuple[Params, Shape]:
    """Keep the top ``keep`` MLP neurons (by |gate row| |up row| |down column|, original order) and
    drop the last KV group with its query heads (Minitron-style structured width pruning)."""
    import torch

    kept_neurons = round(shape.intermediate * keep)
    group = shape.heads // shape.kv_heads
    kv_keep = shape.kv_heads - 1
    d = shape.head_dim
    out = clone(params)
    for i in range(shape.layers):
        n = layer_names(i)
        importance = out[n["gate"]].norm(dim=1) * out[n["up"]].norm(dim=1) * out[n["down"]].norm(dim=0)
        order = torch.sort(torch.argsort(importance, descending=True, stable=True)[:kept_neurons]).values
        out[n["gate"]], out[n["up"]] = out[n["gate"]][order].clone(), out[n["up"]][order].clone()
        out[n["down"]] = out[n["down"]][:, order].clone()
        out[n["q"]] = out[n["q"]][: kv_keep * group * d].clone()
        out[n["k"]] = out[n["k"]][: kv_keep * d].clone()
        out[n["v"]] = out[n["v"]][: kv_keep * d].clone()
        out[n["o"]] = out[n["o"]][:, : kv_keep * group * d].clone()
    pruned = dataclasses.replace(shape, heads=kv_keep * group, kv_heads=kv_keep, intermediate=kept_neurons)
    return out, pruned


def select_layers(
    params: Mapping[str, torch.Tensor], shape: Shape, order: Sequence[int]
) -> tuple[Params, Shape]:
    """A model whose layer ``j`` is a copy of layer ``order[j]`` (depth pruning, duplication)."""
    out = {name: t.clone() for name, t in params.items() if not name.startswith("model.layers.")}
    for j, source in enumerate(order):
        for role, name in layer_names(source).items():
            out[layer_names(j)[role]] = params[name].clone()
    return out, dataclasses.replace(shape, layers=len(order))


def extend_vocab(
    params: Mapping[str, torch.Tensor], shape: Shape, extended: ByteBPE, old: ByteBPE
) -> tuple[Params, Shape]:
    """Add one embedding and one lm_head row per new merge, each the mean of its two parts' rows."""
    import torch

    out = clone(params)
    for name in (EMBED, LM_HEAD):
        rows = list(out[name])
        for a, b in extended.merges[len(old.merges) :]:
            rows.append((rows[a] + rows[b]) / 2)
        out[name] = torch.stack(rows)
    return out, dataclasses.replace(shape, vocab=extended.vocab_size)


def average(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> Params:
    return {name: (first[name] + second[name]) / 2 for name in first}


def relative_change(source: Mapping[str, torch.Tensor], derived: Mapping[str, torch.Tensor]) -> float:
    """||W' - W|| / ||W|| over every tensor the two share by name and shape."""
    num = den = 0.0
    for name, tensor in source.items():
        other = derived.get(name)
        if other is not None and other.shape == tensor.shape:
            num += float((other.double() - tensor.double()).pow(2).sum())
            den += float(tensor.double().pow(2).sum())
    return math.sqrt(num / den)


def layer_changes(
    source: Mapping[str, torch.Tensor], derived: Mapping[str, torch.Tensor], shape: Shape
) -> list[float]:
    changes = []
    for i in range(shape.layers):
        names = set(layer_names(i).values())
        changes.append(round(relative_change({k: v for k, v in source.items() if k in names}, derived), 4))
    return changes


# --------------------------------------------------------------------------------------------
# Function-preserving obfuscations (computed in float64, stored as float32)
# --------------------------------------------------------------------------------------------

READERS = ("q", "k", "v", "gate", "up")
WRITERS = ("o", "down")


def _generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(seed)


def _as64(params: Mapping[str, torch.Tensor]) -> Params:
    import torch

    return {name: t.detach().to(torch.float64) for name, t in params.items()}


def _as32(params: Mapping[str, torch.Tensor]) -> Params:
    import torch

    return {name: t.to(torch.float32).contiguous() for name, t in params.items()}


def untie(params: Mapping[str, torch.Tensor], shape: Shape) -> tuple[Params, Shape]:
    out = dict(params)
    if shape.tied:
        out[LM_HEAD] = out[EMBED].clone()
    return out, dataclasses.replace(shape, tied=False)


def fold_norms(params: Mapping[str, torch.Tensor], shape: Shape) -> tuple[Params, Shape]:
    """Multiply every RMSNorm gain into the matrices that read its output; gains become 1."""
    import torch

    out, shape = untie(_as64(params), shape)
    for i in range(shape.layers):
        n = layer_names(i)
        for norm, roles in (("norm1", ("q", "k", "v")), ("norm2", ("gate", "up"))):
            for role in roles:
                out[n[role]] = out[n[role]] * out[n[norm]]
            out[n[norm]] = torch.ones_like(out[n[norm]])
    out[LM_HEAD] = out[LM_HEAD] * out[FINAL_NORM]
    out[FINAL_NORM] = torch.ones_like(out[FINAL_NORM])
    return _as32(out), shape


def transform_residual(
    params: Mapping[str, torch.Tensor], shape: Shape, matrix: torch.Tensor, gain_order: torch.Tensor | None
) -> Params:
    """Residual stream x -> x M for an orthogonal M: readers W M, writers M^T W, embedding E M.

    RMSNorm commutes with M only when the gains are uniform (after `fold_norms`) or M is a
    signed permutation, whose gains move with it (``gain_order``)."""
    out = _as64(params)
    m = matrix.to(out[EMBED].dtype)
    out[EMBED] = out[EMBED] @ m
    if not shape.tied:
        out[LM_HEAD] = out[LM_HEAD] @ m
    for i in range(shape.layers):
        n = layer_names(i)
        for role in READERS:
            out[n[role]] = out[n[role]] @ m
        for role in WRITERS:
            out[n[role]] = m.T @ out[n[role]]
        if gain_order is not None:
            out[n["norm1"]] = out[n["norm1"]][gain_order]
            out[n["norm2"]] = out[n["norm2"]][gain_order]
    if gain_order is not None:
        out[FINAL_NORM] = out[FINAL_NORM][gain_order]
    return _as32(out)


def random_orthogonal(size: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed)."""
    import torch

    gaussian = torch.randn(size, size, generator=_generator(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))


def rotate_residual(params: Mapping[str, torch.Tensor], shape: Shape, seed: int) -> tuple[Params, Shape]:
    folded, shape = fold_norms(params, shape)
    return transform_residual(folded, shape, random_orthogonal(shape.hidden, seed), None), shape


def signed_permute_residual(
    params: Mapping[str, torch.Tensor], shape: Shape, seed: int
) -> tuple[Params, Shape]:
    import torch

    generator = _generator(seed)
    order = torch.randperm(shape.hidden, generator=generator)
    signs = torch.randint(0, 2, (shape.hidden,), generator=generator).to(torch.float64) * 2 - 1
    matrix = torch.zeros(shape.hidden, shape.hidden, dtype=torch.float64)
    matrix[order, torch.arange(shape.hidden)] = signs  # x'_j = s_j x_order[j]
    return transform_residual(params, shape, matrix, order), shape


def permute_mlp(params: Mapping[str, torch.Tensor], shape: Shape, seed: int) -> tuple[Params, Shape]:
    import torch

    generator = _generator(seed)
    out = dict(params)
    for i in range(shape.layers):
        n = layer_names(i)
        order = torch.randperm(shape.intermediate, generator=generator)
        out[n["gate"]], out[n["up"]] = out[n["gate"]][order], out[n["up"]][order]
        out[n["down"]] = out[n["down"]][:, order]
    return _as32(out), shape


def permute_heads(params: Mapping[str, torch.Tensor], shape: Shape, seed: int) -> tuple[Params, Shape]:
    """Permute the KV groups, and the query heads inside each group, consistently in q/k/v/o.

    Identity draws are redrawn, so that every layer's q/o (and k/v, with more than one KV head)
    really moves."""
    import torch

    generator = _generator(seed)
    group, d = shape.heads // shape.kv_heads, shape.head_dim
    out = dict(params)
    for i in range(shape.layers):
        n = layer_names(i)
        while True:
            kv_order = torch.randperm(shape.kv_heads, generator=generator)
            q_order = torch.cat(
                [kv * group + torch.randperm(group, generator=generator) for kv in kv_order.tolist()]
            )
            kv_moved = shape.kv_heads == 1 or not torch.equal(kv_order, torch.arange(shape.kv_heads))
            if shape.heads == 1 or (kv_moved and not torch.equal(q_order, torch.arange(shape.heads))):
                break
        q_rows = (q_order[:, None] * d + torch.arange(d)).reshape(-1)
        kv_rows = (kv_order[:, None] * d + torch.arange(d)).reshape(-1)
        out[n["q"]] = out[n["q"]][q_rows]
        out[n["k"]], out[n["v"]] = out[n["k"]][kv_rows], out[n["v"]][kv_rows]
        out[n["o"]] = out[n["o"]][:, q_rows]
    return _as32(out), shape


def _log_uniform(count: int, generator: torch.Generator, spread: float = 4.0) -> torch.Tensor:
    import torch

    return torch.exp((torch.rand(count, generator=generator, dtype=torch.float64) * 2 - 1) * math.log(spread))


def scale_pairs(params: Mapping[str, torch.Tensor], shape: Shape, seed: int) -> tuple[Params, Shape]:
    """Scale one matrix and inversely the next: up rows / down columns per neuron, v rows / o
    columns per value dimension, q rows / k rows per (KV group, rotary pair) so RoPE commutes."""
    generator = _generator(seed)
    group, d = shape.heads // shape.kv_heads, shape.head_dim
    out = _as64(params)
    for i in range(shape.layers):
        n = layer_names(i)
        neuron = _log_uniform(shape.intermediate, generator)
        out[n["up"]] = out[n["up"]] * neuron[:, None]
        out[n["down"]] = out[n["down"]] / neuron
        value = _log_uniform(shape.kv_heads * d, generator)
        out[n["v"]] = out[n["v"]] * value[:, None]
        per_query_head = value.reshape(shape.kv_heads, 1, d).expand(shape.kv_heads, group, d).reshape(-1)
        out[n["o"]] = out[n["o"]] / per_query_head
        pair = _log_uniform(shape.kv_heads * d // 2, generator).reshape(shape.kv_heads, d // 2)
        per_kv_row = pair.repeat(1, 2).reshape(-1)  # dims j and j + d/2 of a head share one scale
        out[n["k"]] = out[n["k"]] / per_kv_row[:, None]
        per_q_row = (
            pair.repeat(1, 2).reshape(shape.kv_heads, 1, d).expand(shape.kv_heads, group, d).reshape(-1)
        )
        out[n["q"]] = out[n["q"]] * per_q_row[:, None]
    return _as32(out), shape


def random_names(names: Sequence[str], seed: int) -> dict[str, str]:
    """true name -> a random token of 8 hex characters (dotted like a module path)."""
    generator = np.random.default_rng(seed)
    mapping, used = {}, set()
    for name in names:
        while True:
            token = "w." + generator.bytes(4).hex() + ".weight"
            if token not in used:
                break
        used.add(token)
        mapping[name] = token
    return mapping


OBFUSCATIONS: dict[str, Callable[[Mapping[str, Any], Shape, int], tuple[Params, Shape]]] = {
    "permute-mlp": permute_mlp,
    "permute-heads": permute_heads,
    "signed-permute-residual": signed_permute_residual,
    "rotate-residual": rotate_residual,
    "scale-pairs": scale_pairs,
}


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def _numpy(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: t.detach().to("cpu").float().numpy() for name, t in params.items()}


def save_hf(
    directory: Path,
    params: Mapping[str, torch.Tensor],
    shape: Shape,
    tokenizer: ByteBPE | None,
    rename: Mapping[str, str] | None = None,
    shards: int = 1,
) -> None:
    """A ``LlamaForCausalLM`` folder: config.json, model.safetensors (F32) or ``shards`` shards
    with an index, tokenizer.json."""
    from unshell.formats.safetensors import write_safetensors, write_sharded_safetensors

    directory.mkdir(parents=True, exist_ok=True)
    wanted = tensor_shapes(shape)
    arrays = {
        (rename or {}).get(name, name): value for name, value in _numpy(params).items() if name in wanted
    }
    if shards > 1:
        ordered = {(rename or {}).get(name, name): arrays[(rename or {}).get(name, name)] for name in wanted}
        write_sharded_safetensors(directory, ordered, shards, metadata={"format": "pt"})
    else:
        write_safetensors(directory / "model.safetensors", arrays, metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(shape.config_json(), indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        text = json.dumps(tokenizer.tokenizer_json(), ensure_ascii=False)
        (directory / "tokenizer.json").write_text(text, encoding="utf-8")


def load_hf(directory: Path, true_names: Mapping[str, str] | None = None) -> tuple[Params, Shape]:
    """Read a folder written by `save_hf` back; ``true_names`` maps stored names to HF names (the
    manifest's ``renamed``)."""
    import torch

    from unshell.formats import open_checkpoint

    shape = Shape.from_config(json.loads((directory / "config.json").read_text(encoding="utf-8")))
    stored_to_true = dict(true_names or {})
    with open_checkpoint(directory / "model.safetensors") as checkpoint:
        params = {
            stored_to_true.get(name, name): torch.from_numpy(
                np.array(checkpoint.read(name), dtype=np.float32)
            )
            for name in checkpoint.tensors
        }
    return params, shape


def meta_to_hf_rows(matrix: np.ndarray, heads: int) -> np.ndarray:
    """Interleaved (Meta, llama.cpp) rotary rows -> rotate-half (Hugging Face) rows."""
    rows, cols = matrix.shape
    return matrix.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def hf_to_meta_rows(matrix: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `meta_to_hf_rows` (llama.cpp's ``LlamaModel.permute``)."""
    rows, cols = matrix.shape
    return matrix.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_names(shape: Shape) -> dict[str, str]:
    """Hugging Face name -> llama.cpp name for the llama architecture."""
    names = {EMBED: "token_embd.weight", FINAL_NORM: "output_norm.weight", LM_HEAD: "output.weight"}
    gguf_roles = {
        "q": "attn_q",
        "k": "attn_k",
        "v": "attn_v",
        "o": "attn_output",
        "gate": "ffn_gate",
        "up": "ffn_up",
        "down": "ffn_down",
        "norm1": "attn_norm",
        "norm2": "ffn_norm",
    }
    for i in range(shape.layers):
        for role, name in layer_names(i).items():
            names[name] = f"blk.{i}.{gguf_roles[role]}.weight"
    return names


QuantChooser = Callable[[str, tuple[int, ...]], str]


def q8_0_everywhere(name: str, dims: tuple[int, ...]) -> str:
    return "F32" if len(dims) == 1 else "Q8_0"


def q4_0_everywhere(name: str, dims: tuple[int, ...]) -> str:
    return "F32" if len(dims) == 1 else "Q4_0"


def q4_k_where_possible(name: str, dims: tuple[int, ...]) -> str:
    """llama.cpp's rule for a Q4_K file: Q4_K when a row is a multiple of 256, else its fallback
    Q5_0; output.weight gets Q8_0 (llama.cpp gives it Q6_K, which gguf-py cannot write)."""
    if len(dims) == 1:
        return "F32"
    if name == "output.weight":
        return "Q8_0"
    return "Q4_K" if dims[-1] % 256 == 0 else "Q5_0"


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """ggml's Q4_K blocks (256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128
    bytes of 4-bit values) for a float32 ``[rows, cols]`` array, cols a multiple of 256.

    gguf-py has no Q4_K quantizer; this is the plain (non-iterative) min/max variant of
    llama.cpp's ``quantize_row_q4_K_ref``, decoded by the same ``y = d*sc*q - dmin*m``.
    """
    rows, cols = values.shape
    x = values.astype(np.float32).reshape(-1, 8, 32)
    low = np.minimum(x.min(axis=2), 0.0)
    scale = (x.max(axis=2) - low) / 15.0
    minimum = -low
    d = (scale.max(axis=1) / 63.0).astype(np.float16)
    dmin = (minimum.max(axis=1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.ceil(scale / d32), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmin32 > 0, np.rint(minimum / dmin32), 0).clip(0, 63).astype(np.uint8)
        step = (d32 * sc)[..., None]
        offset = (dmin32 * m)[..., None]
        q = np.where(step > 0, np.rint((x + offset) / step), 0).clip(0, 15).astype(np.uint8)
    blocks = np.zeros((x.shape[0], 144), dtype=np.uint8)
    blocks[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    blocks[:, 2:4] = dmin.view(np.uint8).reshape(-1, 2)
    blocks[:, 4:8] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    blocks[:, 8:12] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    blocks[:, 12:16] = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    pairs = q.reshape(-1, 4, 2, 32)
    blocks[:, 16:] = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(-1, 128)
    return blocks.reshape(rows, cols // 256 * 144)


def _encode_gguf_tensor(values: np.ndarray, kind: str) -> tuple[np.ndarray, Any]:
    import gguf
    from gguf.quants import quantize

    qtype = gguf.GGMLQuantizationType[kind]
    if kind == "F32":
        return values.astype(np.float32), None
    if kind == "Q4_K":
        return quantize_q4_k(values), qtype
    return quantize(values.astype(np.float32), qtype), qtype


def save_gguf(
    path: Path,
    params: Mapping[str, torch.Tensor],
    shape: Shape,
    tokenizer: ByteBPE,
    choose: QuantChooser,
    title: str,
) -> dict[str, str]:
    """A llama-architecture GGUF (q/k rows in llama.cpp's interleaved rotary order). Returns the
    type each tensor was stored as."""
    import gguf

    if shape.tied:
        params, shape = untie(params, shape)
    names = gguf_names(shape)
    arrays = _numpy(params)
    temp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(temp, "llama")
    writer.add_name(title)
    writer.add_context_length(shape.max_positions)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_vocab_size(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    strings = tokenizer.token_strings()
    writer.add_token_list(strings)
    writer.add_token_types([1] * len(strings))
    writer.add_token_merges([f"{strings[a]} {strings[b]}" for a, b in tokenizer.merges])
    stored = {}
    for name, dims in tensor_shapes(shape).items():
        values = arrays[name]
        role = name.rsplit(".", 2)[-2]
        if role == "q_proj":
            values = hf_to_meta_rows(values, shape.heads)
        elif role == "k_proj":
            values = hf_to_meta_rows(values, shape.kv_heads)
        kind = choose(names[name], dims)
        data, qtype = _encode_gguf_tensor(np.ascontiguousarray(values), kind)
        writer.add_tensor(names[name], data, raw_dtype=qtype)
        stored[names[name]] = kind
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    temp.replace(path)
    return stored


def load_gguf(path: Path, shape: Shape) -> Params:
    """Dequantize a file written by `save_gguf` (through unshell's reader) into HF names and order."""
    import torch

    from unshell.formats import open_checkpoint

    names = gguf_names(shape)
    params: Params = {}
    with open_checkpoint(path) as checkpoint:
        for hf_name, gguf_name in names.items():
            if gguf_name not in checkpoint.tensors:
                continue
            values = np.array(checkpoint.read(gguf_name), dtype=np.float32)
            if hf_name.endswith("q_proj.weight"):
                values = meta_to_hf_rows(values, shape.heads)
            elif hf_name.endswith("k_proj.weight"):
                values = meta_to_hf_rows(values, shape.kv_heads)
            params[hf_name] = torch.from_numpy(np.ascontiguousarray(values))
    return params


# --------------------------------------------------------------------------------------------
# The real stories260K (llama2.c)
# --------------------------------------------------------------------------------------------

STORIES = FIXTURES / "stories260K.bin"
STORIES_TOKENIZER = FIXTURES / "stories260K.tok512.bin"
LLAMA2XS = FIXTURES / "llama2xs.model.bin"


def load_llama2c(path: Path) -> tuple[Params, Shape]:
    """A llama2.c export as HF-named float32 tensors (wq/wk rows permuted Meta -> HF)."""
    import torch

    from unshell.formats import open_checkpoint

    with open_checkpoint(path) as checkpoint:
        header = checkpoint.metadata["llama2c"]
        shape = Shape(
            hidden=header["dim"],
            layers=header["n_layers"],
            heads=header["n_heads"],
            kv_heads=header["n_kv_heads"],
            head_dim=header["dim"] // header["n_heads"],
            intermediate=header["hidden_dim"],
            vocab=header["vocab_size"],
            tied=bool(header["shared_classifier"]),
            max_positions=header["seq_len"],
        )
        meta = {name: np.array(checkpoint.read(name), dtype=np.float32) for name in checkpoint.tensors}
    params: Params = {
        EMBED: torch.from_numpy(meta["tok_embeddings.weight"]),
        FINAL_NORM: torch.from_numpy(meta["norm.weight"]),
    }
    if not shape.tied:
        params[LM_HEAD] = torch.from_numpy(meta["output.weight"])
    for i in range(shape.layers):
        n, p = layer_names(i), f"layers.{i}."
        params[n["q"]] = torch.from_numpy(meta_to_hf_rows(meta[p + "attention.wq.weight"], shape.heads))
        params[n["k"]] = torch.from_numpy(meta_to_hf_rows(meta[p + "attention.wk.weight"], shape.kv_heads))
        params[n["v"]] = torch.from_numpy(meta[p + "attention.wv.weight"])
        params[n["o"]] = torch.from_numpy(meta[p + "attention.wo.weight"])
        params[n["gate"]] = torch.from_numpy(meta[p + "feed_forward.w1.weight"])
        params[n["down"]] = torch.from_numpy(meta[p + "feed_forward.w2.weight"])
        params[n["up"]] = torch.from_numpy(meta[p + "feed_forward.w3.weight"])
        params[n["norm1"]] = torch.from_numpy(meta[p + "attention_norm.weight"])
        params[n["norm2"]] = torch.from_numpy(meta[p + "ffn_norm.weight"])
    return params, shape


@dataclass(frozen=True)
class Llama2cTokenizer:
    """llama2.c's ``tokenizer.bin``: pieces with scores; encoding merges the best-scored pair."""

    pieces: tuple[bytes, ...]
    scores: tuple[float, ...]

    @classmethod
    def read(cls, path: Path) -> Llama2cTokenizer:
        data = path.read_bytes()
        position, pieces, scores = 4, [], []
        while position < len(data):
            score, length = struct.unpack_from("<fi", data, position)
            position += 8
            pieces.append(data[position : position + length])
            scores.append(score)
            position += length
        return cls(tuple(pieces), tuple(scores))

    @functools.cached_property
    def lookup(self) -> dict[bytes, int]:
        return {piece: i for i, piece in reversed(list(enumerate(self.pieces)))}

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids: list[int] = []
        for char in chunk:
            raw = char.encode("utf-8")
            if raw in self.lookup:
                ids.append(self.lookup[raw])
            else:
                ids.extend(byte + 3 for byte in raw)  # byte fallback: <0x00> is id 3
        while True:
            best, best_score = -1, -math.inf
            for j in range(len(ids) - 1):
                merged = self.lookup.get(self.pieces[ids[j]] + self.pieces[ids[j + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best, best_score = j, self.scores[merged]
            if best < 0:
                return ids
            joined = self.lookup[self.pieces[ids[best]] + self.pieces[ids[best + 1]]]
            ids[best : best + 2] = [joined]

    def encode(self, text: str) -> np.ndarray:
        """run.c's encode with a dummy prefix, applied per space-led word (pieces never span one)."""
        cache: dict[str, list[int]] = {}
        ids: list[int] = []
        for chunk in re.findall(r" ?[^ ]+| ", " " + text):
            if chunk not in cache:
                cache[chunk] = self._encode_chunk(chunk)
            ids.extend(cache[chunk])
        return np.asarray(ids, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# The zoo: manifest, pairs, cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """Two checkpoints and the truth about them. ``how`` uses `unshell.compare`'s vocabulary
    (empty for an independent pair)."""

    name: str
    a: Path
    b: Path
    how: frozenset[str]
    note: str = ""
    layers: tuple[int, ...] | None = None
    """For each layer of ``b``, the layer of ``a`` it descends from, where the zoo knows it."""


@dataclass
class Zoo:
    """A built zoo. Paths are model folders (HF layout), GGUF files or the real fixtures."""

    root: Path
    manifest: dict[str, Any]
    models: dict[str, Path]
    bases: dict[str, Path]
    derived: list[Pair]
    independent: list[Pair]
    identical: list[Pair] = field(default_factory=list)
    settings: Settings = field(default=SETTINGS)
    null_root: Path | None = None

    def info(self, name: str) -> dict[str, Any]:
        """What the manifest records about one model (recipe, source, changes, renames...)."""
        return dict(self.manifest["models"][name])

    def null_pairs(self, n: int) -> list[Pair]:
        """``n`` independent pairs among briefly trained same-recipe models (built and cached on
        first use: the fewest models whose pairs number at least ``n``)."""
        count = max(self.settings.null_models, math.ceil((1 + math.sqrt(1 + 8 * n)) / 2))
        paths = ensure_null_models(count, self.settings, self.null_root)
        pairs = [
            Pair(
                f"null-{i:03d}-vs-{j:03d}",
                paths[i],
                paths[j],
                frozenset(),
                "same data and recipe, different seeds",
            )
            for gap in range(1, count)
            for i in range(count - gap)
            for j in (i + gap,)
        ]
        return pairs[:n]


def resolve(reference: str, root: Path) -> Path:
    return (
        FIXTURES / reference.removeprefix("fixture:")
        if reference.startswith("fixture:")
        else root / reference
    )


def zoo_from_manifest(root: Path, settings: Settings = SETTINGS, null_root: Path | None = None) -> Zoo:
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    models = {name: resolve(entry["path"], root) for name, entry in manifest["models"].items()}

    def pairs(kind: str) -> list[Pair]:
        return [
            Pair(
                p["name"],
                models[p["a"]],
                models[p["b"]],
                frozenset(p["how"]),
                p.get("note", ""),
                None if p.get("layers") is None else tuple(p["layers"]),
            )
            for p in manifest[kind]
        ]

    return Zoo(
        root=root,
        manifest=manifest,
        models=models,
        bases={name: models[name] for name in manifest["bases"]},
        derived=pairs("derived"),
        independent=pairs("independent"),
        identical=pairs("identical"),
        settings=settings,
        null_root=null_root,
    )


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "unshell-tests")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_key(settings: Settings = SETTINGS) -> str:
    """Everything the zoo's bytes depend on: this code, the settings, the corpora, the fixtures,
    and the Python and torch versions (kernels and pydoc topics change between them)."""
    import torch

    parts = [
        _file_digest(Path(__file__)),
        json.dumps(dataclasses.asdict(settings), sort_keys=True),
        corpora().digest(),
        _file_digest(STORIES),
        _file_digest(STORIES_TOKENIZER),
        _file_digest(LLAMA2XS),
        f"{sys.version_info[0]}.{sys.version_info[1]}",
        torch.__version__,
        str(FORMAT_VERSION),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_into(final: Path, make: Callable[[Path], object]) -> None:
    """Run ``make`` on a fresh temporary folder beside ``final``, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        make(temp)
        temp.chmod(0o755)  # mkdtemp's 0700 would otherwise stay on the finished folder
        temp.rename(final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def load_or_build(
    root: Path | None = None, settings: Settings = SETTINGS, log: Callable[[str], None] | None = None
) -> Zoo:
    """The cached zoo, built first if needed (several processes: one builds, the others wait)."""
    base = (root or cache_root()) / "zoo"
    key = cache_key(settings)
    final = base / key
    if not (final / MANIFEST).is_file():
        with _locked(base / f".{key}.lock"):  # per key: a stale build elsewhere must not block this one
            if not (final / MANIFEST).is_file():
                build_into(final, lambda temp: build(temp, settings, log))
    return zoo_from_manifest(final, settings, (root or cache_root()) / "zoo-null")


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


class _Builder:
    """Accumulates models and their manifest entries while the zoo is built."""

    def __init__(self, out: Path, settings: Settings, log: Callable[[str], None]) -> None:
        self.out = out
        self.settings = settings
        self.log = log
        self.models: dict[str, dict[str, Any]] = {}
        self.params: dict[str, tuple[Params, Shape]] = {}
        self.started = time.monotonic()

    def add_hf(
        self,
        name: str,
        params: Params,
        shape: Shape,
        tokenizer: ByteBPE | None,
        *,
        source: str | None,
        how: Sequence[str],
        recipe: str,
        aligned: Mapping[str, torch.Tensor] | None = None,
        layer_source: Sequence[int] | None = None,
        rename: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        losses: Sequence[float] = (),
        shards: int = 1,
    ) -> None:
        save_hf(self.out / "models" / name, params, shape, tokenizer, rename, shards)
        entry: dict[str, Any] = {
            "path": f"models/{name}",
            "format": "hf",
            "config": shape.config_json(),
            "source": source,
            "how": list(how),
            "recipe": recipe,
            "layer_source": list(layer_source) if layer_source is not None else list(range(shape.layers)),
        }
        if aligned is not None:
            entry["relative_change"] = round(relative_change(aligned, params), 4)
            entry["relative_change_by_layer"] = layer_changes(aligned, params, shape)
        if losses:
            entry["loss_first"] = round(float(np.mean(losses[:10])), 4)
            entry["loss_last"] = round(float(np.mean(losses[-10:])), 4)
        if rename:
            entry["renamed"] = {stored: true for true, stored in rename.items()}
        entry.update(extra or {})
        self.models[name] = entry
        self.params[name] = (params, shape)
        self.log(f"{time.monotonic() - self.started:7.1f}s  {name}: {_summary(entry)}")

    def obfuscate(
        self,
        name: str,
        source: str,
        steps: Sequence[str],
        seed: int,
        *,
        rename: bool = False,
        tokenizer: ByteBPE | None,
    ) -> None:
        params, shape = self.params[source]
        for offset, step in enumerate(steps):
            params, shape = OBFUSCATIONS[step](params, shape, seed + offset)
        entry = self.models[source]
        applied = [*steps, *(["rename"] if rename else [])]
        # Renaming alone changes no value: `identical` to the source, not `obfuscated`.
        extra: dict[str, Any] = {"obfuscations": applied, "relative_change": entry.get("relative_change")}
        extra["how_from_source"] = ["obfuscated"] if steps else []
        if not steps:
            extra["identical"] = True
        self.add_hf(
            name,
            params,
            shape,
            tokenizer,
            source=source,
            how=sorted({*entry["how"], "obfuscated"} if steps else set(entry["how"])),
            recipe="obfuscation of " + source + ": " + ", ".join(applied),
            layer_source=entry["layer_source"],
            rename=random_names(list(tensor_shapes(shape)), seed + 97) if rename else None,
            extra=extra,
        )

    def add_gguf(
        self, name: str, source: str, tokenizer: ByteBPE, choose: QuantChooser, *, identical: bool = False
    ) -> None:
        params, shape = self.params[source]
        path = self.out / "models" / f"{name}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = save_gguf(path, params, shape, tokenizer, choose, name)
        entry = self.models[source]
        counts: dict[str, int] = {}
        for kind in stored.values():
            counts[kind] = counts.get(kind, 0) + 1
        self.models[name] = {
            "path": f"models/{name}.gguf",
            "format": "gguf",
            "config": dataclasses.replace(shape, tied=False).config_json(),
            "source": source,
            "how": sorted(set(entry["how"]) if identical else {*entry["how"], "quantized"}),
            "recipe": f"GGUF of {source}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())),
            "how_from_source": [] if identical else ["quantized"],
            "layer_source": entry["layer_source"],
            "gguf_types": stored,
            "relative_change": entry.get("relative_change"),
            "quantization_error": round(relative_change(_untied(params, shape), load_gguf(path, shape)), 4),
        }
        if identical:
            self.models[name]["identical"] = True
        self.log(f"{time.monotonic() - self.started:7.1f}s  {name}: {_summary(self.models[name])}")


def _untied(params: Params, shape: Shape) -> Params:
    return untie(params, shape)[0]


def _summary(entry: Mapping[str, Any]) -> str:
    bits = [entry["recipe"]]
    if entry.get("relative_change") is not None:
        bits.append(f"rel change {entry['relative_change']}")
    if "loss_last" in entry:
        bits.append(f"loss {entry['loss_first']} -> {entry['loss_last']}")
    if "quantization_error" in entry:
        bits.append(f"quantization error {entry['quantization_error']}")
    return "; ".join(bits)


def _recipe_text(recipe: Recipe, data: str, seed: int) -> str:
    return (
        f"{recipe.steps} steps x {recipe.batch}x{recipe.seq} tokens, AdamW lr {recipe.lr:g} "
        f"({recipe.schedule}, warmup {recipe.warmup}, wd {recipe.weight_decay:g}) on {data}, seed {seed}"
    )


def base_shape(settings: Settings, vocab: int) -> Shape:
    return Shape(
        hidden=settings.hidden,
        layers=settings.layers,
        heads=settings.heads,
        kv_heads=settings.kv_heads,
        head_dim=settings.hidden // settings.heads,
        intermediate=settings.intermediate,
        vocab=vocab,
        rms_eps=settings.rms_eps,
        max_positions=settings.max_positions,
    )


@functools.cache
def tokenizers(settings: Settings = SETTINGS) -> tuple[ByteBPE, ByteBPE]:
    """The base tokenizer (learned on the docs) and its extension (more merges on docstrings)."""
    text = corpora()
    base = learn_bpe(text.docs, settings.bpe_merges)
    return base, learn_bpe(text.docstrings, settings.extra_merges, start=base)


def build(
    out: Path, settings: Settings = SETTINGS, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Build the whole zoo into ``out`` (an empty folder) and write its manifest."""
    started = time.monotonic()
    with torch_session():
        b = _Builder(out, settings, log or (lambda _: None))
        text = corpora()
        bpe, bpe_extended = tokenizers(settings)
        docs = bpe.encode(text.docs)
        doc1, doc2 = bpe.encode(text.docstrings_1), bpe.encode(text.docstrings_2)
        b.log(
            f"{time.monotonic() - started:7.1f}s  corpora: docs {len(docs)} tokens, docstrings {len(doc1)} + {len(doc2)}"
        )
        shape = base_shape(settings, bpe.vocab_size)
        bases = _build_bases(b, settings, shape, bpe, docs, np.concatenate([doc1, doc2]))
        _build_derivatives(b, settings, bpe, bpe_extended, docs, doc1, doc2, text.docstrings)
        _build_obfuscations(b, bpe, bpe_extended)
        _build_identical(b, bpe)
        _build_stories(b, settings, text.docs)
        manifest = {
            "format_version": FORMAT_VERSION,
            "settings": dataclasses.asdict(settings),
            "python": sys.version.split()[0],
            "torch": _torch_version(),
            "threads": thread_count(),
            "corpora": {
                "docs": {"source": "pydoc_data.topics", "characters": len(text.docs), "tokens": len(docs)},
                "docstrings_1": {
                    "modules": DOCSTRING_MODULES_1,
                    "characters": len(text.docstrings_1),
                    "tokens": len(doc1),
                },
                "docstrings_2": {
                    "modules": DOCSTRING_MODULES_2,
                    "characters": len(text.docstrings_2),
                    "tokens": len(doc2),
                },
            },
            "models": b.models,
            "bases": [*bases, "stories260K", "llama2xs"],
            "derived": [dataclasses.asdict(p) for p in _derived_pairs(b.models)],
            "identical": [dataclasses.asdict(p) for p in _identical_pairs(b.models)],
            "independent": [dataclasses.asdict(p) for p in _independent_pairs(b.models, bases)],
            "build_seconds": round(time.monotonic() - started, 1),
        }
    (out / MANIFEST).write_text(
        json.dumps(manifest, indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    return manifest


def _json_default(value: object) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _build_bases(
    b: _Builder, s: Settings, shape: Shape, bpe: ByteBPE, docs: np.ndarray, docstrings: np.ndarray
) -> list[str]:
    names = []
    runs = [(f"base-s{seed}", seed, s.pretrain, docs, "docs") for seed in s.same_recipe_seeds]
    other = len(s.same_recipe_seeds)
    runs.append((f"base-docstrings-s{other}", other, s.pretrain, docstrings, "docstrings (other data)"))
    runs.append((f"base-recipe2-s{other + 1}", other + 1, s.other_recipe, docs, "docs (other recipe)"))
    for name, seed, recipe, tokens, data in runs:
        params, losses = train_copy(init_params(shape, seed), shape, tokens, recipe, seed)
        b.add_hf(
            name,
            params,
            shape,
            bpe,
            source=None,
            how=[],
            recipe=_recipe_text(recipe, data, seed),
            losses=losses,
        )
        names.append(name)
    return names


def _build_derivatives(
    b: _Builder,
    s: Settings,
    bpe: ByteBPE,
    bpe_extended: ByteBPE,
    docs: np.ndarray,
    doc1: np.ndarray,
    doc2: np.ndarray,
    docstring_text: str,
) -> None:
    base, shape = b.params["base-s0"]
    docstrings = np.concatenate([doc1, doc2])
    mixed = np.concatenate([docstrings, docs])

    def trained(
        name: str,
        start: Params,
        start_shape: Shape,
        data: tuple[np.ndarray, str],
        recipe: Recipe,
        seed: int,
        how: str,
        prefix: str = "",
        tokenizer: ByteBPE = bpe,
        layer_source: Sequence[int] | None = None,
    ) -> None:
        tokens, label = data
        params, losses = train_copy(start, start_shape, tokens, recipe, seed)
        b.add_hf(
            name,
            params,
            start_shape,
            tokenizer,
            source="base-s0",
            how=[how],
            aligned=start,
            losses=losses,
            recipe=prefix + _recipe_text(recipe, label, seed),
            layer_source=layer_source,
        )

    part1, part2 = (doc1, "docstrings part 1"), (doc2, "docstrings part 2")
    trained("finetune", base, shape, part1, s.finetune, 11, "finetune")
    trained("finetune-2", base, shape, part2, s.finetune, 12, "finetune")
    trained(
        "continued-pretraining",
        base,
        shape,
        (mixed, "docstrings + docs"),
        s.continued,
        13,
        "continued-pretraining",
    )

    lora, losses = lora_finetune(base, shape, doc1, s, 14)
    b.add_hf(
        "lora-merged",
        lora,
        shape,
        bpe,
        source="base-s0",
        how=["finetune"],
        aligned=base,
        losses=losses,
        recipe=f"LoRA rank {s.lora_rank} alpha {s.lora_alpha:g} on q_proj, v_proj, merged; "
        + _recipe_text(s.lora, "docstrings part 1", 14),
    )

    pruned, narrow = prune_width(base, shape)
    trained(
        "pruned-width",
        pruned,
        narrow,
        (docs, "docs"),
        s.heal,
        15,
        "pruned",
        prefix=f"MLP {shape.intermediate}->{narrow.intermediate} neurons, KV groups {shape.kv_heads}->"
        f"{narrow.kv_heads} (heads {shape.heads}->{narrow.heads}), healed: ",
    )

    dropped = shape.layers // 2
    order = [i for i in range(shape.layers) if i != dropped]
    shallow, shallow_shape = select_layers(base, shape, order)
    trained(
        "pruned-depth",
        shallow,
        shallow_shape,
        (docs, "docs"),
        s.heal,
        16,
        "pruned",
        prefix=f"dropped layer {dropped}, healed: ",
        layer_source=order,
    )

    order = [*range(shape.layers // 2 + 1), *range(1, shape.layers)]  # 0 1 2 1 2 3 for 4 layers
    deep, deep_shape = select_layers(base, shape, order)
    trained(
        "upscaled",
        deep,
        deep_shape,
        (docs, "docs"),
        s.upscale,
        17,
        "upscaled",
        prefix=f"layers {shape.layers}->{len(order)} by duplication {order}, then trained: ",
        layer_source=order,
    )

    extended, wide_vocab = extend_vocab(base, shape, bpe_extended, bpe)
    trained(
        "vocab-extended",
        extended,
        wide_vocab,
        (bpe_extended.encode(docstring_text), "docstrings (extended tokenizer)"),
        s.vocab,
        18,
        "vocab-extended",
        tokenizer=bpe_extended,
        prefix=f"vocabulary {shape.vocab}->{wide_vocab.vocab} (new rows = mean of their two parts), then trained: ",
    )

    b.add_hf(
        "merged",
        average(b.params["finetune"][0], b.params["finetune-2"][0]),
        shape,
        bpe,
        source="base-s0",
        how=["merged"],
        aligned=base,
        recipe="elementwise average of finetune and finetune-2",
    )

    b.add_gguf("q8_0", "base-s0", bpe, q8_0_everywhere)
    b.add_gguf("q4_k", "base-s0", bpe, q4_k_where_possible)
    b.add_gguf("q4_0", "base-s0", bpe, q4_0_everywhere)

    other, _ = b.params["base-s1"]
    params, losses = train_copy(other, shape, doc1, s.finetune, 21)
    b.add_hf(
        "base-s1-finetune",
        params,
        shape,
        bpe,
        source="base-s1",
        how=["finetune"],
        aligned=other,
        losses=losses,
        recipe=_recipe_text(s.finetune, "docstrings part 1", 21),
    )


ALL_OBFUSCATIONS = ("permute-mlp", "permute-heads", "rotate-residual", "scale-pairs")


def _build_obfuscations(b: _Builder, bpe: ByteBPE, bpe_extended: ByteBPE) -> None:
    plan: list[tuple[str, str, tuple[str, ...], bool]] = [
        ("finetune-renamed", "finetune", (), True),
        ("finetune-rotated", "finetune", ("rotate-residual",), False),
        ("continued-pretraining-permuted-mlp", "continued-pretraining", ("permute-mlp",), False),
        ("continued-pretraining-rotated", "continued-pretraining", ("rotate-residual", "permute-mlp"), True),
        ("lora-merged-permuted-heads", "lora-merged", ("permute-heads",), False),
        ("pruned-width-scaled", "pruned-width", ("scale-pairs", "permute-heads"), False),
        ("pruned-depth-signed-permuted", "pruned-depth", ("signed-permute-residual",), False),
        ("upscaled-scaled", "upscaled", ("scale-pairs",), False),
        ("merged-signed-permuted", "merged", ("signed-permute-residual", "permute-mlp"), True),
        ("vocab-extended-obfuscated", "vocab-extended", ALL_OBFUSCATIONS, True),
        ("base-s0-obfuscated", "base-s0", ALL_OBFUSCATIONS, True),
        ("base-s1-obfuscated", "base-s1", ALL_OBFUSCATIONS, True),
    ]
    for index, (name, source, steps, rename) in enumerate(plan):
        tokenizer = bpe_extended if source == "vocab-extended" else bpe
        b.obfuscate(name, source, steps, 1000 + 31 * index, rename=rename, tokenizer=tokenizer)
    b.add_gguf("finetune-rotated-q8_0", "finetune-rotated", bpe, q8_0_everywhere)


def _build_identical(b: _Builder, bpe: ByteBPE) -> None:
    """The same values as base-s0, stored differently: what `identical` means."""
    params, shape = b.params["base-s0"]
    common: dict[str, Any] = {
        "source": "base-s0",
        "how": [],
        "extra": {"identical": True, "relative_change": 0.0},
    }
    b.add_hf(
        "base-s0-resharded", params, shape, bpe, recipe="base-s0 in 3 safetensors shards", shards=3, **common
    )
    b.add_hf(
        "base-s0-renamed",
        params,
        shape,
        bpe,
        recipe="base-s0 with every tensor renamed",
        rename=random_names(list(tensor_shapes(shape)), 4242),
        **common,
    )
    b.add_gguf("base-s0-f32", "base-s0", bpe, lambda name, dims: "F32", identical=True)


def _build_stories(b: _Builder, s: Settings, docs_text: str) -> None:
    params, shape = load_llama2c(STORIES)
    b.models["stories260K"] = {
        "path": "fixture:stories260K.bin",
        "format": "llama2c",
        "config": shape.config_json(),
        "source": None,
        "how": [],
        "recipe": "real: Karpathy's TinyStories 260K (llama2.c)",
        "layer_source": list(range(shape.layers)),
    }
    b.params["stories260K"] = (params, shape)
    b.models["llama2xs"] = {
        "path": "fixture:llama2xs.model.bin",
        "format": "llama2c",
        "source": None,
        "how": [],
        "recipe": "real: llama2xs (llama2.c), trained independently of stories260K",
        "layer_source": list(range(5)),
    }
    tokens = Llama2cTokenizer.read(STORIES_TOKENIZER).encode(docs_text)
    tuned, losses = train_copy(params, shape, tokens, s.stories, 31)
    b.add_hf(
        "stories260K-finetune",
        tuned,
        shape,
        None,
        source="stories260K",
        how=["finetune"],
        aligned=params,
        losses=losses,
        recipe=_recipe_text(s.stories, "docs (stories260K's own tokenizer)", 31),
    )
    b.obfuscate(
        "stories260K-finetune-obfuscated",
        "stories260K-finetune",
        ALL_OBFUSCATIONS,
        2000,
        rename=True,
        tokenizer=None,
    )
    b.obfuscate(
        "stories260K-obfuscated",
        "stories260K",
        ("rotate-residual", "permute-heads"),
        2100,
        rename=False,
        tokenizer=None,
    )


def _pair(
    name: str,
    a: str,
    b: str,
    how: Sequence[str] | frozenset[str],
    note: str = "",
    layers: Sequence[int] | None = None,
) -> Pair:
    return Pair(name, Path(a), Path(b), frozenset(how), note, None if layers is None else tuple(layers))


def _layers_from(models: Mapping[str, Mapping[str, Any]], a: str, b: str) -> list[int] | None:
    """For each layer of ``b``, the layer of ``a`` that descends from the same root layer (-1:
    none does); None when that is ambiguous (``a`` holds duplicated layers)."""
    a_layers, b_layers = models[a]["layer_source"], models[b]["layer_source"]
    if a_layers == b_layers:
        return list(range(len(b_layers)))
    mapping = []
    for root_layer in b_layers:
        matches = [i for i, layer in enumerate(a_layers) if layer == root_layer]
        if len(matches) > 1:
            return None
        mapping.append(matches[0] if matches else -1)
    return mapping


def _derived_pairs(models: Mapping[str, Mapping[str, Any]]) -> list[Pair]:
    """Every model against its source (unless `identical` to it) and its root, plus siblings."""
    pairs = []
    for name, entry in models.items():
        source = entry.get("source")
        if not source:
            continue
        if not entry.get("identical"):
            how = entry.get("how_from_source", entry["how"])
            pairs.append(
                _pair(
                    f"{source}->{name}",
                    source,
                    name,
                    how,
                    entry["recipe"],
                    _layers_from(models, source, name),
                )
            )
        ancestor = _root_of(models, name)
        if ancestor != source:
            layers = _layers_from(models, ancestor, name)
            pairs.append(_pair(f"{ancestor}->{name}", ancestor, name, entry["how"], f"via {source}", layers))
    siblings = [
        ("finetune", "finetune-2", ["finetune"], "two fine-tunes of base-s0 on different data"),
        ("finetune", "continued-pretraining", ["finetune", "continued-pretraining"], "siblings from base-s0"),
        ("pruned-depth", "upscaled", ["pruned", "upscaled"], "siblings from base-s0, different depths"),
        ("finetune", "merged", ["merged"], "merged contains finetune"),
        ("q4_k", "finetune-rotated-q8_0", ["quantized", "finetune", "obfuscated"], "siblings from base-s0"),
        (
            "lora-merged",
            "vocab-extended-obfuscated",
            ["finetune", "vocab-extended", "obfuscated"],
            "siblings from base-s0",
        ),
    ]
    pairs += [
        _pair(f"{a}<->{b}", a, b, how, note, _layers_from(models, a, b)) for a, b, how, note in siblings
    ]
    return pairs


def _identical_pairs(models: Mapping[str, Mapping[str, Any]]) -> list[Pair]:
    return [
        _pair(
            f"{entry['source']}=={name}",
            entry["source"],
            name,
            [],
            entry["recipe"],
            _layers_from(models, entry["source"], name),
        )
        for name, entry in models.items()
        if entry.get("identical")
    ]


def _root_of(models: Mapping[str, Mapping[str, Any]], name: str) -> str:
    while models[name].get("source"):
        name = models[name]["source"]
    return name


def _independent_pairs(models: Mapping[str, Mapping[str, Any]], bases: Sequence[str]) -> list[Pair]:
    """Different roots: every pair of bases, every descendant of base-s0 against every other base,
    descendants of base-s1 against base-s0's family, and the real models against each other."""
    pairs = []
    for i, first in enumerate(bases):
        for second in bases[i + 1 :]:
            same = first.startswith("base-s") and second.startswith("base-s")
            pairs.append(
                _pair(
                    f"{first}<->{second}",
                    first,
                    second,
                    [],
                    "same data and recipe, different seeds" if same else "different seeds, data or recipe",
                )
            )
    family0 = [name for name in models if _root_of(models, name) == "base-s0" and name != "base-s0"]
    for name in family0:
        for other in bases[1:]:
            pairs.append(
                _pair(
                    f"{other}<->{name}",
                    other,
                    name,
                    [],
                    "a derivative of base-s0 against an independent base",
                )
            )
    family1 = [name for name in models if _root_of(models, name) == "base-s1" and name != "base-s1"]
    for name in family1:
        for other in (
            "base-s0",
            "finetune",
            "finetune-2",
            "merged",
            "base-s0-obfuscated",
            "finetune-rotated",
        ):
            pairs.append(_pair(f"{other}<->{name}", other, name, [], "base-s1's family against base-s0's"))
    stories = [name for name in models if _root_of(models, name) == "stories260K"]
    for name in stories:
        pairs.append(
            _pair(
                f"{name}<->llama2xs",
                name,
                "llama2xs",
                [],
                "independent real models (same shapes but the FFN width)",
            )
        )
    pairs.append(
        _pair("stories260K<->base-s0", "stories260K", "base-s0", [], "independent, different widths")
    )
    return pairs


# --------------------------------------------------------------------------------------------
# Null models
# --------------------------------------------------------------------------------------------

NULL_SEED_OFFSET = 10_000


def ensure_null_models(
    count: int, settings: Settings = SETTINGS, directory: Path | None = None
) -> list[Path]:
    """``count`` briefly trained models (seeds 10000, 10001, ...), each cached on its own."""
    root = (directory or cache_root() / "zoo-null") / cache_key(settings)
    paths = [root / f"null-{i:03d}" for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not (path / "config.json").is_file()]
    if missing:
        with _locked(root.parent / f".{root.name}.lock"), torch_session():
            bpe, _ = tokenizers(settings)
            docs = bpe.encode(corpora().docs)
            shape = base_shape(settings, bpe.vocab_size)
            for i in missing:
                if (paths[i] / "config.json").is_file():
                    continue
                seed = NULL_SEED_OFFSET + i

                def make(temp: Path, seed: int = seed) -> None:
                    params, losses = train_copy(init_params(shape, seed), shape, docs, settings.null, seed)
                    save_hf(temp, params, shape, bpe)
                    recipe = _recipe_text(settings.null, "docs", seed)
                    record = {"recipe": recipe, "loss_first": losses[0], "loss_last": losses[-1]}
                    (temp / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

                build_into(paths[i], make)
    return paths


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _print_zoo(zoo: Zoo) -> None:
    print(
        f"zoo: {zoo.root}  ({_directory_size(zoo.root) / 1e6:.1f} MB, built in {zoo.manifest['build_seconds']} s)"
    )
    for name, entry in zoo.manifest["models"].items():
        print(f"  {name:40s} {entry.get('relative_change', '')!s:>8}  {entry['recipe']}")
    print(f"derived pairs ({len(zoo.derived)}):")
    for pair in zoo.derived:
        print(f"  {pair.name:60s} {','.join(sorted(pair.how))}")
    print(f"independent pairs ({len(zoo.independent)}):")
    for pair in zoo.independent:
        print(f"  {pair.name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the zoo (or find it in the cache)")
    build_command.add_argument("--out", type=Path, help="build into this folder instead of the cache")
    build_command.add_argument(
        "--null", type=int, default=0, help="also build the null models for this many pairs"
    )
    commands.add_parser("pairs", help="list the cached zoo's models and pairs")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, flush=True)

    if args.command == "build" and args.out is not None:
        if args.out.exists():
            parser.error(f"{args.out} exists; give a new folder")
        build_into(args.out.resolve(), lambda temp: build(temp, SETTINGS, log))
        zoo = zoo_from_manifest(args.out.resolve())
    else:
        zoo = load_or_build(log=log)
    if args.command == "build" and args.null:
        started = time.monotonic()
        pairs = zoo.null_pairs(args.null)
        print(f"null pairs: {len(pairs)} ready in {time.monotonic() - started:.1f} s")
    _print_zoo(zoo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
