"""Write the seed corpus of ``tools/fuzz.py`` into ``tools/fuzz-corpus/<target>/``.

Every file is small (a few KB at most) and built here from the test helpers (``tests/torchzip.py``,
``tests/gguf_writer.py``, ``tests/hostile_gguf_onnx.py``), so the corpus can be regenerated and
reviewed. Each target gets valid seeds (coverage-guided fuzzing mutates from them) and, named
after their finding, small reproductions of the crash inputs of issue 13 (C1..C6, M1..M6, U2,
U7) and of the crashes the fuzz tests found since (``new-*``). Files that must not crash today
are the acceptance test of those fixes: ``tests/test_fuzz_corpus.py`` replays the corpus.

    python tools/make_fuzz_corpus.py            # (re)writes tools/fuzz-corpus/
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tools" / "fuzz-corpus"
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import gguf_writer as gw  # noqa: E402  (test helpers, importable once tests/ is on the path)
import torchzip  # noqa: E402
from hostile_gguf_onnx import constant_node, field_bytes, field_varint, onnx_model, onnx_tensor  # noqa: E402

MAX_SEED_BYTES = 16_384


def _f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def _safetensors(header: dict[str, object] | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors() -> dict[str, bytes]:
    tensor = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    return {
        "valid.safetensors": _safetensors(
            {"__metadata__": {"format": "pt"}, "model.norm.weight": tensor}, _f32(1, 2, 3, 4)
        ),
        "bf16-and-i8.safetensors": _safetensors(
            {
                "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
                "b": {"dtype": "I8", "shape": [4], "data_offsets": [4, 8]},
            },
            bytes(range(8)),
        ),
        "new-lone-surrogate-name.safetensors": _safetensors(
            b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', _f32(1)
        ),
    }


def gguf() -> dict[str, bytes]:
    zero_size = gw.GGUFParts(
        kvs=[gw.kv_string("general.architecture", "llama")],
        infos=[gw.tensor_info(f"t{i}", [0], gw.F32, 0) for i in range(200)],
    )
    return {
        "valid.gguf": gw.gguf_file(gw.small_model()),
        "tokenizer.gguf": gw.gguf_file(
            gw.GGUFParts(
                kvs=[
                    gw.kv_string("general.architecture", "llama"),
                    gw.kv_string("tokenizer.ggml.model", "llama"),
                    gw.kv_array("tokenizer.ggml.tokens", gw.STRING, ["<unk>", "<s>", "</s>", "▁a", "b"]),
                    gw.kv_array("tokenizer.ggml.token_type", gw.INT32, [2, 3, 3, 1, 1]),
                ]
            )
        ),
        # issue 13, M4 (scaled down from 1.9 million): many zero-size tensors.
        "M4-zero-size-tensors.gguf": gw.gguf_file(zero_size),
    }


def _pt(value: object, **kwargs: object) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "m.pt"
        torchzip.save(path, value, **kwargs)  # type: ignore[arg-type]
        return path.read_bytes()


def _planted_ordered_dict() -> bytes:
    """issue 13, C2: an OrderedDict state dict whose BUILD plants ``items``."""
    storage = torchzip.Storage("0", "F32", _f32(1, 2, 3, 4))
    writer = torchzip.PickleWriter()
    writer.global_(torchzip.Global("collections", "OrderedDict"))
    writer.out += b")R("
    writer.emit("w")
    writer.emit(torchzip.TensorRef(storage, (4,)))
    writer.out += b"u}"
    writer.emit("items")
    writer.global_(torchzip.Global("torch._utils", "_rebuild_tensor_v2"))
    writer.out += b"sb"
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "m.pt"
        torchzip.write_zip(path, writer.finish(), {"0": storage.data})
        return path.read_bytes()


def _duplicate_member() -> bytes:
    """issue 13, U7: two zip members of one name for one storage."""
    import tempfile
    import warnings

    storage = torchzip.Storage("0", "F32", _f32(1, 2, 3, 4))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "m.pt"
        torchzip.save(path, {"w": torchzip.TensorRef(storage, (4,))})
        with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
            warnings.simplefilter("ignore")
            archive.writestr(zipfile.ZipInfo("archive/data/0"), _f32(5, 6, 7, 8))
        return path.read_bytes()


def _empty_container_bomb(count: int) -> bytes:
    """issue 13, M2 (scaled down from 8 million opcodes): a deflated data.pkl of empty lists."""
    import io

    pickle = b"\x80\x02]" + b"]" * count + b"0" * count + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("archive/data.pkl"), pickle, zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo("archive/byteorder"), b"little")
    return out.getvalue()


def pytorch() -> dict[str, bytes]:
    storage = torchzip.Storage("0", "F32", _f32(*range(8)))
    state = OrderedDict(
        [
            ("layers.0.attention.wq.weight", torchzip.TensorRef(storage, (2, 2))),
            ("layers.0.attention.wk.weight", torchzip.TensorRef(storage, (2, 2), stride=(1, 2), offset=4)),
        ]
    )
    view = torchzip.TensorRef(torchzip.Storage("0", "F32", bytes(64)), (32768, 16384), stride=(0, 0))
    return {
        "valid.pt": _pt({"model": state, "iter_num": 3, "config": {"dim": 2}}),
        "C2-planted-items.pt": _planted_ordered_dict(),
        # issue 13, M1: a 64-byte storage viewed as (32768, 16384) float32 with stride (0, 0).
        "M1-zero-stride-view.pt": _pt({"model.layers.0.mlp.up_proj.weight": view}),
        "M2-empty-containers.pt": _empty_container_bomb(200_000),
        "U7-duplicate-member.pt": _duplicate_member(),
    }


def onnx() -> dict[str, bytes]:
    weight = onnx_tensor("w", 1, [2, 2], raw=_f32(1, 2, 3, 4))
    quantized = onnx_tensor("q", 3, [2, 2], raw=bytes(4))
    scale = onnx_tensor("s", 1, [], float_data=[0.5])
    dequantize = (
        field_bytes(1, "q") + field_bytes(1, "s") + field_bytes(2, "dq") + field_bytes(4, "DequantizeLinear")
    )
    empty_nodes = b"".join(field_bytes(1, b"") for _ in range(2000))
    graph = empty_nodes + field_bytes(2, "g") + field_bytes(5, weight)
    return {
        "valid.onnx": onnx_model([weight, quantized, scale], nodes=[dequantize, constant_node("c", scale)]),
        # issue 13, M5 (scaled down from 20 MB): a graph of empty nodes.
        "M5-empty-nodes.onnx": field_varint(1, 8) + field_bytes(7, graph),
    }


def llama2c() -> dict[str, bytes]:
    head = struct.pack("<Ii7iB", 0x616B3432, 1, 8, 8, 1, 1, 1, 4, 1, 1).ljust(256, b"\0")
    floats = 8 + 8 + 64 * 4 + 3 * 64 + 8 + 32  # norms, attention, ffn, final norm, embedding
    body = bytearray(floats * 4)
    infinite = bytearray(body)
    infinite[-4:] = _f32(float("inf"))
    return {"v1.bin": head + bytes(body), "new-infinite-weight.bin": head + bytes(infinite)}


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "num_hidden_layers": 1,
    "vocab_size": 32,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 256,
}


def config() -> dict[str, bytes]:
    huge = json.dumps(CONFIG).replace('"rope_theta": 10000.0', '"rope_theta": 1' + "0" * 4000)
    return {
        "valid.json": json.dumps(CONFIG).encode(),
        # issue 13, C5: rope_theta = 10^4000 (OverflowError in convert's number check).
        "C5-rope-theta-10e4000.json": huge.encode(),
        "C5-max-position-2e64.json": json.dumps({**CONFIG, "max_position_embeddings": 2**64}).encode(),
        "nan-eps.json": json.dumps({**CONFIG, "rms_norm_eps": float("nan")}).encode(),
    }


def card() -> dict[str, bytes]:
    return {
        "valid.md": b"---\nlicense: apache-2.0\nbase_model: meta-llama/Llama-2-7b-hf\ntags: [a, b]\n---\n# card\n",
        # issue 13, C1: an int beyond Python's 4,300-digit str() limit.
        "C1-license-0x-6000-digits.md": b"---\nlicense: 0x" + b"f" * 6000 + b"\n---\n# card\n",
        "new-lone-surrogate.md": b'---\nlicense: "\\ud800"\nbase_model: "a\\udfffb"\n---\n',
        "new-flow-nesting.md": b"---\ntags: " + b"[" * 3000 + b"]" * 3000 + b"\n---\n",
        "aliases.md": b"---\na: &a [x, x, x]\nb: &b [*a, *a, *a]\nbase_model: *b\nlicense: !!binary aGVsbG8=\n---\n",
    }


def params() -> dict[str, bytes]:
    return {
        "valid.json": json.dumps(
            {"dim": 8, "n_layers": 1, "n_heads": 2, "norm_eps": 1e-5, "vocab_size": 16}
        ).encode(),
        "huge-dim.json": b'{"dim": 1' + b"0" * 4000 + b', "n_layers": 1, "n_heads": 2}',
    }


def tokenizer_json() -> dict[str, bytes]:
    bpe = {
        "version": "1.0",
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
        "added_tokens": [{"id": 3, "content": "<s>", "special": True}],
        "pre_tokenizer": {"type": "ByteLevel"},
    }
    return {
        "bpe.json": json.dumps(bpe).encode(),
        "unigram.json": json.dumps(
            {"model": {"type": "Unigram", "vocab": [["▁a", -1.0], ["b", -2.0]]}}
        ).encode(),
        # issue 13, U2: a corrupt tokenizer.json is "not a checkpoint" (12) where 14 fits.
        "U2-corrupt.json": b'{"model": {"type": "BPE", "vocab": {"a": -1}}}',
    }


def vocab_json() -> dict[str, bytes]:
    return {"valid.json": json.dumps({"a": 0, "b": 1, "ab": 2, "Ġa": 3}).encode()}


def merges() -> dict[str, bytes]:
    return {
        "valid.txt": b"#version: 0.2\na b\n",
        # issue 13, M3 (scaled down from 64 MB): merges far longer than their vocabulary.
        "M3-long-merges.txt": b"#version: 0.2\n" + b"a b\n" * 3000,
    }


def vocab_txt() -> dict[str, bytes]:
    return {"valid.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##ing\n"}


def sentencepiece() -> dict[str, bytes]:
    def piece(text: str, kind: int) -> bytes:
        return field_bytes(1, field_bytes(1, text) + b"\x15" + _f32(-1.0) + field_varint(3, kind))

    model = piece("<unk>", 2) + piece("<s>", 3) + piece("</s>", 3) + piece("<0x0A>", 6) + piece("▁a", 1)
    return {"valid.model": model + field_bytes(2, field_varint(3, 2))}


def tiktoken() -> dict[str, bytes]:
    lines = [
        base64.b64encode(token) + b" " + str(rank).encode()
        for rank, token in enumerate((b"a", b"b", b"ab", b" the"))
    ]
    return {"valid.tiktoken": b"\n".join(lines) + b"\n", "duplicate-rank.tiktoken": b"YQ== 0\nYg== 0\n"}


def llama2c_tokenizer() -> dict[str, bytes]:
    tokens = (b"<unk>", b"\n<s>\n", b"\n</s>\n", b"a", b" the")
    out = struct.pack("<i", max(len(t) for t in tokens))
    for token in tokens:
        out += struct.pack("<fi", 0.0, len(token)) + token
    return {"valid.bin": out}


def model_code() -> dict[str, bytes]:
    # .txt, not .py: the seeds are data, not part of the repository's code (ruff would check them).
    valid = b"import torch\n\nclass X(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    return {
        "valid.txt": valid,
        # issue 13, M6 (scaled down from 1.9 million): one list of many ints.
        "M6-long-int-list.txt": b"DATA = [" + b",".join(str(i).encode() for i in range(2500)) + b"]\n",
    }


def _minimal_fingerprint(**changes: object) -> bytes:
    sys.path.insert(0, str(ROOT / "src"))
    from unshell.lineage.fingerprint import MAGIC

    header: dict[str, object] = {
        "version": 1,
        "name": "m",
        "source": "m",
        "format": "safetensors",
        "family": "llama",
        "signature": "llama",
        "hidden": 16,
        "layers": 1,
        "vocab_size": 32,
        "parameters": 0,
        "tokenizer": None,
        "header_hash": "0" * 64,
        "config": {},
        "dtypes": {},
        "tensor_numels": [],
        "sketch_dim": 0,
        "units": [],
        "anchor_names": [],
        "anchor_rows": 0,
        "anchor_stride": 1,
        "anchor_scale": 1.0,
        "total_bytes": 0,
        "arrays": {
            "sketches": {"dtype": "<f2", "shape": [0, 0], "offset": 0},
            "anchors": {"dtype": "<f2", "shape": [0, 0, 0], "offset": 0},
            "hashes": {"dtype": "|u1", "shape": [0, 3, 32], "offset": 0},
        },
        "payload_bytes": 0,
        "payload_sha256": hashlib.sha256(b"").hexdigest(),
    }
    header.update(changes)
    encoded = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(encoded)) + encoded


def _export(records: list[tuple[str, object, bytes]], raw_added: str | None = None) -> bytes:
    lines = [json.dumps({"format": "unshell-fingerprint-library", "version": 1, "count": len(records)})]
    digest = hashlib.sha256()
    for name, added, blob in records:
        record = {
            "name": name,
            "added": added,
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "blob": base64.b64encode(blob).decode(),
        }
        line = json.dumps(record)
        if raw_added is not None:
            line = line.replace(json.dumps(added), raw_added, 1)
        digest.update((line + "\n").encode())
        lines.append(line)
    lines.append(json.dumps({"end": True, "count": len(records), "records_sha256": digest.hexdigest()}))
    return ("\n".join(lines) + "\n").encode()


def library_import() -> dict[str, bytes]:
    fingerprint = _minimal_fingerprint()
    return {
        "valid.jsonl": _export([("org/m", 1_700_000_000.0, fingerprint)]),
        # issue 13, C3: counts at or above 2^64, added = 1e400 / Infinity, with recomputed checksums.
        "C3-hidden-2e64.jsonl": _export(
            [("org/m", 1.0, _minimal_fingerprint(hidden=2**64, parameters=2**70))]
        ),
        "C3-added-1e400.jsonl": _export([("org/m", 12345.0, fingerprint)], raw_added="1e400"),
        "C3-added-infinity.jsonl": _export([("org/m", 12345.0, fingerprint)], raw_added="Infinity"),
    }


def _small_library(path: Path) -> None:
    """A library of one entry, in 512-byte pages so that the file stays a few KB."""
    from unshell.library.store import Library
    from unshell.lineage.fingerprint import Fingerprint

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA page_size = 512")
        db.execute("VACUUM")
    with Library(path) as library:
        library.add(Fingerprint.from_bytes(_minimal_fingerprint()), name="org/m")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = DELETE")
        # Fixed times, so that the corpus is the same bytes on every run.
        db.execute("UPDATE meta SET value = '2026-01-01T00:00:00Z' WHERE key = 'created'")
        db.execute("UPDATE meta SET value = '0->3 at 1767225600' WHERE key = 'migrated'")
        db.execute("UPDATE fingerprints SET added = 1767225600")
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")


def library_file() -> dict[str, bytes]:
    import tempfile

    out: dict[str, bytes] = {}
    tamperings = {
        "valid.sqlite": [],
        # issue 13, C4: the right application id and schema version, the content wrong.
        "C4-no-blobs-table.sqlite": ["DROP TABLE blobs"],
        "C4-hidden-text.sqlite": ["UPDATE fingerprints SET hidden = 'abc'"],
        "C4-added-1e300.sqlite": ["UPDATE fingerprints SET added = 1e300"],
    }
    for name, statements in tamperings.items():
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "lib.sqlite"
            _small_library(path)
            with sqlite3.connect(path) as db:
                for statement in statements:
                    db.execute(statement)
            with sqlite3.connect(path) as db:
                db.execute("VACUUM")
            out[name] = path.read_bytes()
    return out


def web() -> dict[str, bytes]:
    return {
        "library.txt": b"/api/library?q=tiny&family=llama&limit=10&offset=0",
        "inspect.txt": b"/api/inspect?path=tiny&tensors=true",
        "job.txt": b"/api/jobs/0",
        # issue 13, C6.
        "C6-huge-offset.txt": b"/api/library?offset=99999999999999999999",
        "C6-huge-offset-page.txt": b"/library?offset=99999999999999999999",
        # issue 13, C1: the served root holds a model whose card has the 6,000-digit licence.
        "C1-inspect-card.txt": b"/api/inspect?path=card-0x",
        "new-negative-root.txt": b"/inspect?path=tiny&root=-1",
    }


TARGETS = {
    "safetensors": safetensors,
    "gguf": gguf,
    "pytorch": pytorch,
    "onnx": onnx,
    "llama2c": llama2c,
    "config": config,
    "card": card,
    "params": params,
    "tokenizer-json": tokenizer_json,
    "vocab-json": vocab_json,
    "merges": merges,
    "vocab-txt": vocab_txt,
    "sentencepiece": sentencepiece,
    "tiktoken": tiktoken,
    "llama2c-tokenizer": llama2c_tokenizer,
    "model-code": model_code,
    "library-import": library_import,
    "library-file": library_file,
    "web": web,
}


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    total = 0
    for target, make in TARGETS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True)
        for name, data in make().items():
            assert len(data) <= MAX_SEED_BYTES, f"{target}/{name} is {len(data)} bytes"
            (folder / name).write_bytes(data)
            total += 1
    print(f"wrote {total} seeds for {len(TARGETS)} targets under {CORPUS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
