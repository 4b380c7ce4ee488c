"""Small Llama-shaped models of known lineage, made with `benchmarks/make_7b_pair.py`'s generator:
`base` (seed 0), `noisy` (base plus 10 % element noise: a derivative) and others of their own seeds
(1, 2, ...: independent of both and of each other). Ground truth is how they were made."""

from __future__ import annotations

from pathlib import Path

from file_modules import ROOT, file_module


def seeded_llamas(root: Path, others: tuple[str, ...], **shape: int) -> dict[str, Path]:
    """The models under ``root`` by label, at the `make_7b_pair.Llama` shape ``shape``."""
    make = file_module(ROOT / "benchmarks" / "make_7b_pair.py", "unshell_bench_make_7b_pair")
    llama = make.Llama(**shape)
    variants = {"base": make.base_variant(llama, 0), "noisy": make.noisy_variant(llama, 0, 0.1)}
    variants.update({name: make.base_variant(llama, seed) for seed, name in enumerate(others, start=1)})
    for label, variant in variants.items():
        make.write_model(root / label, llama, variant)
    return {label: root / label for label in variants}
