"""`unshell convert` output that works on its own: the tokenizer carried over, and ``--dtype``.

The tokenizer a GGUF or a llama2.c export carries is rebuilt as Hugging Face files; the oracles are
independent of unshell: transformers' own GGUF tokenizer loader (``gguf_file=``), a transcription
of llama2.c's run.c ``encode``, and the real models' greedy output. ``--dtype`` is checked on the
output's safetensors headers (read here with ``struct``) and against numpy's and torch's rounding.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from foreign_layouts import make_tiny_llama, read_safetensors_dir
from llama2c_forward import Llama2cTokenizer, greedy, load_checkpoint
from unshell import errors
from unshell.cli import main as cli_main
from unshell.cli.main import cli
from unshell.conversion import convert
from unshell.conversion import verify as verify_module
from unshell.formats import open_checkpoint
from unshell.formats.facts import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    EmbeddedTokenizer,
    embedded_tokenizer,
)
from unshell.formats.llama2c import read_llama2c_tokenizer
from unshell.tokenizers.export import sentencepiece_merges, tokenizer_files

TESTS = Path(__file__).resolve().parent
LILY = "Once upon a time, there was a little girl named Lily"
TEXTS = (
    "What is the capital of France?",
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "  two leading spaces,\n\nnewlines\tand a tab",
    "digits 1234567 and 3.14159; x1y2",
    "Ünïcödé 日本語 and an emoji 🙂",
)


def _header_dtypes(directory: Path) -> dict[str, str]:
    """Each tensor's dtype from the safetensors headers, with nothing of unshell's."""
    out: dict[str, str] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        with shard.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        out.update({name: entry["dtype"] for name, entry in header.items() if name != "__metadata__"})
    return out


def _llama2c_folder(tmp_path: Path, fixtures_dir: Path, tokenizer_name: str = "tok512.bin") -> Path:
    """stories260K with its tokenizer beside it under llama2.c's own name (tok{vocab_size}.bin)."""
    folder = tmp_path / "stories"
    folder.mkdir()
    shutil.copyfile(fixtures_dir / "stories260K.bin", folder / "stories260K.bin")
    shutil.copyfile(fixtures_dir / "stories260K.tok512.bin", folder / tokenizer_name)
    return folder / "stories260K.bin"


# -- the readers' facts -------------------------------------------------------------------------------


def test_gguf_reader_gives_its_embedded_tokenizer(fixtures_dir: Path) -> None:
    with open_checkpoint(fixtures_dir / "llama-2-tiny-random.gguf") as checkpoint:
        tokenizer = embedded_tokenizer(checkpoint)
    assert tokenizer is not None
    assert tokenizer.model == "sentencepiece-bpe" and tokenizer.source == "GGUF tokenizer.ggml.*"
    assert len(tokenizer.tokens) == 32000 and tokenizer.scores is not None and len(tokenizer.scores) == 32000
    assert tokenizer.tokens[:3] == ("<unk>", "<s>", "</s>") and tokenizer.tokens[3] == "<0x00>"
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (1, 2, 0)
    assert tokenizer.token_types is not None and tokenizer.token_types[1] == TOKEN_CONTROL
    assert tokenizer.token_types[3] == TOKEN_BYTE and tokenizer.token_types[1000] == TOKEN_NORMAL


def test_llama2c_tokenizer_reads_back_sentencepiece_pieces(fixtures_dir: Path) -> None:
    tokenizer = read_llama2c_tokenizer(fixtures_dir / "stories260K.tok512.bin")
    assert len(tokenizer.tokens) == 512
    # llama2.c's export wrote "\n<s>\n" and spaces for the space mark; the pieces are SentencePiece's again.
    assert tokenizer.tokens[:4] == ("<unk>", "<s>", "</s>", "<0x00>")
    assert tokenizer.tokens[259] == "\u2581t" and " " not in "".join(tokenizer.tokens)
    assert tokenizer.scores is not None and tokenizer.scores[259:262] == (0.0, -1.0, -2.0)


def test_llama2c_reader_finds_the_tokenizer_by_llama2c_names_and_size(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    model = _llama2c_folder(tmp_path, fixtures_dir)
    with open_checkpoint(model) as checkpoint:
        found = embedded_tokenizer(checkpoint)
    assert found is not None and found.files == (model.parent / "tok512.bin",)
    # A tokenizer.bin of another size (Llama 2's 32,000 pieces, say) is not this model's.
    (model.parent / "tok512.bin").unlink()
    records = b"".join(struct.pack("<fi", 0.0, len(p)) + p for p in (b"<unk>", b"\n<s>\n", b"\n</s>\n"))
    (model.parent / "tokenizer.bin").write_bytes(struct.pack("<i", 7) + records)
    assert len(read_llama2c_tokenizer(model.parent / "tokenizer.bin").tokens) == 3
    with open_checkpoint(model) as checkpoint:
        assert embedded_tokenizer(checkpoint) is None
    result = convert(model, output=tmp_path / "out", verify=False)
    assert result.record["tokenizer"]["from"] == "none" and "--tokenizer" in " ".join(result.notes)


def test_sentencepiece_merges_rank_by_the_score_of_the_piece_they_make() -> None:
    pieces = ("<unk>", "a", "b", "c", "ab", "bc", "abc")
    types = (2, 1, 1, 1, 1, 1, 1)
    scores = (0.0, -10.0, -11.0, -12.0, -3.0, -1.0, -2.0)
    tokenizer = EmbeddedTokenizer("sentencepiece-bpe", pieces, "test", types, scores, unk_id=0)
    assert sentencepiece_merges(tokenizer) == [("b", "c"), ("a", "bc"), ("ab", "c"), ("a", "b")]


def test_an_unknown_pre_tokenizer_is_refused_not_guessed() -> None:
    tokenizer = EmbeddedTokenizer(
        "byte-level-bpe", ("a", "b", "ab"), "test", merges=(("a", "b"),), pre_tokenizer="made-up"
    )
    with pytest.raises(errors.UnsupportedFormatError, match="made-up"):
        tokenizer_files(tokenizer)


# -- conversions ------------------------------------------------------------------------------------------


def test_gguf_tokenizer_is_written_and_config_gets_its_ids(tmp_path: Path, fixtures_dir: Path) -> None:
    result = convert(fixtures_dir / "llama-2-tiny-random.gguf", output=tmp_path / "out", verify=False)
    assert result.record["tokenizer"] == {
        "from": "rebuilt",
        "source": "GGUF tokenizer.ggml.*",
        "files": [
            "generation_config.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ],
    }
    out = tmp_path / "out"
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["add_bos_token"]) == ("<s>", "</s>", True)
    tokenizer_json = json.loads((out / "tokenizer.json").read_text())
    assert tokenizer_json["model"]["type"] == "BPE" and tokenizer_json["model"]["byte_fallback"] is True
    assert len(tokenizer_json["model"]["vocab"]) == 32000
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}
    hashed = {f["path"] for f in result.record["output"]["files"]}
    assert {"tokenizer.json", "tokenizer_config.json"} <= hashed


def test_without_the_tokenizers_library_the_conversion_still_runs(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)
    result = convert(fixtures_dir / "llama-2-tiny-random.gguf", output=tmp_path / "out", verify=False)
    assert result.record["tokenizer"]["from"] == "none"
    assert any("unshell[convert]" in note for note in result.notes)
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_llama2c_tokenizer_beside_the_model_comes_along(tmp_path: Path, fixtures_dir: Path) -> None:
    model = _llama2c_folder(tmp_path, fixtures_dir)
    result = convert(model, output=tmp_path / "out", verify=False)
    assert result.record["tokenizer"]["from"] == "rebuilt"
    assert result.record["tokenizer"]["source"] == "llama2.c tokenizer tok512.bin"
    # The tokenizer file is an input: hashed in the record like the weights.
    assert any(f["path"].endswith("tok512.bin") and f["sha256"] for f in result.record["source"]["files"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)


def test_tokenizer_option_takes_a_file_a_folder_or_a_llama2c_bin(tmp_path: Path, fixtures_dir: Path) -> None:
    source = fixtures_dir / "stories260K.bin"
    rebuilt = convert(
        source, output=tmp_path / "a", verify=False, tokenizer=fixtures_dir / "stories260K.tok512.bin"
    )
    assert rebuilt.record["tokenizer"]["from"] == "rebuilt"
    # The rebuilt files, given back: as a tokenizer.json under another name, and as a folder.
    renamed = tmp_path / "mine.json"
    shutil.copyfile(tmp_path / "a" / "tokenizer.json", renamed)
    by_file = convert(source, output=tmp_path / "b", verify=False, tokenizer=renamed)
    assert by_file.record["tokenizer"]["from"] == "argument"
    assert (tmp_path / "b" / "tokenizer.json").read_bytes() == renamed.read_bytes()
    by_folder = convert(source, output=tmp_path / "c", verify=False, tokenizer=tmp_path / "a")
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= set(
        by_folder.record["tokenizer"]["files"]
    )


def test_bad_tokenizer_arguments_are_usage_errors(
    tmp_path: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fixtures_dir / "stories260K.bin"
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello world")
    for given in (tmp_path / "missing.json", tmp_path / "empty", tmp_path / "notes.txt"):
        with pytest.raises(errors.UsageError, match="--tokenizer"):
            convert(source, output=tmp_path / "out", verify=False, tokenizer=given)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exited:
        cli_main.main(
            ["convert", str(source), "-o", str(tmp_path / "out"), "--tokenizer", str(tmp_path / "empty")]
        )
    assert exited.value.code == errors.UsageError.exit_code
    stderr = capsys.readouterr().err
    assert "--tokenizer" in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


# -- --dtype -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "code"), [("f32", "F32"), ("f16", "F16"), ("bf16", "BF16")])
def test_dtype_writes_every_tensor_in_the_type_asked(tmp_path: Path, dtype: str, code: str) -> None:
    source = make_tiny_llama(tmp_path / "llama", gqa=True)
    original = read_safetensors_dir(source)
    result = convert(source, output=tmp_path / "out", verify=False, dtype=dtype)
    assert set(_header_dtypes(tmp_path / "out").values()) == {code}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["torch_dtype"] == {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[code]
    assert result.record["output"]["dtype"] == dtype
    assert {e["exactness"] for e in result.record["transforms"]} == (
        {"bitwise"} if code == "F32" else {"rounded"}
    )
    assert result.record["exact"] is (code == "F32")
    if code == "F16":  # numpy rounds to nearest even, independently of the converter
        converted = read_safetensors_dir(tmp_path / "out")
        name = "model.layers.0.mlp.down_proj.weight"
        assert np.array_equal(converted[name], original[name].astype(np.float16))


def test_dtype_auto_keeps_float_weights_bit_for_bit(tmp_path: Path) -> None:
    source = make_tiny_llama(tmp_path / "llama", gqa=True)
    convert(source, output=tmp_path / "f16", verify=False, dtype="f16")
    result = convert(tmp_path / "f16", output=tmp_path / "out", verify=False)
    assert set(_header_dtypes(tmp_path / "out").values()) == {"F16"}
    assert result.record["exact"] is True


def test_dtype_option_on_the_command_line(tmp_path: Path) -> None:
    source = make_tiny_llama(tmp_path / "llama", gqa=True)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["convert", str(source), "-o", str(tmp_path / "out"), "--no-verify", "--dtype", "bf16"]
    )
    assert result.exit_code == 0, result.output
    assert set(_header_dtypes(tmp_path / "out").values()) == {"BF16"}
    bad = runner.invoke(cli, ["convert", str(source), "-o", str(tmp_path / "x"), "--dtype", "f8"])
    assert bad.exit_code != 0 and "f8" in bad.output
    help_text = runner.invoke(cli, ["convert", "--help"]).output
    assert "--dtype" in help_text and "--tokenizer" in help_text and "Examples" in help_text


# -- the tolerance rule, as the README states it ----------------------------------------------------------------


def test_readme_tolerance_table_is_the_one_verification_applies() -> None:
    readme = (TESTS.parent / "README.md").read_text()
    rows = dict(re.findall(r"^\| (float[^|]*|quantized[^|]*|folded[^|]*) \| `([0-9e.-]+)` \|", readme, re.M))
    assert len(rows) == 3, rows
    by_kind = {key.split()[0]: float(value) for key, value in rows.items()}
    assert by_kind == {
        "float": verify_module.EXACT_TOLERANCE,
        "quantized": verify_module.QUANTIZED_TOLERANCE,
        "folded": verify_module.FOLD_TOLERANCE,
    }


def test_verification_runs_on_the_rounded_weights_and_measures_the_rounding(tmp_path: Path) -> None:
    """bf16 output of a float32 source passes the exact tolerance (the reference rounds the same
    way, by torch); the rounding's own effect is reported beside it and is far larger."""
    import torch

    torch.set_num_threads(1)
    source = make_tiny_llama(tmp_path / "llama", gqa=True)
    result = convert(source, output=tmp_path / "out", verify=True, dtype="bf16")
    report = result.record["verification"]
    assert report["passed"] and report["tolerance"] == verify_module.EXACT_TOLERANCE
    assert report["max_abs_logit_diff"] <= verify_module.EXACT_TOLERANCE
    assert report["rounded_to"] == ["BF16"]
    assert report["rounding_logit_diff"] > 10 * report["max_abs_logit_diff"]
    same = convert(source, output=tmp_path / "same", verify=True)
    assert same.record["verification"]["rounded_to"] == []
    assert same.record["verification"]["rounding_logit_diff"] is None


# -- acceptance: real models, through transformers, from the output folder alone ------------------------------


def test_converted_smollm2_answers_a_chat_prompt_with_its_own_tokenizer(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from artifacts import fetch

    source = fetch("smollm2_gguf")
    result = convert(source, output=tmp_path / "smollm2", verify=True)
    output = tmp_path / "smollm2"
    # Quantized -> bf16 by default: about half the float32 output's 513 MiB.
    weights = sum(p.stat().st_size for p in output.glob("*.safetensors"))
    assert set(_header_dtypes(output).values()) == {"BF16", "F32"}  # norms stay float32
    assert weights < 300 * 2**20
    report = result.record["verification"]
    assert report["passed"] and report["tolerance"] == verify_module.QUANTIZED_TOLERANCE
    assert report["rounded_to"] == ["BF16"]

    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=32, do_sample=False)
    answer = tokenizer.decode(generated[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer

    # transformers' own GGUF tokenizer loader (its code, not unshell's) tokenizes the same way.
    oracle = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    for text in (*TEXTS, chat):
        assert tokenizer(text)["input_ids"] == oracle(text)["input_ids"], text


def test_gguf_sentencepiece_tokenizer_tokenizes_as_llama_2(tmp_path: Path, fixtures_dir: Path) -> None:
    """The Llama 2 tokenizer the tiny GGUF carries, rebuilt, against transformers' GGUF loader; where
    that loader departs from SentencePiece and llama.cpp (it drops the second of two leading spaces,
    and adds no space prefix after a special token), the ids Llama 2's own chat prompts use."""
    from transformers import AutoTokenizer

    source = fixtures_dir / "llama-2-tiny-random.gguf"
    convert(source, output=tmp_path / "hf", verify=False)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    oracle = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    for text in TEXTS:
        if not text.startswith("  "):
            assert tokenizer(text)["input_ids"] == oracle(text)["input_ids"], text
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == 1 and tokenizer.decode(ids, skip_special_tokens=True) == text
    # Meta's chat format: "[INST]" is 518, 25580, 29962 after BOS; "  two" keeps both spaces.
    assert tokenizer("[INST] hi [/INST]")["input_ids"][:4] == [1, 518, 25580, 29962]
    assert tokenizer.convert_ids_to_tokens(tokenizer("  two")["input_ids"]) == [
        "<s>",
        "\u2581\u2581",
        "\u2581two",
    ]


def test_converted_stories260k_tells_its_story_with_the_converted_tokenizer(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_path = _llama2c_folder(tmp_path, fixtures_dir)
    result = convert(model_path, output=tmp_path / "hf", verify=True)
    assert result.record["verification"]["passed"]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    # Greedy from BOS as run.c does, then the text through the converted tokenizer.
    start = tokenizer("", return_tensors="pt")
    assert start["input_ids"].tolist() == [[tokenizer.bos_token_id]] == [[1]]
    with torch.no_grad():
        generated = model.generate(**start, max_new_tokens=40, do_sample=False)
    run_c = greedy(load_checkpoint(model_path), 40)
    assert generated[0, 1:].tolist()[: len(run_c)] == run_c
    story = tokenizer.decode(generated[0], skip_special_tokens=True)
    assert story.startswith(LILY), story
    # Encoding: the converted tokenizer splits text exactly as run.c's encode does.
    llama2c = Llama2cTokenizer(fixtures_dir / "stories260K.tok512.bin", 512)
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == llama2c.encode(text), text
