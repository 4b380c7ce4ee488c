"""The docs are part of the interface: exit codes, schema fields and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from unshell import errors
from unshell.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def _readme_exit_codes() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.M)}


def test_every_exit_code_is_documented() -> None:
    documented = _readme_exit_codes()
    used = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.UnshellError)
    }
    used |= {
        errors.EXIT_IO_ERROR,
        errors.EXIT_OUT_OF_MEMORY,
        errors.EXIT_INTERNAL,
        errors.EXIT_INTERRUPTED,
        0,
    }
    assert used - {1} <= set(documented), sorted(used - set(documented))


def test_exit_codes_are_distinct_per_error_kind() -> None:
    classes = [
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.UnshellError)
    ]
    codes = [cls.exit_code for cls in classes]
    assert len(codes) == len(set(codes)), "two error kinds share an exit code"


def test_every_command_has_help() -> None:
    import click

    runner = CliRunner()
    commands = []
    for name, command in cli_main.cli.commands.items():
        if isinstance(command, click.Group):  # `library add`, `library list`, ...
            assert command.help, f"group {name} has no help text"
            commands += [([name, sub], subcommand) for sub, subcommand in command.commands.items()]
        else:
            commands.append(([name], command))
    assert len(commands) >= 12
    for argv, command in commands:
        assert command.help, f"command {' '.join(argv)} has no help text"
        result = runner.invoke(cli_main.cli, [*argv, "--help"])
        assert result.exit_code == 0, result.output
        if argv != ["serve"]:  # a server, not a document
            assert "--format" in result.output, argv


def test_schema_doc_lists_every_top_level_field(fixtures_dir: Path) -> None:
    import unshell

    document = unshell.inspect(fixtures_dir / "stories260K.bin").to_dict(tensor_map=True)
    schema = (ROOT / "docs" / "inspect-schema.md").read_text()
    for key in document:
        assert f"`{key}" in schema, f"field {key} is not documented in docs/inspect-schema.md"
    for key in document["architecture"]:
        assert f"`architecture.{key}`" in schema, f"architecture.{key} is not documented"


def test_readme_starts_with_the_two_setup_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 5]
    assert block[0].startswith("# 1.") and "demo/run.py" in block[1]
    assert block[2].startswith("# 2.") and "pytest" in block[3]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -A1 '^# 2\\. ' README.md" in ci


def test_readme_demo_runs_and_finds_the_rename() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = completed.stdout
    assert out.count("ARCHITECTURE    llama (LlamaForCausalLM)") == 5
    assert "matched as yi" in out
    assert "model.layers.{i}.ln1.weight" in out and "model.layers.{i}.input_layernorm.weight" in out
    assert "model.layers.{i}.self_attn.k_proj.weight | model.layers.{i}.self_attn.v_proj.weight" in out
    # The rest of the tour: a tokenizer's family, an independent real pair, the Yi-style audit.
    assert "FAMILY     Llama 2 family (identical" in out
    assert "VERDICT       INDEPENDENT" in out
    assert "LEVEL         ARCHITECTURE-REUSE-UNDISCLOSED" in out
    # The library: the scrambled copy is found as stories260K's weights, the others are not it.
    search = out[out.index("$ unshell search") :].splitlines()
    verdicts = {line.split()[0]: line.split()[1] for line in search if len(line.split()) >= 2}
    assert verdicts.get("stories260K.bin") == "identical"
    assert verdicts.get("llama2xs.model.bin") == "independent"
    # The Yi-style copy audited with the library: its undeclared base is found.
    audit = out[out.index("$ unshell audit --library") :]
    assert "LEVEL         UNDISCLOSED-DERIVATIVE" in audit
    assert "WEIGHTS       identical: stories260K.bin (by content hashes" in audit


def test_every_public_name_is_the_documented_callable() -> None:
    """The package's names stay the functions even after their modules are imported directly
    (some load lazily)."""
    import unshell
    import unshell.lineage.fingerprint
    from unshell.library import store
    from unshell.scanning import discover  # noqa: F401

    for name in unshell.__all__:
        assert getattr(unshell, name) is not None, name
    assert unshell.scan.__module__ == "unshell.scanning" and callable(unshell.scan)
    assert unshell.search.__module__ == "unshell.library.search" and callable(unshell.search)
    assert unshell.fingerprint is unshell.lineage.fingerprint.fingerprint
    assert unshell.Library is store.Library
