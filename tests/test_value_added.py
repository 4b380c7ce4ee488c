"""How much of a derivative is new (`unshell.lineage.change`), and rounding is not training.

Ground truth is how each file was made: the lineage zoo's manifest (tools/zoo.py), the
stories260K derivatives made in tests/derivatives.py, llama.cpp's own requantization of SmolLM2,
and Qwen's published Q4_K_M file. Never unshell's own answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import unshell
from unshell.lineage.change import (
    FINETUNED,
    REQUANTIZED,
    ValueAdded,
    change_rank,
    compare_tensor,
    explained_by_rounding,
    revise_how,
)

# --- quantizers written here from ggml's reference code (ggml-quants.c), to make test data ------


def q8_0(values: np.ndarray) -> np.ndarray:
    """quantize_row_q8_0_ref then dequantize: blocks of 32, d = amax / 127, q = round(x / d)."""
    blocks = values.reshape(-1, 32).astype(np.float32)
    d = (np.abs(blocks).max(axis=1) / 127).astype(np.float16).astype(np.float32)
    inverse = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0)
    return (np.round(blocks * inverse[:, None]) * d[:, None]).reshape(values.shape)


def q4_0(values: np.ndarray) -> np.ndarray:
    """quantize_row_q4_0_ref then dequantize: d = (signed max) / -8, q = clip(round(x / d) + 8, 0, 15)."""
    blocks = values.reshape(-1, 32).astype(np.float32)
    signed_max = blocks[np.arange(len(blocks)), np.argmax(np.abs(blocks), axis=1)]
    d = (signed_max / -8).astype(np.float16).astype(np.float32)
    inverse = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0)
    q = np.clip(np.round(blocks * inverse[:, None]) + 8, 0, 15)
    return ((q - 8) * d[:, None]).reshape(values.shape)


def bf16(values: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest even) and back."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((256, 512)).astype(np.float32) * 0.05


@pytest.fixture(scope="module")
def training_step(weights: np.ndarray) -> np.ndarray:
    """A change of 1 % of the weights' scale: a tenth of the zoo's lightest fine-tune (5 %)."""
    return np.random.default_rng(8).standard_normal(weights.shape).astype(np.float32) * 0.0005


@pytest.mark.parametrize("quantize", [q8_0, q4_0], ids=["q8_0", "q4_0"])
def test_a_requantized_or_dequantized_copy_is_rounding(quantize, weights: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    quantized = quantize(weights)
    assert explained_by_rounding(weights, quantized) == "grid of B"
    assert explained_by_rounding(quantized, weights) == "grid of A"
    # A dequantized copy stored in bf16 is the grid rounded again: a cast of it.
    assert explained_by_rounding(quantized, bf16(quantized)) == "bf16/f16 cast"
    change = compare_tensor("w", "mlp.up.weight", 0, 0, weights, quantized)
    assert change.kind == REQUANTIZED and change.relative_change is not None and change.relative_change > 0


@pytest.mark.parametrize("quantize", [q8_0, q4_0], ids=["q8_0", "q4_0"])
def test_training_under_quantization_is_not_rounding(
    quantize,  # type: ignore[no-untyped-def]
    weights: np.ndarray,
    training_step: np.ndarray,
) -> None:
    # Q4_0's grid step (about 20 % of a block's largest value) dwarfs the change, yet values cross
    # grid points: rounding alone cannot give them.
    tuned_then_quantized = quantize(weights + training_step)
    assert explained_by_rounding(weights, tuned_then_quantized) is None
    assert compare_tensor("w", "mlp.up.weight", 0, 0, weights, tuned_then_quantized).kind == FINETUNED
    assert explained_by_rounding(weights, weights + training_step) is None


@pytest.mark.parametrize("noise", [0.01, 0.03])
def test_a_change_inside_the_cells_of_a_dequantized_grid_is_not_rounding(
    weights: np.ndarray, noise: float
) -> None:
    """Truth: B is a Q4_0 model's dequantized values plus Gaussian noise of 1 % or 3 % of the
    weights' std, stored in float32 or requantized to Q8_0. Every value of B still rounds onto A's
    Q4_0 grid (the noise is under a tenth of its step), but B's values sit next to A's points, not
    anywhere in their cells as values rounded onto that grid would: a change, not rounding."""
    a = q4_0(weights)
    change = (
        np.random.default_rng(11).standard_normal(weights.shape).astype(np.float32) * noise * weights.std()
    )
    for b in (a + change, q8_0(a + change)):
        assert explained_by_rounding(a, b) is None
        tensor = compare_tensor("w", "mlp.up.weight", 0, 0, a, b)
        assert tensor.kind == FINETUNED and tensor.relative_change is not None
        assert 0.5 * noise < tensor.relative_change < 2 * noise, tensor
    # The values A's grid was rounded from lie anywhere in its cells: rounding, whichever side.
    assert (
        explained_by_rounding(weights, a) == "grid of B" and explained_by_rounding(a, weights) == "grid of A"
    )


def test_a_q8_0_requantization_of_a_q4_grid_is_rounding(weights: np.ndarray) -> None:
    """Truth: B is A's Q4_0 values requantized to Q8_0 (what llama.cpp's requantization of a Q4
    release does), and the reverse. B's values sit near A's Q4_0 points (within half a Q8_0 step),
    and A's Q4_0 values round onto B's Q8_0 grid to give B: each side's grid holds the other's values
    rounded, so the two are one set of values on two grids."""
    a = q4_0(weights)
    b = q8_0(a)
    assert not np.array_equal(a, b)
    assert explained_by_rounding(a, b) is not None and explained_by_rounding(b, a) is not None
    assert compare_tensor("w", "mlp.up.weight", 0, 0, a, b).kind == REQUANTIZED
    assert compare_tensor("w", "mlp.up.weight", 0, 0, b, a).kind == REQUANTIZED


def test_low_rank_and_full_rank_changes(weights: np.ndarray, training_step: np.ndarray) -> None:
    rng = np.random.default_rng(9)
    lora = (rng.standard_normal((256, 4)) @ rng.standard_normal((4, 512))).astype(np.float32) * 1e-3
    assert change_rank(lora) == (4, True)
    rank, low = change_rank(training_step)
    assert not low and (rank is None or rank > 64)
    change = compare_tensor("w", "attn.q.weight", 0, 0, weights, weights + lora)
    assert change.kind == FINETUNED and change.low_rank and change.rank == 4
    assert change.degrees_of_freedom == 4 * (256 + 512)


def test_how_loses_its_training_word_when_only_rounding_changed(weights: np.ndarray) -> None:
    requantized = ValueAdded([compare_tensor("w", "mlp.up.weight", 0, 0, weights, q4_0(weights))])
    assert revise_how(["pruned", "finetune"], requantized) == ["pruned", "quantized"]
    tuned = ValueAdded([compare_tensor("w", "mlp.up.weight", 0, 0, weights, weights * 1.01 + 0.001)])
    assert revise_how(["quantized"], tuned) == ["quantized", "finetune"]


def test_the_training_word_follows_the_effort(weights: np.ndarray) -> None:
    # Every weight moved by 0.06 (RMS): more than the zoo's continued pretraining moved its layer
    # matrices (0.055 after 400 steps at 4e-3), whatever the weights' own scale.
    rng = np.random.default_rng(10)
    for scale in (1.0, 4.0):
        a = weights * scale
        moved = a + rng.standard_normal(a.shape).astype(np.float32) * 0.06
        value = ValueAdded([compare_tensor("w", "mlp.up.weight", 0, 0, a, moved)])
        assert revise_how(["pruned", "finetune"], value) == ["pruned", "continued-pretraining"]
    # 0.0026 per weight: the zoo's 150-step fine-tune at 2e-4, whatever the weights' scale.
    for scale in (1.0, 4.0):
        a = weights * scale
        moved = a + rng.standard_normal(a.shape).astype(np.float32) * 0.0026
        value = ValueAdded([compare_tensor("w", "mlp.up.weight", 0, 0, a, moved)])
        assert revise_how(["continued-pretraining"], value) == ["finetune"]
        effort = value.effort()
        assert effort is not None and 0.01 < effort["lr_integral"] < 0.03


# --- real derivatives -----------------------------------------------------------------------------


def _ordered(results: dict[str, unshell.CompareResult], names: tuple[str, ...]) -> list[str]:
    keys = {name: results[name].value_added.order_key() for name in names}  # type: ignore[union-attr]
    return sorted(names, key=lambda name: keys[name])


@pytest.mark.slow
def test_stories260k_derivatives_are_ordered_by_what_they_add(fixtures_dir: Path) -> None:
    """stories260K renamed, requantized to Q8_0, LoRA-tuned, fine-tuned and continued-pretrained
    (tests/derivatives.py says how): the value-added report orders them as they were made."""
    from derivatives import STORIES_ORDER, stories_derivatives

    made = stories_derivatives()
    results = {name: unshell.compare(fixtures_dir / "stories260K.bin", path) for name, path in made.items()}
    assert all(r.value_added is not None for r in results.values())
    assert _ordered(results, STORIES_ORDER) == list(STORIES_ORDER)
    by = {name: r.value_added for name, r in results.items()}
    fractions = {name: v.fractions() for name, v in by.items() if v is not None}
    assert fractions["rename"]["copied"] == 1.0
    assert fractions["requantize"][REQUANTIZED] > 0.99 and "finetune" not in results["requantize"].how
    assert "quantized" in results["requantize"].how
    lora = results["lora"].value_added
    assert lora is not None
    components = lora.components()
    # Only q_proj and v_proj were trained, by rank-4 adapters: the rest is copied.
    assert set(components) >= {"attention", "ffn", "embeddings"}
    assert components["ffn"]["kinds"] == {"copied": 1.0}
    assert components["attention"]["low_rank"] is True and components["attention"]["rank"] == 4
    assert fractions["finetune"][FINETUNED] == 1.0 and fractions["continued"][FINETUNED] == 1.0
    assert "fine-tune" in lora.summary() or "low-rank" in lora.summary()
    # The training word agrees with the order: the LoRA and the fine-tune are fine-tunes, the 400
    # steps at 3e-3 continued pretraining (the drift of MLP rows, 0.09 on stories260K's large
    # weights, read it as a fine-tune).
    assert "finetune" in results["lora"].how and "continued-pretraining" not in results["lora"].how
    assert "finetune" in results["finetune"].how
    assert "continued-pretraining" not in results["finetune"].how
    assert "continued-pretraining" in results["continued"].how and "finetune" not in results["continued"].how


@pytest.mark.slow
def test_zoo_derivatives_are_ordered_by_what_they_add() -> None:
    from zoo_fixture import compared, zoo

    bases = zoo().bases
    root = Path(bases["base-s0"]).parent
    # What was done to base-s0 (zoo.json recipes): renamed; GGUF Q8_0; LoRA rank 4 on q and v
    # (150 steps, lr 3e-3, merged); full fine-tune (150 steps, lr 2e-4); continued pretraining
    # (400 steps, lr 4e-3 constant).
    order = ("base-s0-renamed", "q8_0.gguf", "lora-merged", "finetune", "continued-pretraining")
    results = {name: compared(root / "base-s0", root / name) for name in order}
    assert _ordered(results, order) == list(order)
    for name in ("q8_0.gguf", "q4_k.gguf", "q4_0.gguf"):
        result = compared(root / "base-s0", root / name)
        assert result.value_added is not None and result.value_added.fractions()[REQUANTIZED] > 0.99, name
        assert "finetune" not in result.how and "quantized" in result.how, (name, result.how)
    effort = results["finetune"].value_added.effort()  # type: ignore[union-attr]
    # 150 steps at 2e-4 under the cosine schedule (83 steps' worth at a constant 2e-4): the
    # calibration's own point, read back through the whole pipeline.
    assert effort is not None and 60 <= effort["steps_at_reference_lr"] <= 110
    assert results["finetune"].how == ["finetune"]
    assert results["lora-merged"].how == ["finetune"]
    assert results["continued-pretraining"].how == ["continued-pretraining"]


# The learning-rate integral (the sum of the per-step rates) of runs made at widths other than
# the calibration's 128, or with recipes it did not use, from their recipes (tests/derivatives.py,
# tools/zoo.py's Settings): linear warmup, then cosine decay to a tenth of the peak, or constant.
HELD_OUT_EFFORT = {
    # stories260K, 64 wide (its weights 3.7 times the zoo's scale), trained on Python text:
    "stories finetune": 0.01673,  # 60 steps, peak 5e-4, warmup 10, cosine
    "stories continued": 1.171,  # 400 steps at 3e-3, warmup 20, constant
    "zoo stories260K-finetune": 0.1649,  # 300 steps, peak 1e-3, warmup 20, cosine
    # the zoo's 128-wide base-s0, healed or extended at three times the fine-tune's rate:
    "zoo upscaled": 0.04977,  # 150 steps, peak 6e-4, warmup 10, cosine
    "zoo vocab-extended": 0.04977,
}


@pytest.mark.slow
def test_effort_is_calibrated_across_widths(fixtures_dir: Path) -> None:
    """The effort estimate (steps x learning rate) is within a factor of 3 of the truth on runs the
    calibration did not see, at another width and weight scale (benchmarks/RESULTS.md, "Effort
    across widths", adds widths 64 and 256 of the zoo's own recipe)."""
    from derivatives import stories_derivatives
    from zoo_fixture import compared, zoo

    root = Path(zoo().bases["base-s0"]).parent
    stories = fixtures_dir / "stories260K.bin"
    made = stories_derivatives()
    pairs = {
        "stories finetune": (stories, made["finetune"]),
        "stories continued": (stories, made["continued"]),
        "zoo stories260K-finetune": (stories, root / "stories260K-finetune"),
        "zoo upscaled": (root / "base-s0", root / "upscaled"),
        "zoo vocab-extended": (root / "base-s0", root / "vocab-extended"),
    }
    estimates = {}
    for name, (a, b) in pairs.items():
        value = compared(a, b).value_added
        effort = None if value is None else value.effort()
        assert effort is not None, name
        estimates[name] = effort["lr_integral"]
    off = {name: estimates[name] / truth for name, truth in HELD_OUT_EFFORT.items()}
    assert all(1 / 3 <= ratio <= 3 for ratio in off.values()), off


@pytest.mark.slow
def test_a_real_requantization_is_not_a_finetune() -> None:
    """SmolLM2-135M-Instruct as published (Q4_1) against llama.cpp's own requantization of it to
    Q8_0 (about 30 CPU seconds)."""
    from artifacts import fetch
    from llama_server import requantized_smollm2

    result = unshell.compare(fetch("smollm2_gguf"), requantized_smollm2("Q8_0"))
    assert result.verdict == "derived"
    assert "quantized" in result.how and "finetune" not in result.how, result.how
    value = result.value_added
    assert value is not None and value.score == 0.0
    fractions = value.fractions()
    # llama.cpp requantized the layer matrices and kept the rest (the embedding, the norms) as it was.
    assert fractions[REQUANTIZED] > 0.75 and fractions["copied"] + fractions[REQUANTIZED] == pytest.approx(
        1.0
    )


@pytest.mark.slow
def test_qwen_dequantized_to_bf16_is_rounding(tmp_path: Path) -> None:
    """Qwen2.5-Coder-0.5B-Instruct's published Q4_K_M GGUF (Q4_K, Q6_K and Q8_0 tensors), its
    layers dequantized by unshell's reader and written as bf16 safetensors: rounding, not
    training (the issue's layer drop of this file read as `finetune`)."""
    from artifacts import fetch
    from unshell.formats import open_checkpoint
    from unshell.formats.safetensors import write_safetensors

    with open_checkpoint(fetch("qwen05_gguf")) as gguf:
        names = [
            n for n in gguf.tensors if n.startswith(("blk.0.", "blk.23.")) and len(gguf.info(n).shape) == 2
        ]
        types = {gguf.info(n).dtype for n in names}
        original = {n: np.asarray(gguf.read(n), dtype=np.float32) for n in names}
    assert {"Q4_K", "Q6_K"} <= types
    write_safetensors(tmp_path / "b.safetensors", original, dtypes=dict.fromkeys(original, "BF16"))
    with open_checkpoint(tmp_path / "b.safetensors") as copy:
        for name, values in original.items():
            stored = np.asarray(copy.read(name), dtype=np.float32)
            change = compare_tensor(name, "mlp.up.weight", 0, 0, values, stored)
            assert change.kind == REQUANTIZED, (name, change)
            # A change the size of the zoo's lightest fine-tune (5 % of the weights' scale) is not.
            rng = np.random.default_rng(0)
            step = (rng.standard_normal(values.shape) * 0.05 * values.std()).astype(np.float32)
            assert compare_tensor(name, "mlp.up.weight", 0, 0, values, values + step).kind == FINETUNED


@pytest.mark.slow
def test_audit_and_html_report_show_the_value_added() -> None:
    from unshell.report.html import audit_html, compare_html
    from zoo_fixture import compared, zoo

    root = Path(zoo().bases["base-s0"]).parent
    audit = unshell.audit(root / "q4_0.gguf", against=root / "base-s0")
    added = audit.detected["weights"]["value_added"]
    assert added["fractions"]["requantized"] > 0.99
    assert added["substantive_change"].endswith(
        "(evidence against a substantive change: B's compared values are A's, copied or rounded)"
    )
    assert added["substantive_change"] in audit.notes
    tuned = unshell.audit(root / "finetune", against=root / "base-s0").detected["weights"]["value_added"]
    assert "(evidence of a substantive change" in tuned["substantive_change"]

    page = audit_html(audit)
    section = page[page.index('id="weights"') : page.index("</section>", page.index('id="weights"'))]
    assert "evidence against a substantive change" in section and "requantized 100%" in section

    page = compare_html(compared(root / "base-s0", root / "upscaled"))
    section = page[page.index('id="value"') : page.index("</section>", page.index('id="value"'))]
    # layers 4 -> 6 by duplicating 1 and 2, then trained: six bars, two of them added layers.
    assert section.count("B layer ") >= 6 and "2 layer(s) added" in section
    assert "<svg" in section and "fine-tuned" in section


def test_a_change_within_a_casts_bound_is_not_a_cast(weights: np.ndarray) -> None:
    # Every value moved by less than bf16's rounding, but neither side holds bf16 values: training.
    nudged = weights * np.float32(1 + 2.0**-10)
    assert explained_by_rounding(weights, nudged) is None
    assert explained_by_rounding(weights, bf16(weights)) == "bf16/f16 cast"
    assert explained_by_rounding(weights, weights.astype(np.float16).astype(np.float32)) == "bf16/f16 cast"
