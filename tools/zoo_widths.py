"""The lineage zoo's training runs at other widths, to calibrate "how much training" (issue 15).

`unshell.lineage.change` turns the size of a weight change into training effort (steps x
learning rate) with points measured on the zoo's 128-wide models. This builds the same base and the
same fine-tune, stronger fine-tune and continued pretraining at other widths (head size 32, FFN
twice the width, 4 layers, the zoo's corpora, recipes and seeds), so that the calibration can be
checked where it was not made:

    python tools/zoo_widths.py [--widths 64 256]

Models are cached under ``~/.cache/unshell-tests/zoo-widths/<key>/w<width>/<run>/`` (key: this
file, tools/zoo.py and the recipes), built in a temporary folder renamed into place. About 1
minute for width 64 and 4 for width 256 on one core. Used by benchmarks/bench_value_added.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
WIDTHS = (64, 256)
HEAD_DIM = 32


def _zoo() -> ModuleType:
    module = sys.modules.get("unshell_tools_zoo")
    if module is None:
        spec = importlib.util.spec_from_file_location("unshell_tools_zoo", HERE / "zoo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["unshell_tools_zoo"] = module
        spec.loader.exec_module(module)
    return module


def runs() -> dict[str, tuple[str, str, int]]:
    """Each derivative of the base: (recipe field of the zoo's Settings, corpus, seed), as the zoo
    trains base-s0's finetune and continued-pretraining; ``heal`` is the zoo's healing recipe
    (three times the fine-tune's rate) on the fine-tune's data."""
    return {
        "finetune": ("finetune", "docstrings part 1", 11),
        "heal": ("heal", "docstrings part 1", 12),
        "continued": ("continued", "docstrings + docs", 13),
    }


def build(widths: Sequence[int] = WIDTHS, log: bool = True) -> dict[int, dict[str, Path]]:
    """``{width: {"base": path, "finetune": path, ...}}``, built once and cached."""
    zoo = _zoo()
    settings = zoo.SETTINGS
    recipes = {name: dataclasses.asdict(getattr(settings, field)) for name, (field, _, _) in runs().items()}
    key_text = json.dumps(
        {"recipes": recipes, "pretrain": dataclasses.asdict(settings.pretrain), "head_dim": HEAD_DIM},
        sort_keys=True,
    )
    key = hashlib.sha256(
        key_text.encode() + (HERE / "zoo.py").read_bytes() + Path(__file__).read_bytes()
    ).hexdigest()[:16]
    root = zoo.cache_root() / "zoo-widths" / key
    out: dict[int, dict[str, Path]] = {}
    for width in widths:
        folder = root / f"w{width}"
        out[width] = {name: folder / name for name in ("base", *runs())}
        if (folder / "done").is_file():
            continue
        with zoo._locked(root / f".w{width}.lock"):
            if not (folder / "done").is_file():
                zoo.build_into(folder, lambda temp, width=width: _build_width(temp, width, log))
    return out


def _build_width(out: Path, width: int, log: bool) -> None:
    zoo = _zoo()
    settings = zoo.SETTINGS
    started = time.monotonic()
    text = zoo.corpora()
    bpe, _ = zoo.tokenizers(settings)
    data = {
        "docs": bpe.encode(text.docs),
        "docstrings part 1": bpe.encode(text.docstrings_1),
    }
    # The zoo's continued pretraining runs on both docstring halves and the docs.
    data["docstrings + docs"] = np.concatenate(
        [data["docstrings part 1"], bpe.encode(text.docstrings_2), data["docs"]]
    )
    shape = dataclasses.replace(
        zoo.base_shape(settings, bpe.vocab_size),
        hidden=width,
        heads=width // HEAD_DIM,
        kv_heads=max(1, width // HEAD_DIM // 2),
        head_dim=HEAD_DIM,
        intermediate=2 * width,
    )
    with zoo.torch_session():
        base, _ = zoo.train_copy(zoo.init_params(shape, 0), shape, data["docs"], settings.pretrain, 0)
        zoo.save_hf(out / "base", base, shape, bpe)
        for name, (field, corpus, seed) in runs().items():
            tuned, _ = zoo.train_copy(base, shape, data[corpus], getattr(settings, field), seed)
            zoo.save_hf(out / name, tuned, shape, bpe)
            if log:
                print(f"width {width}: {name} after {time.monotonic() - started:.0f}s", file=sys.stderr)
    (out / "done").write_text("\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS), help="model widths to build")
    args = parser.parse_args(argv)
    for width, paths in build(args.widths).items():
        print(width, paths["base"].parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
