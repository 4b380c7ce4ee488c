"""The conventions every command follows (issue 16): help with examples and summaries that are
whole sentences, help for every option, ``-q/--quiet``, ``--json``, errors as JSON, output paths
checked before the work, unreadable inputs as exit 11, and what new users tripped over in the output
(an honest similarity, log10 p, layouts, scan and tokenizer-family wording, a ``.txt`` that is no
tokenizer). The help checks walk the whole Click group, so options added later are checked too."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click
import click.shell_completion
import numpy as np
import pytest
from click.testing import CliRunner

import unshell
from unshell.cli.main import cli
from unshell.errors import failure

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "fixtures"
STORIES = FIXTURES / "stories260K.bin"
INDEPENDENT = FIXTURES / "llama2xs.model.bin"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from unshell.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def every_command() -> list[tuple[list[str], click.Command]]:
    found: list[tuple[list[str], click.Command]] = []

    def walk(prefix: list[str], group: click.Group) -> None:
        for name, command in group.commands.items():
            found.append(([*prefix, name], command))
            if isinstance(command, click.Group):
                walk([*prefix, name], command)

    walk([], cli)
    return found


def test_every_command_has_examples_a_whole_summary_and_help_for_each_option() -> None:
    commands = every_command()
    assert len(commands) >= 14
    with click.Context(cli, info_name="unshell") as context:
        assert "Examples:" in cli.get_help(context)
    for argv, command in commands:
        where = "unshell " + " ".join(argv)
        shown = CliRunner().invoke(cli, [*argv, "--help"])
        assert shown.exit_code == 0, shown.output
        examples = shown.output[shown.output.find("\n  Examples:\n") :]
        assert f"\n    unshell {' '.join(argv)}" in examples, f"{where}: no Examples block in --help"
        summary = command.get_short_help_str(limit=45)
        assert not summary.endswith("..."), f"{where}: summary cut mid-phrase: {summary!r}"
        assert summary.rstrip(")").endswith((".", "?")), f"{where}: summary is not a sentence: {summary!r}"
        if isinstance(command, click.Group):
            continue
        names = {param.name for param in command.params}
        assert "quiet" in names, f"{where}: no -q/--quiet"
        if "fmt" in names:
            assert "json_alias" in names, f"{where}: --format without --json"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{where}: option {param.opts[0]} has no help text"


def test_completion_is_documented_and_works(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "_UNSHELL_COMPLETE=bash_source unshell" in readme
    completion = click.shell_completion.BashComplete(cli, {}, "unshell", "_UNSHELL_COMPLETE")
    assert "_unshell_completion" in completion.source()
    os.environ["COMP_WORDS"], os.environ["COMP_CWORD"] = "unshell com", "1"
    try:
        assert "compare" in completion.complete()
    finally:
        del os.environ["COMP_WORDS"], os.environ["COMP_CWORD"]


def test_json_is_format_json_and_errors_are_json_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, long_form, _ = run(["inspect", str(STORIES), "--format", "json"], capsys)
    assert code == 0
    assert run(["inspect", str(STORIES), "--json"], capsys) == (0, long_form, "")
    missing = tmp_path / "missing.bin"
    code, out, err = run(["inspect", str(missing), "--json"], capsys)
    assert code == 11 and not err
    assert json.loads(out) == {"error": f"{missing}: no such file or directory", "exit_code": 11}
    code, out, err = run(["inspect", str(missing)], capsys)
    assert (code, out, err) == (11, "", f"error: {missing}: no such file or directory\n")
    code, out, _ = run(["compare", str(STORIES), "--json"], capsys)  # a usage error
    assert code == 2 and json.loads(out)["exit_code"] == 2 and "Missing argument" in json.loads(out)["error"]


def test_html_says_where_the_report_went_unless_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    code, out, err = run(["compare", str(STORIES), str(INDEPENDENT), "--html", str(report)], capsys)
    assert code == 0 and report.is_file() and "VERDICT" in out
    assert err == f"report written to {report}\n"
    code, out, err = run(["compare", str(STORIES), str(INDEPENDENT), "--html", str(report), "-q"], capsys)
    assert code == 0 and "VERDICT" in out and err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "{stories}", "{stories}", "--html", "{missing}/report.html"],
        ["audit", "{stories}", "--html", "{missing}/report.html"],
        ["convert", "{stories}", "-o", "{file}/converted", "--no-verify"],
        ["scan", "{fixtures}", "--output", "{file}/fleet.jsonl"],
        ["library", "export", "{missing}/known.jsonl", "--library", "{tmp}/library.sqlite"],
    ],
)
def test_output_paths_are_checked_before_the_work(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the work started before the output path was checked")

    for target in (
        "unshell.lineage.compare.compare",
        "unshell.auditing.report.audit",
        "unshell.conversion.convert",
    ):
        monkeypatch.setattr(target, no_work)
    monkeypatch.setattr("unshell.scanning.scan", no_work)
    (tmp_path / "a-file").write_text("in the way")
    names = {
        "stories": str(STORIES),
        "fixtures": str(FIXTURES),
        "missing": str(tmp_path / "no-such-folder"),
        "file": str(tmp_path / "a-file"),
        "tmp": str(tmp_path),
    }
    filled = [part.format(**names) for part in argv]
    code, _out, err = run(filled, capsys)
    output = next(
        part for part in filled if part.startswith(str(tmp_path)) and part != names["tmp"] + "/library.sqlite"
    )
    assert code == 19, err
    assert len(err.strip().splitlines()) == 1 and output in err, err


def test_an_unreadable_input_is_exit_11_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tests run as root, which reads everything: the permission checks are made to answer as
    # they do for a user without the right.
    model = tmp_path / "model.bin"
    shutil.copyfile(STORIES, model)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: False if Path(path) == model else real_access(path, mode, **kw)
    )
    code, _, err = run(["inspect", str(model)], capsys)
    assert code == 11 and str(model) in err and "Usage" not in err, err

    locked = tmp_path / "locked" / "model.bin"
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).startswith(str(locked.parent) + os.sep):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    code, _out, err = run(["inspect", str(locked)], capsys)
    assert code == 11 and str(locked) in err, err
    assert failure(PermissionError(13, "Permission denied", "/x/y")).exit_code == 11


def test_a_text_file_is_not_a_wordpiece_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hello.txt").write_text("hello world\n")
    code, out, err = run(["inspect", str(tmp_path / "hello.txt")], capsys)
    assert code == 12 and "wordpiece" not in out.lower(), (out, err)
    # A real BERT vocabulary under another name is still one: one token a line, [UNK] and [CLS].
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"word{i}" for i in range(200)), "##s"]
    (tmp_path / "bert-vocab.txt").write_text("\n".join(tokens) + "\n")
    code, out, _ = run(["inspect", str(tmp_path / "bert-vocab.txt"), "--json"], capsys)
    assert code == 0 and json.loads(out)["tokenizer"]["vocab_size"] == len(tokens)


def test_the_similarity_is_symmetric_and_one_for_an_identical_copy(tmp_path: Path) -> None:
    copy = tmp_path / "copy.bin"
    shutil.copyfile(STORIES, copy)
    for quick in (False, True):
        assert unshell.compare(STORIES, copy, quick=quick).score == 1.0
        forward = unshell.compare(STORIES, INDEPENDENT, quick=quick)
        backward = unshell.compare(INDEPENDENT, STORIES, quick=quick)
        assert forward.score is not None and backward.score is not None
        assert abs(forward.score - backward.score) < 0.002, (quick, forward.score, backward.score)
        assert forward.score < 0.2  # independent models: low, as their verdict says


def test_compare_text_labels_the_similarity_as_descriptive(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["compare", str(STORIES), str(INDEPENDENT)], capsys)
    assert code == 0 and "SCORE" not in out
    line = next(line for line in out.splitlines() if line.startswith("SIMILARITY"))
    assert "descriptive only: the verdict rests on the p-value" in line


def test_log10_p_value_is_exact_where_p_underflows(tmp_path: Path) -> None:
    """A fine-tune stand-in (stories260K with 5% noise) is derived far beyond what a float holds."""
    raw = STORIES.read_bytes()
    weights = np.frombuffer(raw[28:], dtype=np.float32)
    noise = np.random.default_rng(0).normal(0.0, 0.05 * weights.std(), weights.size)
    (tmp_path / "tuned.bin").write_bytes(raw[:28] + (weights + noise).astype(np.float32).tobytes())
    result = unshell.compare(STORIES, tmp_path / "tuned.bin")
    assert result.verdict == "derived" and result.p_value == 0.0
    document = result.to_dict()
    assert document["log10_p_value"] is not None and document["log10_p_value"] < -300
    independent = unshell.compare(STORIES, INDEPENDENT).to_dict()
    assert independent["p_value"] > 0
    assert independent["log10_p_value"] == pytest.approx(np.log10(independent["p_value"]), abs=1e-6)
    schema = (ROOT / "docs" / "compare-schema.md").read_text()
    for key in document:
        assert f"`{key}" in schema, f"{key} is not in docs/compare-schema.md"
    assert "1e-300" in schema and "`log10_p_value`" in schema


def test_a_plain_folder_with_a_gguf_is_a_directory_not_a_hugging_face_one(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copyfile(FIXTURES / "llama-2-tiny-random.gguf", folder / "model.gguf")
    assert unshell.inspect(folder).to_dict()["layout"] == "directory"


def test_tokenizer_family_wording_does_not_contradict_itself(capsys: pytest.CaptureFixture[str]) -> None:
    _code, out, _ = run(["inspect", str(FIXTURES / "llama2.tokenizer.model")], capsys)
    family = next(line for line in out.splitlines() if line.startswith("FAMILY"))
    assert "tokens kept" not in family
    data = json.loads(run(["inspect", str(FIXTURES / "llama2.tokenizer.model"), "--json"], capsys)[1])
    match = data["tokenizer"]["family"]
    if match["kept"] < match["sampled_tokens"]:
        assert (
            f"{match['kept']} of {match['sampled_tokens']} sampled tokens" in family
            and "99% needed" in family
        )
    else:
        assert f"all {match['sampled_tokens']} sampled tokens" in family


def test_scan_table_and_json_say_the_same_word(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unshell.report.text import render_scan

    document = {
        "records": [],
        "total": 3,
        "bytes": 0,
        "seconds": 0.1,
        "engine": "local",
        "ok": 1,
        "skipped": 2,
        "errors": 0,
        "library_added": 0,
        "output": None,
    }
    assert "2 skipped (unchanged)" in render_scan(document)
