"""Regression tests for the holes an adversarial pass found (issue 13): each builds its hostile
input in a few lines and checks the documented outcome (one line, the right exit code, a bound
that holds) where the code used to crash with exit 70, grow to gigabytes or accept the input.

The README's limits table is checked against the constants in the code here too, so the two
cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from foreign_layouts import make_tiny_llama
from unshell.cli.main import main
from unshell.declared import read_declared
from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI run in this process, tracebacks off."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSHELL_DEBUG", raising=False)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_model(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", {"w": np.zeros(4, np.float32)})
    return directory


# -- C1: card texts ---------------------------------------------------------------------------------


def test_card_licence_that_yaml_reads_as_a_huge_integer_is_not_a_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model(tmp_path / "m")
    (model / "README.md").write_text(
        "---\nlicense: 0x" + "f" * 6000 + "\nmodel_name: 0x" + "e" * 6000 + "\n---\n"
    )
    with open_checkpoint(model) as checkpoint:
        declared = read_declared(checkpoint)
    assert declared.license is None and declared.name is None
    code, out, err = run(["inspect", "--format", "json", str(model)], capsys)
    assert code == 0, err
    assert "license" not in json.loads(out)["declared"]


# -- C5: numbers in config.json, params.json and what convert writes --------------------------------


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("rope_theta", "1" + "0" * 4000),
        ("rms_norm_eps", "1" + "0" * 4000),
        ("rope_theta", "NaN"),
        ("rms_norm_eps", "Infinity"),
        ("rms_norm_eps", "1e400"),
        ("rms_norm_eps", "-1e-5"),
        ("rope_theta", '"10000"'),
        ("hidden_size", "-64"),
        ("num_hidden_layers", "2.5"),
    ],
)
def test_config_numbers_are_checked_when_read_and_convert_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, raw: str
) -> None:
    source = make_tiny_llama(tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    config[key] = "@@"
    (source / "config.json").write_text(json.dumps(config).replace('"@@"', raw))
    output = tmp_path / "out"
    code, _, err = run(["convert", str(source), "--to", "llama", "-o", str(output), "--no-verify"], capsys)
    assert code == 15, err
    assert f"config.json: {key} is" in one_line_error(err)
    assert not output.exists()
    code, _, err = run(["inspect", str(source)], capsys)
    assert code == 15 and key in one_line_error(err)


def test_declared_hyperparameters_from_any_source_must_be_finite_and_positive() -> None:
    from unshell.convert import plan
    from unshell.errors import InconsistentHeaderError

    assert plan._number(("a", None), ("b", 2)) == 2.0
    for bad in (float("nan"), float("inf"), -1e-5, 0, "1e-5", 10**4000, True):
        with pytest.raises(InconsistentHeaderError, match=r"GGUF llama\.rope\.freq_base"):
            plan._number(("GGUF llama.rope.freq_base", bad), ("fallback", 10000.0))
    with pytest.raises(InconsistentHeaderError, match="not a whole number"):
        plan._integer(("config max_position_embeddings", 2048.5))


def test_params_json_numbers_are_checked_when_read(tmp_path: Path) -> None:
    import torchzip
    from unshell.errors import InconsistentHeaderError

    folder = tmp_path / "meta"
    folder.mkdir()
    torchzip.save(
        folder / "consolidated.00.pth", torchzip.state_dict_refs({"norm.weight": np.ones(4, np.float32)})
    )
    (folder / "params.json").write_text('{"dim": 4, "n_heads": 1, "norm_eps": NaN, "vocab_size": -1}')
    with pytest.raises(InconsistentHeaderError, match=r"params\.json: norm_eps is nan"):
        open_checkpoint(folder)
    (folder / "params.json").write_text('{"dim": 4, "n_heads": 1, "norm_eps": 1e-5, "vocab_size": -1}')
    with open_checkpoint(folder) as checkpoint:
        assert checkpoint.metadata["params"]["vocab_size"] == -1
