"""Meta's original checkpoint layout: ``params.json`` + ``consolidated.00.pth`` ... ``.NN.pth``.

Each ``consolidated.*.pth`` is a PyTorch zip holding one model-parallel slice. With several
shards, a logical tensor is the concatenation of its slices: column-parallel weights (wq, wk, wv,
w1, w3, output) along axis 0, row-parallel ones (wo, w2) along axis 1, and ``tok_embeddings``
along axis 1 in Llama 1/2 but axis 0 in Llama 3. Norms and ``rope.freqs`` are replicated.
Values are concatenated only when read (`TensorInfo.parts`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import (
    CorruptCheckpointError,
    InconsistentHeaderError,
    NotACheckpointError,
    UnsupportedFormatError,
)
from ..numbers import MAX_WHOLE, Bound, check_numbers
from .base import Checkpoint, TensorInfo, sanitize
from .facts import FormatFacts, ForwardHeader, llama_style_config, meta_forward_header
from .pytorch import read_pytorch
from .safetensors import read_json_file

__all__ = ["find_consolidated_shards", "open_meta_directory"]

PARAMS_LIMIT = 1_000_000
_COUNT = Bound(whole=True, maximum=MAX_WHOLE)
_POSITIVE = Bound(whole=False, above=0.0)
PARAMS_BOUNDS: dict[str, Bound] = {
    **dict.fromkeys(("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "max_seq_len"), _COUNT),
    "vocab_size": Bound(whole=True, minimum=-1, maximum=MAX_WHOLE),  # -1: "set by the tokenizer"
    **dict.fromkeys(("norm_eps", "rope_theta", "ffn_dim_multiplier"), _POSITIVE),
}
"""What each numeric params.json key may hold; a params.json outside them is refused when read."""
SHARD_NAME = re.compile(r"consolidated\.(\d{2,3})\.pth")

COLUMN_PARALLEL = (
    "attention.wq.weight",
    "attention.wk.weight",
    "attention.wv.weight",
    "feed_forward.w1.weight",
    "feed_forward.w3.weight",
)
ROW_PARALLEL = ("attention.wo.weight", "feed_forward.w2.weight")
REPLICATED = ("norm.weight", "rope.freqs")


def _shard_number(path: Path) -> int:
    match = SHARD_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else -1


def find_consolidated_shards(directory: Path) -> list[Path]:
    """``consolidated.NN.pth`` files in shard order (empty when there are none)."""
    shards = [entry for entry in directory.iterdir() if _shard_number(entry) >= 0 and entry.is_file()]
    return sorted(shards, key=_shard_number)


def open_meta_directory(path: Path) -> Checkpoint:
    """Open a Meta-layout directory as one logical checkpoint (format ``meta-pth``).

    Raises:
        NotACheckpointError: no ``consolidated.*.pth`` in the directory.
        CorruptCheckpointError: a shard number missing from the sequence, bad params.json.
        InconsistentHeaderError: shards that disagree on names, dtypes or shapes.
        UnsupportedFormatError: a multi-shard tensor whose sharding rule is unknown.
    """
    where = sanitize(path.name)
    shard_paths = find_consolidated_shards(path)
    if not shard_paths:
        raise NotACheckpointError(f"{where}: no consolidated.NN.pth files")
    numbers = [_shard_number(shard) for shard in shard_paths]
    if numbers != list(range(len(numbers))):
        raise CorruptCheckpointError(
            f"{where}: consolidated shards are numbered {numbers}, expected 0..{len(numbers) - 1}"
        )
    params_path = path / "params.json"
    params = read_json_file(params_path, limit=PARAMS_LIMIT) if params_path.is_file() else None
    if params is not None:
        check_numbers(params, PARAMS_BOUNDS, where="params.json")
    shards = [read_pytorch(shard) for shard in shard_paths]
    notes = [note for shard in shards for note in shard.notes]
    if params is None:
        notes.append(f"{where}: no params.json beside the consolidated shards")
    if len(shards) == 1:
        tensors = shards[0].tensors
    else:
        tensors = _merge_shards(shards, _model_dim(params, shards[0]), where)
    metadata: dict[str, Any] = {"params": params or {}}
    if shards[0].metadata.get("pytorch"):
        metadata["pytorch"] = shards[0].metadata["pytorch"]
    return Checkpoint(
        format="meta-pth",
        path=path,
        files=shard_paths,
        tensors=tensors,
        layout="sharded" if len(shards) > 1 else "file",
        metadata=metadata,
        notes=notes,
    )


def _model_dim(params: dict[str, Any] | None, first_shard: Checkpoint) -> int | None:
    """The model width: params.json's ``dim``, else the input width of wq (never split)."""
    if params is not None and isinstance(params.get("dim"), int) and not isinstance(params["dim"], bool):
        return int(params["dim"])
    wq = first_shard.tensors.get("layers.0.attention.wq.weight")
    return wq.shape[1] if wq is not None and len(wq.shape) == 2 else None


def _merge_shards(shards: list[Checkpoint], dim: int | None, where: str) -> dict[str, TensorInfo]:
    names = list(shards[0].tensors)
    for index, shard in enumerate(shards[1:], start=1):
        if set(shard.tensors) != set(names):
            differing = sorted(set(shard.tensors) ^ set(names))
            raise InconsistentHeaderError(
                f"{where}: shard {index} holds different tensors than shard 0 "
                f"(e.g. {sanitize(differing[0])!r})"
            )
    merged = {}
    for name in names:
        parts = [shard.tensors[name] for shard in shards]
        merged[name] = _logical_tensor(name, parts, dim, where)
    return merged


def _concat_axis(name: str, parts: list[TensorInfo], dim: int | None, where: str) -> int | None:
    """The axis the slices are concatenated along; None for a replicated tensor."""
    if name.endswith(REPLICATED) or len(parts[0].shape) < 2:
        return None
    if name == "output.weight" or name.endswith(COLUMN_PARALLEL):
        return 0
    if name.endswith(ROW_PARALLEL):
        return 1
    if name == "tok_embeddings.weight":
        if dim is None:
            raise UnsupportedFormatError(
                f"{where}: cannot tell how tok_embeddings is split without the model width"
            )
        return 1 if sum(part.shape[1] for part in parts) == dim else 0
    raise UnsupportedFormatError(f"{where}: no known sharding rule for tensor {sanitize(name)!r}")


def _logical_tensor(name: str, parts: list[TensorInfo], dim: int | None, where: str) -> TensorInfo:
    label = f"{where}: tensor {sanitize(name)!r}"
    if len({part.dtype for part in parts}) != 1:
        raise InconsistentHeaderError(f"{label} has different dtypes in different shards")
    axis = _concat_axis(name, parts, dim, where)
    if axis is None:
        if len({part.shape for part in parts}) != 1:
            raise InconsistentHeaderError(f"{label} should be replicated but its shards differ in shape")
        return parts[0]
    first = parts[0].shape
    for part in parts[1:]:
        if len(part.shape) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(part.shape, first, strict=True)) if i != axis
        ):
            raise InconsistentHeaderError(
                f"{label}: shard shapes {[list(p.shape) for p in parts]} do not concatenate"
            )
    shape = tuple(sum(p.shape[axis] for p in parts) if i == axis else size for i, size in enumerate(first))
    return TensorInfo(
        name=name,
        dtype=parts[0].dtype,
        shape=shape,
        file=parts[0].file,
        offset=parts[0].offset,
        nbytes=sum(part.nbytes for part in parts),
        parts=tuple(parts),
        concat_axis=axis,
    )


def format_facts(checkpoint: Checkpoint) -> FormatFacts:
    """Meta's consolidated checkpoints are Llama-family by construction, named in Meta's convention;
    ``params.json`` holds hyperparameters only (no name, base or licence field)."""
    params = checkpoint.metadata.get("params")
    config = llama_style_config(params) if isinstance(params, dict) else None
    return FormatFacts(
        config=config,
        config_source="params.json" if config is not None else None,
        label="Meta consolidated",
        can_declare=False,
        names_from="format",
        native_conventions=frozenset({"meta"}),
        family_hint="llama",
        naming_note="consolidated.*.pth tensors use Meta's own Llama names",
    )


def forward_header(checkpoint: Checkpoint) -> ForwardHeader:
    """``params.json``: Meta's reference code reads it as it is."""
    params = checkpoint.metadata.get("params")
    return meta_forward_header(params if isinstance(params, dict) else {}, "params.json", graph="meta")
