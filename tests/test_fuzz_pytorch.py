"""Fuzz: PyTorch zip checkpoints, built opcode by opcode (`torchzip`) and mutated from the real
fixture's pickle. Only unshell errors may escape (see `fuzz_support`); two findings of issue 13
have their own properties here (planted OrderedDict attributes, duplicate zip members), and one
bounds the memory a tensor view may make unshell allocate."""

from __future__ import annotations

import pickletools
import struct
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import torchzip
from fuzz_support import (
    INTERESTING_U64,
    SPECIAL_NUMBERS,
    exercise_checkpoint,
    field_mutated,
    fuzz_settings,
    mostly,
    mutated,
    names,
    reaches,
    scratch_dir,
    unshell_errors_only,
)
from torchzip import Raw, Storage, TensorRef, TensorV3

FIXTURE = Path(__file__).resolve().parent / "data" / "fixtures" / "llama2xs.ckpt.pt"

META_NAMES = (
    "tok_embeddings.weight",
    "layers.0.attention_norm.weight",
    "layers.0.attention.wq.weight",
    "layers.0.attention.wk.weight",
    "layers.0.attention.wv.weight",
    "layers.0.attention.wo.weight",
    "layers.0.ffn_norm.weight",
    "layers.0.feed_forward.w1.weight",
    "layers.0.feed_forward.w2.weight",
    "layers.0.feed_forward.w3.weight",
    "norm.weight",
    "output.weight",
    "_orig_mod.norm.weight",
)
V3_DTYPES = (
    "float32",
    "bfloat16",
    "float16",
    "float8_e4m3fn",
    "int64",
    "uint16",
    "complex64",
    "complex128",
    "qint8",
)
SMALL_INTS = st.one_of(st.integers(0, 8), st.sampled_from(INTERESTING_U64), st.integers(-3, -1))


# -- pickle gadgets: opcode snippets that leave exactly one value on the stack ------------------------


@dataclass(frozen=True, repr=False)
class Gadget(Raw):
    """Opcodes with a short name for hypothesis' reports."""

    label: str = ""

    def __repr__(self) -> str:
        return f"Gadget({self.label!r})"


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _unicode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")  # pickles may carry lone surrogates
    return b"X" + struct.pack("<I", len(raw)) + raw


def planted_ordered_dict(attribute: str, planted: bytes, items: bytes = b"") -> Gadget:
    """An OrderedDict whose BUILD sets ``attribute`` as an instance attribute (issue 13, C2):
    ``mapping.items()`` or ``.get()`` then finds the planted value before the method."""
    opcodes = (
        _global("collections", "OrderedDict") + b")R" + items + b"}" + _unicode(attribute) + planted + b"sb"
    )
    return Gadget(opcodes, f"OrderedDict with {attribute} = {planted[:40]!r}")


PLANTED_VALUES = (
    _global("torch._utils", "_rebuild_tensor_v2"),
    _global("collections", "OrderedDict"),
    _global("builtins", "set"),
    b"N",
    b"J\x05\x00\x00\x00",
    b"]",
    b"}",
)
GADGETS = st.one_of(
    st.builds(
        planted_ordered_dict,
        st.sampled_from(("items", "get", "keys", "values", "__class__", "__dict__", "copy", "pop")),
        st.sampled_from(PLANTED_VALUES),
    ),
    st.sampled_from(
        (
            Gadget(b"]q\x00h\x00a", "a list that holds itself"),
            Gadget(b"}q\x00X\x01\x00\x00\x00ah\x00s", "a dict that holds itself"),
            Gadget(b"(" + b"]" * 3000 + b"a" * 2999 + b"t", "lists 3,000 deep"),
            Gadget(_global("builtins", "set") + b"(]tR", "set([])"),
            Gadget(_global("builtins", "set") + b"((]ttR", "set(([],)): unhashable"),
            Gadget(_global("builtins", "frozenset") + b"(]J\x01\x00\x00\x00atR", "frozenset([1])"),
            Gadget(_global("torch", "Size") + b"(]J\x01\x00\x00\x00atR", "torch.Size([1])"),
            Gadget(
                _global("_codecs", "encode") + b"(X\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1tR",
                "_codecs.encode",
            ),
            Gadget(_global("builtins", "bytes") + b")R", "bytes()"),
            Gadget(_global("torch", "float16") + b")R", "torch.float16()"),
            Gadget(b"\x8b" + struct.pack("<i", 2500) + b"\x01" * 2500, "an int of 6,000 digits"),
            Gadget(b"\x8f", "EMPTY_SET"),
            Gadget(_unicode("\ud800"), "a lone surrogate"),
            Gadget(b"C\x03abc", "bytes"),
            Gadget(b"G" + struct.pack(">d", float("nan")), "NaN"),
        )
    ),
)
leaves = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS).filter(
        lambda v: v is None or not isinstance(v, int) or abs(v) < 1 << 1000
    ),
    st.text(max_size=10),
    GADGETS,
)
metadata_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(names("dim", "n_layers", "vocab_size", "model_args"), children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
    ),
    max_leaves=8,
)


# -- structured checkpoints ------------------------------------------------------------------------


@st.composite
def storages(draw: st.DrawFn, key: str) -> Storage:
    dtype = draw(st.sampled_from(tuple(torchzip.STORAGE_NAMES)))
    count = draw(st.integers(0, 48))
    data = draw(
        st.binary(min_size=count * torchzip.ITEMSIZE[dtype], max_size=count * torchzip.ITEMSIZE[dtype])
    )
    numel = None if draw(st.integers(0, 9)) else draw(SMALL_INTS)
    return Storage(key, dtype, data, numel)


@st.composite
def tensors(draw: st.DrawFn, pool: list[Storage]) -> Any:
    storage = draw(st.sampled_from(pool))
    itemsize = torchzip.ITEMSIZE[storage.dtype]
    count = len(storage.data) // itemsize
    if draw(st.integers(0, 7)):  # a view that fits: the common case, which reaches the readers' end
        rows = draw(st.integers(1, max(count, 1)))
        shape: tuple[int, ...] = (rows, count // rows) if draw(st.booleans()) else (count,)
        stride = None
        offset = 0
        if len(shape) == 2 and draw(st.booleans()):
            shape, stride = (shape[1], shape[0]), (1, shape[1])  # a transposed view
    else:
        shape = tuple(draw(st.lists(SMALL_INTS, max_size=4)))
        stride = (
            tuple(draw(st.lists(SMALL_INTS, min_size=len(shape), max_size=len(shape))))
            if draw(st.booleans())
            else None
        )
        offset = draw(SMALL_INTS)
    if draw(st.integers(0, 7)) == 0:
        return TensorV3(storage, shape, draw(st.sampled_from(V3_DTYPES)))
    return TensorRef(storage, shape, stride, max(offset, 0) if offset < 1 << 62 else offset)


@st.composite
def checkpoints(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes], dict[str, Any]]:
    """(data.pkl, storages by key, zip options)."""
    keys = draw(
        st.lists(
            mostly(tuple("0123456789"), ("../x", "a b", "", "x" * 65), every=12),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    pool = [draw(storages(key)) for key in keys]
    state: dict[str, Any] = {}
    for name in draw(st.lists(names(*META_NAMES), min_size=1, max_size=5, unique=True)):
        state[name] = draw(tensors(pool))
    if draw(st.booleans()):
        state = OrderedDict(state)
    if draw(st.integers(0, 3)) == 0:
        state[draw(names("extra"))] = draw(metadata_values)
    root: Any = state
    layout = draw(st.sampled_from(("bare", "bare", "model", "model", "nested", "list", "gadget")))
    if layout == "model":
        root = {
            "model": state,
            "optimizer": {"state": {}},
            "iter_num": draw(leaves),
            "config": draw(metadata_values),
        }
    elif layout == "nested":
        root = {draw(names("state", "module")): {"inner": state}, "model_args": draw(metadata_values)}
    elif layout == "list":
        root = [state, draw(metadata_values)]
    elif layout == "gadget":
        items = (
            b"("
            + b"".join(torchzip.pickle_bytes(k)[2:-1] + _tensor_opcodes(v) for k, v in state.items())
            + b"u"
        )
        root = planted_ordered_dict(
            draw(st.sampled_from(("items", "get", "keys", "values"))),
            draw(st.sampled_from(PLANTED_VALUES)),
            items,
        )
    data = torchzip.pickle_bytes(root)
    members = {
        storage.key: storage.data
        for storage in pool
        if storage.key and "/" not in storage.key and " " not in storage.key
    }
    options: dict[str, Any] = {"top": "archive", "compress_storages": False, "extra_members": {}}
    if draw(st.integers(0, 7)) == 7:  # now and then, a zip torch would not write
        options = {
            "top": draw(st.sampled_from(("archive", "m", "a/b", ""))),
            "compress_storages": draw(st.booleans()),
            "extra_members": draw(
                st.sampled_from(
                    ({}, {"byteorder": b"big"}, {"constants.pkl": b"\x80\x02N."}, {"code/x.py": b""})
                )
            ),
        }
    return data, members, options


def _tensor_opcodes(value: Any) -> bytes:
    writer = torchzip.PickleWriter(bytearray())
    writer.emit(value)
    return bytes(writer.out)


def _write(path: Path, data: bytes, members: dict[str, bytes], options: dict[str, Any]) -> None:
    torchzip.write_zip(path, data, members, **options)


@reaches("inspect", "read_all", "fingerprint_round_trip")
@fuzz_settings(150)
@given(checkpoints())
def test_structured_pytorch(checkpoint: tuple[bytes, dict[str, bytes], dict[str, Any]]) -> None:
    with scratch_dir() as directory:
        path = directory / "pytorch_model.bin"
        _write(path, *checkpoint)
        exercise_checkpoint(path, fingerprint=True)


# -- the real checkpoint's pickle, mutated and zipped again ------------------------------------------

_LENGTH_WIDTHS = {-2: 1, -3: 4, -4: 4, -5: 8}  # pickletools' TAKEN_FROM_ARGUMENT1/4/4U/8U


def pickle_fields(data: bytes, *, values_only: bool = False) -> list[tuple[int, int]]:
    """(offset, width) of every opcode and every fixed-width argument or length in a pickle; with
    ``values_only``, of the number arguments alone (shapes, strides, offsets, storage sizes)."""
    fields = []
    for opcode, _, position in pickletools.genops(data):
        assert position is not None
        width = opcode.arg.n if opcode.arg is not None else 0
        width = _LENGTH_WIDTHS.get(width, width)
        if values_only:
            if opcode.name in ("BININT", "BININT1", "BININT2", "BINFLOAT"):
                fields.append((position + 1, width))
            continue
        fields.append((position, 1))
        if width > 0:
            fields.append((position + 1, width))
    return fields


def _fixture() -> tuple[bytes, dict[str, bytes], str]:
    with zipfile.ZipFile(FIXTURE) as archive:
        top = archive.namelist()[0].split("/")[0]
        data = archive.read(f"{top}/data.pkl")
        prefix = f"{top}/data/"
        members = {n[len(prefix) :]: archive.read(n) for n in archive.namelist() if n.startswith(prefix)}
    return data, members, top


FIXTURE_PICKLE, FIXTURE_MEMBERS, FIXTURE_TOP = _fixture()


@reaches("inspect", "read_all")
@fuzz_settings(60)
@given(
    st.one_of(
        field_mutated(FIXTURE_PICKLE, pickle_fields(FIXTURE_PICKLE, values_only=True), max_mutations=2),
        field_mutated(FIXTURE_PICKLE, pickle_fields(FIXTURE_PICKLE, values_only=True), max_mutations=1),
        field_mutated(FIXTURE_PICKLE, pickle_fields(FIXTURE_PICKLE)),
        mutated(FIXTURE_PICKLE),
    )
)
def test_mutated_real_pickle(data: bytes) -> None:
    """llama2xs.ckpt.pt (a model state dict, an optimizer, training arguments) with its data.pkl
    changed opcode by opcode, zipped again with the real storages, so the changes reach the
    unpickler and what reads its result."""
    with scratch_dir() as directory:
        path = directory / "ckpt.pt"
        torchzip.write_zip(path, data, FIXTURE_MEMBERS, top=FIXTURE_TOP)
        exercise_checkpoint(path)


# -- properties of two findings ------------------------------------------------------------------------


@fuzz_settings(60)
@given(
    st.sampled_from(("items", "get", "keys", "values")),
    st.sampled_from(PLANTED_VALUES),
    st.sampled_from(("bare", "model", "nested")),
)
def test_planted_ordered_dict_attributes_are_harmless(attribute: str, planted: bytes, where: str) -> None:
    """An OrderedDict state dict whose pickle sets ``items``/``get``/``keys``/``values`` as
    instance attributes (issue 13, C2): refused with an unshell error, or read as the mapping it
    holds, never through the planted attribute. (torch itself sets one instance attribute on a
    state dict, ``_metadata``, through the same BUILD opcode.)"""
    storage = Storage("0", "F32", b"\0" * 16)
    entry = torchzip.pickle_bytes("w")[2:-1] + _tensor_opcodes(TensorRef(storage, (4,)))
    state = planted_ordered_dict(attribute, planted, b"(" + entry + b"u")
    root: Any = {"bare": state, "model": {"model": state}, "nested": {"a": [state]}}[where]
    with scratch_dir() as directory:
        path = directory / "planted.pt"
        torchzip.write_zip(path, torchzip.pickle_bytes(root), {"0": storage.data})
        exercise_checkpoint(path)
        from unshell.formats import open_checkpoint

        def tensor_names() -> list[str]:
            with open_checkpoint(path) as checkpoint:
                return list(checkpoint.tensors)

        found = unshell_errors_only(tensor_names)
        assert found in (None, ["w"]), f"a state dict with a planted {attribute!r} read as {found}"


@fuzz_settings(20)
@given(st.sampled_from(("data/0", "data.pkl", "byteorder")), st.binary(min_size=16, max_size=16))
def test_duplicate_zip_members_are_refused(member: str, other: bytes) -> None:
    """Two zip members of one name (issue 13, U7): another loader may read the other copy, so the
    checkpoint is refused rather than read from the last one."""
    storage = Storage("0", "F32", b"\0" * 16)
    data = torchzip.pickle_bytes({"w": TensorRef(storage, (4,))})
    with scratch_dir() as directory:
        path = directory / "twice.pt"
        torchzip.write_zip(path, data, {"0": storage.data})
        duplicate = {"data/0": other, "data.pkl": data, "byteorder": b"little"}[member]
        with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
            archive.writestr(zipfile.ZipInfo(f"archive/{member}"), duplicate)
        exercise_checkpoint(path)
        from unshell.formats import open_checkpoint

        opened = unshell_errors_only(lambda: open_checkpoint(path))
        assert opened is None, f"a zip with two {member!r} members was accepted"


@fuzz_settings(25)
@given(
    st.integers(1, 64),
    st.sampled_from(((16384, 16384), (4096, 65536), (1 << 20, 256), (256, 256, 256, 64))),
    st.sampled_from(("F32", "F16", "I64")),
)
def test_views_cannot_make_a_small_file_allocate_gigabytes(
    storage_elements: int, shape: tuple[int, ...], dtype: str
) -> None:
    """A few bytes of storage viewed with zero strides as a huge tensor (issue 13, M1): reading
    it and fingerprinting it (``library add``, ``compare``) must stay within the memory bound of
    `fuzz_support.memory_bound`, by refusing the view with an unshell error if need be."""
    storage = Storage("0", dtype, b"\x01" * storage_elements * torchzip.ITEMSIZE[dtype])
    view = TensorRef(storage, shape, (0,) * len(shape))
    with scratch_dir() as directory:
        path = directory / "view.pt"
        torchzip.save(path, {"model.layers.0.mlp.up_proj.weight": view})
        exercise_checkpoint(path, fingerprint=True)
