"""Fuzz: model folders around valid weights: ``config.json`` values, model card front matter (the
declared-metadata parsers of `unshell.declared`), Meta ``params.json`` with ``consolidated.NN.pth``
shards, and hub-cache refs. Every command that reads them runs: ``inspect``, ``audit``, the
fingerprint (``library add``), ``convert --no-verify``. Only unshell errors may escape (see
`fuzz_support`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

import torchzip
from fuzz_support import (
    HUGE_NUMBERS,
    SPECIAL_NUMBERS,
    Pairs,
    adversarial_json,
    deep_nesting,
    dump_json,
    exercise_checkpoint,
    exercise_model_folder,
    fuzz_settings,
    mostly,
    names,
    reaches,
    run_cli,
    scratch_dir,
    tiny_llama_template,
    unshell_errors_only,
    usually,
)
from unshell.declared import read_card_front_matter, read_declared


def _copy_template(directory: Path) -> Path:
    model = directory / "model"
    shutil.copytree(tiny_llama_template(), model)
    return model


# -- config.json ---------------------------------------------------------------------------------------

CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "tie_word_embeddings",
    "attention_bias",
    "hidden_act",
    "architectures",
    "model_type",
    "torch_dtype",
    "auto_map",
    "_name_or_path",
    "bos_token_id",
    "eos_token_id",
)
NUMBER_KEYS = CONFIG_KEYS[:12]
numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(HUGE_NUMBERS))
config_values = st.one_of(
    numbers,
    st.sampled_from(("llama", "LlamaForCausalLM", "silu", "gelu", "float32", "")),
    st.sampled_from(
        (
            {"type": "linear", "factor": 2.0},
            {"rope_type": "llama3", "factor": float("nan")},
            {"type": "dynamic"},
            ["LlamaForCausalLM", "LlamaForCausalLM"],
            {"AutoModel": "modeling_x.X"},
            {"AutoModel": ["a.B", None]},
        )
    ),
    adversarial_json(),
)


@st.composite
def configs(draw: st.DrawFn, base: dict[str, Any]) -> str:
    if draw(mostly((False,), (True,), every=12)):
        return dump_json(draw(st.one_of(adversarial_json(), st.just(deep_nesting(100_000)))))
    config = dict(base)
    for key in draw(
        st.lists(
            usually(st.sampled_from(NUMBER_KEYS), st.sampled_from(CONFIG_KEYS), every=3),
            min_size=1,
            max_size=3,
        )
    ):
        config[key] = draw(usually(numbers, config_values, every=3) if key in NUMBER_KEYS else config_values)
    if draw(mostly((False,), (True,), every=10)):
        return dump_json(Pairs((*config.items(), ("model_type", "mistral"))))  # a duplicate key
    return dump_json(config)


BASE_CONFIG = {
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


@reaches("inspect", "fingerprint_round_trip", "convert")
@fuzz_settings(50)
@given(configs(BASE_CONFIG))
def test_config_json(text: str) -> None:
    """config.json with some values huge (10^4000, 1e400), NaN, infinite, negative, of the wrong
    type or nested, with duplicate keys, or not an object at all."""
    with scratch_dir() as directory:
        model = _copy_template(directory)
        (model / "config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        exercise_model_folder(model, directory / "out")


DANGEROUS_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    2**64,
    float("nan"),
    float("inf"),
    HUGE_NUMBERS[0],
    HUGE_NUMBERS[2],
    "12",
)


def _plausible(written: Any) -> bool:
    """A positive number in int64 range, or no number at all (the field was left out or refused)."""
    if isinstance(written, bool) or not isinstance(written, int | float):
        return True
    if isinstance(written, int):
        return 0 < written < 2**63
    return math.isfinite(written) and written > 0


def test_every_config_number_alone() -> None:
    """Each number field ``convert`` reads from config.json (``inspect`` too), alone, set to 0, -1,
    2^64, NaN, infinity, 10^4000 (issue 13, C5), 1e400 or a string: each must be validated
    where it is read, so that ``convert`` does not fail on it and does not write it into its
    output's config (these fields are all positive numbers). Exhaustive rather than sampled: one
    bad field refused early would hide the others, and this domain is small. All failures are
    listed together."""
    failures = []
    for key in NUMBER_KEYS:
        for value in DANGEROUS_NUMBERS:
            with scratch_dir() as directory:
                model = _copy_template(directory)
                (model / "config.json").write_text(dump_json({**BASE_CONFIG, key: value}), encoding="utf-8")
                output = directory / "out"
                try:
                    code, _ = run_cli(
                        "convert", str(model), "--to", "llama", "--output", str(output), "--no-verify"
                    )
                except Exception as error:  # collected, so that one report lists every field
                    failures.append(f"{key} = {value!r}: {type(error).__name__}: {str(error)[:120]}")
                    continue
                written = json.loads((output / "config.json").read_text()).get(key) if code == 0 else None
                if not _plausible(written):
                    failures.append(f"{key} = {value!r}: converted unchecked, the output says {written!r}")
    assert not failures, "\n".join(failures)


# -- model cards ---------------------------------------------------------------------------------------

CARD_KEYS = (
    "license",
    "license_name",
    "license_link",
    "base_model",
    "base_model_relation",
    "model_name",
    "model-index",
    "language",
    "tags",
    "pipeline_tag",
)
YAML_SCALARS = (
    "mit",
    "apache-2.0",
    "llama2",
    "other",
    "no",
    "yes",
    "~",
    "null",
    "true",
    "meta-llama/Llama-2-7b-hf",
    "https://huggingface.co/meta-llama/Llama-2-7b-hf",
    "0x" + "f" * 6000,  # issue 13, C1: an int beyond Python's str() digit limit
    "0b" + "1" * 20000,
    "0o" + "7" * 6000,
    "9" * 5000,
    "1_000_000",
    "190:20:30",  # YAML 1.1 sexagesimal int
    "1e400",
    ".nan",
    "-.inf",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system ['true']",
    "!!set {a, b}",
    "!!omap [a: 1, b: 2]",
    "!!float abc",
    "!!int 0x",
    "!!str 12",
    "&anchor [*anchor]",  # a list that holds itself
    "[a, [b, [c, {d: e}]]]",
    "{name: x, results: []}",
    '"\\0\\x1b[2J\\u202e"',
    '"\\ud800"',
    "'single ''quoted'''",
    "|\n  literal\n  block",
    ">-\n  folded\n  block",
    "[" * 3000 + "]" * 3000,
    "? complex\n: key",
    "*undefined_alias",
    "@reserved",
    "%TAG ! tag:x,2000:",
    "",
)
card_values = usually(st.sampled_from(YAML_SCALARS), st.text(max_size=30), every=5)


@st.composite
def cards(draw: st.DrawFn) -> bytes:
    lines = []
    for key in draw(st.lists(usually(st.sampled_from(CARD_KEYS), names("x")), max_size=4)):
        value = draw(card_values)
        indent = draw(mostly(("",), ("\t", "  ", "- "), every=10))
        lines.append(
            f"{indent}{key}: {value}".replace("\n", "\n  " if not value.startswith(("|", ">")) else "\n")
        )
    if draw(mostly((False,), (True,), every=10)):  # the billion laughs, by reference only
        lines += [
            "a: &a [x, x, x, x, x, x, x, x, x]",
            *(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
        ]
        lines.append("base_model: *h")
    opening = draw(mostly(("---\n",), ("\ufeff---\n", "---\r\n", "--- \n", "----\n", "")))
    closing = draw(mostly(("\n---\n",), ("\n...\n", "\n", "\r\n---\r\n", "\n--- # end\n")))
    text = opening + "\n".join(lines) + closing + "# A model\n\nSome prose.\n"
    return text.encode("utf-8", "surrogatepass")


@reaches("inspect", "front_matter", "convert")
@fuzz_settings(70)
@given(cards())
@example(b"---\nlicense: 0x" + b"f" * 6000 + b"\n---\n")  # issue 13, C1
def test_model_card(card: bytes) -> None:
    """README.md front matter: YAML tags, anchors and aliases, ints of thousands of digits,
    NaN, dates, control characters, tabs, broken delimiters."""
    with scratch_dir() as directory:
        model = _copy_template(directory)
        (model / "README.md").write_bytes(card)

        def front_matter() -> None:
            notes: list[str] = []
            read_card_front_matter(model / "README.md", notes)
            from unshell.formats import open_checkpoint

            with open_checkpoint(model) as checkpoint:
                json.dumps(read_declared(checkpoint).to_dict())

        unshell_errors_only(front_matter)
        exercise_model_folder(model, directory / "out")


# -- Meta consolidated shards --------------------------------------------------------------------------

META_PARAMS_KEYS = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "multiple_of",
    "norm_eps",
    "rope_theta",
    "ffn_dim_multiplier",
)


@st.composite
def meta_folders(draw: st.DrawFn) -> tuple[str | None, list[dict[str, Any]]]:
    params: dict[str, Any] = {"dim": 8, "n_layers": 1, "n_heads": 2, "norm_eps": 1e-5, "vocab_size": 16}
    for key in draw(st.lists(st.sampled_from(META_PARAMS_KEYS), max_size=2)):
        params[key] = draw(config_values)
    params_text = None if draw(mostly((False,), (True,), every=8)) else dump_json(params)
    shard_count = draw(st.sampled_from((1, 2, 2, 3)))
    shapes = {
        "tok_embeddings.weight": (16, 8),
        "layers.0.attention.wq.weight": (8, 8),
        "layers.0.attention.wo.weight": (8, 8),
        "layers.0.feed_forward.w1.weight": (16, 8),
        "layers.0.attention_norm.weight": (8,),
        "norm.weight": (8,),
        "output.weight": (16, 8),
    }
    shards = []
    for _ in range(shard_count):
        state: dict[str, Any] = {}
        for name, shape in shapes.items():
            if draw(mostly((False,), (True,), every=20)):
                continue  # a tensor missing from one shard
            rows = draw(mostly((shape[0] // shard_count or 1,), (shape[0], 1, 0), every=10))
            state[name] = np.full((rows, *shape[1:]), 0.5, np.float32)
        shards.append(state)
    return params_text, shards


@reaches("inspect", "read_all")
@fuzz_settings(40)
@given(meta_folders())
def test_meta_directory(folder: tuple[str | None, list[dict[str, Any]]]) -> None:
    params_text, shards = folder
    with scratch_dir() as directory:
        model = directory / "llama-meta"
        model.mkdir()
        if params_text is not None:
            (model / "params.json").write_text(params_text, encoding="utf-8", errors="surrogatepass")
        for index, state in enumerate(shards):
            torchzip.save(model / f"consolidated.{index:02d}.pth", torchzip.state_dict_refs(state))
        exercise_checkpoint(model, fingerprint=True)


# -- hub-cache folders ---------------------------------------------------------------------------------


@fuzz_settings(30)
@given(
    names("0123abcd", "main"),
    st.lists(names("0123abcd", "feedbeef"), min_size=0, max_size=2, unique=True),
)
def test_hub_cache_refs(ref: str, snapshots: list[str]) -> None:
    """``models--org--name`` with ``refs/main`` naming any text, and snapshot folders of any name."""
    with scratch_dir() as directory:
        repo = directory / "models--org--tiny"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_bytes(ref.encode("utf-8", "surrogatepass"))
        template = tiny_llama_template()
        for name in snapshots:
            safe = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            if not safe or "/" in safe or "\x00" in safe or safe in (".", "..") or len(safe.encode()) > 200:
                continue
            snapshot = repo / "snapshots" / safe
            shutil.copytree(template, snapshot)
        exercise_checkpoint(repo, read_values=False)
