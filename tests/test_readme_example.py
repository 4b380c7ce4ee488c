"""The README's worked example is what unshell prints, literally, and its links lead somewhere.

The example's Python block is run as written (in a scratch folder that sees the repository's
`tests/` at the same relative path), then each `$ unshell ...` line of the console block that
follows it, and the output is compared with the README's text character for character.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## A worked example"
WRITTEN_BY_TESTS = {"tests/artifacts-out/"}  # the browser test's screenshots, not in the repository


def _example() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 5)]
    python = re.search(r"```python\n(.*?)```", section, flags=re.S)
    console = re.search(r"```console\n(.*?)```", section, flags=re.S)
    assert python and console, "the worked example has a python block and a console block"
    return python.group(1), console.group(1)


def _unshell(argv: list[str]) -> str:
    from unshell.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0, out.getvalue()
    return out.getvalue()


def test_the_worked_example_prints_what_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python, console = _example()
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    monkeypatch.chdir(tmp_path)
    exec(compile(python, "README.md (worked example)", "exec"), {})  # the reader's own steps
    assert (tmp_path / "my-model.bin").is_file()
    commands = [line for line in console.splitlines() if line.startswith("$ unshell ")]
    assert commands, "the console block shows at least one command"
    produced = ""
    for command in commands:
        produced += command + "\n" + _unshell(shlex.split(command)[2:])
    assert produced == console
    assert "DERIVED" in produced
    # What the text under the example says of an independently trained model.
    other = _unshell(["compare", "my-model.bin", "tests/data/fixtures/llama2xs.model.bin"])
    assert "VERDICT       INDEPENDENT" in other


def _relative_links(text: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_every_relative_link_and_repository_path_exists() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for document in documents:
        text = document.read_text()
        for target in _relative_links(text):
            if not (document.parent / target.split("#")[0]).exists():
                missing.append(f"{document.name}: link {target}")
        for anchor in re.findall(r"\]\(#([^)]+)\)", text):
            headings = {
                re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, re.M)
            }
            if anchor not in headings:
                missing.append(f"{document.name}: anchor #{anchor}")
    # The README names files of this repository in backticks: each must exist.
    readme = (ROOT / "README.md").read_text()
    for path in re.findall(r"`((?:docs|tests|benchmarks|tools|demo|src)/[^`\s*<>]+)`", readme):
        if path not in WRITTEN_BY_TESTS and not (ROOT / path.rstrip("/")).exists():
            missing.append(f"README.md: `{path}`")
    assert not missing, missing
    assert len(_relative_links(readme)) + readme.count("](#") >= 1


def test_the_readme_says_what_unshell_is_before_the_setup_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    before = "\n".join(lines[: lines.index("```bash")])
    assert "unshell is a command-line tool and Python library" in before
    text = "\n".join(lines)
    assert "Python 3.11" in text and "pip install -e '.[web]'" in text
    compare = text[text.index("## `unshell compare A B`") :]
    assert compare.index("What `derived` means, in plain words") < compare.index("**p_value**")
