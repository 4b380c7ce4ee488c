"""What each format says about the model it holds, so that no code above `formats/` tests a format name.

A reader's facts are the ones only it can know:

* ``claims``: identity declarations in the format's own metadata (GGUF ``general.*`` keys, ONNX
  ``metadata_props`` and producer, safetensors ``__metadata__``, a PyTorch checkpoint's training
  config, the Hub repo id a cache path records), each with the key it came from;
* ``can_declare``: whether the format has any field in which a publisher could declare a name, a
  base or an architecture (llama2.c exports have none: a silent file hides nothing);
* ``names_from``: who chose the tensor names: ``publisher`` (safetensors, PyTorch: renaming is
  a choice), ``format`` (GGUF's ``blk.N.attn_q`` convention, llama2.c's positional layout) or
  ``exporter`` (ONNX initializers such as ``onnx::MatMul_470`` are the exporter's);
* ``native_conventions``: alias conventions that are the container's own (not a rename);
* ``family_hint``: the architecture the format itself fixes or declares, in catalog family ids.

Each reader module defines ``format_facts(checkpoint) -> FormatFacts``; `facts_of` dispatches on
the checkpoint's format through the one table below, and adds what the path says (a Hub cache).

A reader whose format fixes a forward pass in its own header (GGUF's ``{arch}.*`` keys, Meta's
``params.json``, a llama2.c header, a training script's ``model_args``) defines
``forward_header(checkpoint)``: a `ForwardHeader`, the hyperparameters under config.json names,
which the converter and its reference forwards read (`forward_header` below) instead of the keys.

A reader whose format carries its own tokenizer (GGUF's ``tokenizer.ggml.*`` keys, the llama2.c
``tokenizer.bin`` beside an export) also defines ``embedded_tokenizer(checkpoint)``, read only when
asked for (`embedded_tokenizer` below): a format-neutral `EmbeddedTokenizer` that
`unshell.tokenizers.export` turns into Hugging Face tokenizer files.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Checkpoint

__all__ = [
    "Claim",
    "EmbeddedTokenizer",
    "FormatFacts",
    "ForwardHeader",
    "claim_text",
    "embedded_tokenizer",
    "embedded_tokenizer_fields",
    "facts_of",
    "forward_header",
    "hub_repo_id",
    "hub_repo_id_of_path",
    "llama_style_config",
    "meta_forward_header",
]

MAX_VALUE_CHARS = 1_000
MAX_LIST_ITEMS = 64

# format -> the reader module that knows it (relative to this package).
_READERS = {
    "gguf": ".gguf",
    "safetensors": ".safetensors",
    "onnx": ".onnx",
    "pytorch": ".pytorch",
    "llama2c": ".llama2c",
    "meta-pth": ".meta",
}


@dataclass(frozen=True)
class Claim:
    """One declared value and where it was read (say ``"GGUF general.license"``)."""

    value: Any
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


@dataclass(frozen=True)
class FormatFacts:
    label: str = "this format"
    can_declare: bool = True
    names_from: str = "publisher"
    native_conventions: frozenset[str] = frozenset()
    family_hint: str | None = None
    claims: tuple[tuple[str, Claim], ...] = field(default_factory=tuple)
    # Said of the format, for people: why nothing is declared, whose names these are.
    naming_note: str | None = None
    # Hyperparameters the format's own header declares, under config.json key names.
    config: dict[str, Any] | None = None
    config_source: str | None = None
    # The vocabulary size the header states, for a tokenizer file that does not state its own
    # (llama2.c's tokenizer.bin beside an export); None where the format states none.
    header_vocab_size: int | None = None


@dataclass(frozen=True)
class ForwardHeader:
    """The forward pass a format's own header fixes, in config.json terms.

    ``values`` holds what the header states, under config.json names (``hidden_size``,
    ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
    ``rotary_dim``, ``rms_norm_eps``, ``rope_theta``, ``rope_scaling``, ``bos_token_id``...); a
    value the header lacks is absent. ``sources`` says where the header keeps each name (say
    ``"params.json norm_eps"``), for messages, also for a name whose value is missing.

    ``graph`` is the reference code whose tensor names and conventions the file follows: ``meta``
    (Meta's and llama2.c's Llama) or ``gguf`` (llama.cpp's graph); both pair adjacent dimensions
    in rotary (llama.cpp permutes q/k rows on export). None: the format fixes no graph (a training
    script's ``model_args`` beside any names). ``architecture`` is the architecture the header
    names (``llama`` where the format is Llama by construction). ``float32``: the header stores
    its reals as float32 (shown rounded to 7 digits). ``scaled_rope``: rope scaling the header
    carries outside ``rope_scaling`` (GGUF's ``rope_freqs`` tensor), said where; ``note``: values
    the format's code fixes rather than its header.
    """

    label: str
    values: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    graph: str | None = None
    architecture: str | None = None
    float32: bool = False
    scaled_rope: str | None = None
    note: str | None = None

    def source(self, key: str) -> str:
        """Where the header keeps ``key`` (the config.json name where it says nothing)."""
        return self.sources.get(key, key)


def forward_header(checkpoint: Checkpoint) -> ForwardHeader | None:
    """The forward pass the checkpoint's format fixes in its own header (None: it fixes none, and
    the hyperparameters are config.json's)."""
    module_name = _READERS.get(checkpoint.format)
    if module_name is None:
        return None
    module = importlib.import_module(module_name, __package__)
    reader = getattr(module, "forward_header", None)
    return None if reader is None else checkpoint.memo("forward_header", lambda: reader(checkpoint))


# Meta's and llama2.c's hyperparameter names -> config.json names, for `meta_forward_values`.
_META_FORWARD_KEYS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "norm_eps": "rms_norm_eps",
    "rope_theta": "rope_theta",
}
# Llama 3.1's apply_scaling constants (Meta's reference model.py), which ``use_scaled_rope`` turns on.
_META_SCALED_ROPE = {
    "type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def meta_forward_header(values: Mapping[str, Any], label: str, *, graph: str | None) -> ForwardHeader:
    """A `ForwardHeader` from Meta's hyperparameter names (``params.json``, llama2.c's ``ModelArgs``
    and header), each name's source being ``"<label> <key>"``."""
    found: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, name in _META_FORWARD_KEYS.items():
        sources[name] = f"{label} {key}"
        if values.get(key) is not None:
            found[name] = values[key]
    if values.get("use_scaled_rope"):
        found["rope_scaling"] = dict(_META_SCALED_ROPE)
        sources["rope_scaling"] = f"{label} use_scaled_rope"
    # Meta's consolidated files and llama2.c exports are Llama by construction; a training
    # script's model_args name no architecture.
    architecture = "llama" if graph is not None else None
    return ForwardHeader(label=label, values=found, sources=sources, graph=graph, architecture=architecture)


# SentencePiece's token types, which llama.cpp's ``tokenizer.ggml.token_type`` uses as they are.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class EmbeddedTokenizer:
    """A tokenizer held by the checkpoint's own files, in the terms the Hugging Face tokenizer needs.

    ``model`` is ``byte-level-bpe`` (GPT-2 style: pieces spelled in GPT-2's byte symbols, ranked
    ``merges``) or ``sentencepiece-bpe`` (pieces with ``\u2581`` for a space, ``<0xNN>`` byte
    pieces, merged by ``scores``: the higher, the earlier). ``token_types`` use SentencePiece's
    numbering (`TOKEN_NORMAL` ... `TOKEN_BYTE`). ``pre_tokenizer`` is llama.cpp's name for how text
    is split before BPE (``tokenizer.ggml.pre``), None where the format does not say.
    """

    model: str
    tokens: tuple[str, ...]
    source: str
    token_types: tuple[int, ...] | None = None
    scores: tuple[float, ...] | None = None
    merges: tuple[tuple[str, str], ...] | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None
    add_eos: bool | None = None
    add_space_prefix: bool | None = None
    pre_tokenizer: str | None = None
    chat_template: str | None = None
    files: tuple[Path, ...] = ()
    """Files read besides the checkpoint's own (say, a llama2.c tokenizer.bin)."""


def embedded_tokenizer(checkpoint: Checkpoint) -> EmbeddedTokenizer | None:
    """The tokenizer the checkpoint's format carries (None: it carries none, or not one unshell reads).

    Raises:
        CorruptCheckpointError: the format's tokenizer fields are malformed.
    """
    module_name = _READERS.get(checkpoint.format)
    if module_name is None:
        return None
    module = importlib.import_module(module_name, __package__)
    reader = getattr(module, "embedded_tokenizer", None)
    return None if reader is None else reader(checkpoint)


def embedded_tokenizer_fields(checkpoint: Checkpoint) -> Mapping[str, Any] | None:
    """The raw key/value fields in which the checkpoint's format stores its own tokenizer (GGUF's
    ``tokenizer.ggml.*``), for readers that parse them themselves; None where there are none.
    """
    module_name = _READERS.get(checkpoint.format)
    if module_name is None:
        return None
    module = importlib.import_module(module_name, __package__)
    reader = getattr(module, "tokenizer_fields", None)
    return None if reader is None else reader(checkpoint)


def facts_of(checkpoint: Checkpoint) -> FormatFacts:
    """The format's facts about ``checkpoint``, plus the Hub repo id its path records (once)."""
    return checkpoint.memo("facts", lambda: _facts_of(checkpoint))


def _facts_of(checkpoint: Checkpoint) -> FormatFacts:
    module_name = _READERS.get(checkpoint.format)
    facts = FormatFacts()
    if module_name is not None:
        module = importlib.import_module(module_name, __package__)
        facts = module.format_facts(checkpoint)
    repo_id = _cache_repo_id(checkpoint)
    if repo_id is not None:
        source = "hf-cache repo id"
        cache_claims = [("name", Claim(repo_id, source)), ("repo_id", Claim(repo_id, source))]
        if "/" in repo_id:
            cache_claims.append(("organization", Claim(repo_id.split("/", 1)[0], source)))
        facts = replace(facts, claims=(*facts.claims, *cache_claims))
    return facts


def _cache_repo_id(checkpoint: Checkpoint) -> str | None:
    """The repo id the Hub cache layout records (set by the folder reader), else the path's."""
    cache = checkpoint.metadata.get("hf_cache")
    recorded = claim_text(cache.get("repo_id")) if isinstance(cache, dict) else claim_text(cache)
    return recorded or hub_repo_id_of_path(checkpoint.path)


def hub_repo_id_of_path(path: Path) -> str | None:
    """``org/name`` when ``path`` is, or lies inside, a Hub cache repo folder ``models--org--name``."""
    for part in (path, *path.parents):
        name = part.name
        if name.startswith("models--") and name.count("--") >= 2:
            org, _, rest = name.removeprefix("models--").partition("--")
            repo = f"{org}/{rest}"
            return repo if _REPO_ID.match(repo) else None
    return None


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_HUB_URL = re.compile(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([^/\s]+/[^/\s?#]+)")


def hub_repo_id(text: str) -> str | None:
    """The ``org/name`` of a Hub URL or a bare repo id; None for anything else (a display name)."""
    match = _HUB_URL.match(text.strip())
    candidate = match.group(1) if match else text.strip()
    candidate = candidate.removesuffix(".git")
    return candidate if _REPO_ID.match(candidate) else None


def claim_text(value: Any) -> str | None:
    """A declared scalar as bounded text; numbers become text, containers and empty strings None.

    Integers are shown only while short: a card can hold a 6,000-digit integer, which Python
    refuses to turn into text (and which is no name, licence or architecture anyway).
    """
    from ..numbers import scalar_text

    return scalar_text(value, MAX_VALUE_CHARS)


def claim_texts(value: Any) -> list[str]:
    """A declared scalar or list as a list of bounded texts (non-text items dropped)."""
    items = value if isinstance(value, list | tuple) else [value]
    return [text for item in items[:MAX_LIST_ITEMS] if (text := claim_text(item)) is not None]


# llama2.c / Meta ``params.json`` / ``model_args`` keys -> config.json names.
_LLAMA_STYLE_KEYS = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "hidden_dim": "intermediate_size",
    "vocab_size": "vocab_size",
    "seq_len": "max_position_embeddings",
    "max_seq_len": "max_position_embeddings",
    "head_dim": "head_dim",
}


def llama_style_config(values: dict[str, Any]) -> dict[str, Any]:
    """Meta's and llama2.c's hyperparameter names as a Llama config.json (integers only)."""
    config: dict[str, Any] = {"model_type": "llama"}
    for key, target in _LLAMA_STYLE_KEYS.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            config[target] = abs(value) if key == "vocab_size" else value
    if config.get("num_key_value_heads") is None and "num_attention_heads" in config:
        config["num_key_value_heads"] = config["num_attention_heads"]
    if "shared_classifier" in values:
        config["tie_word_embeddings"] = bool(values["shared_classifier"])
    elif isinstance(values.get("vocab_size"), int) and values["vocab_size"] < 0:
        config["tie_word_embeddings"] = False
    return config
