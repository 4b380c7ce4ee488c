"""`unshell convert --verify`: does the converted checkpoint compute what the source computes?

The source runs through an independent reference forward pass written from its own layout's
definition (`unshell.conversion.reference`); the output runs through transformers'
``LlamaForCausalLM.from_pretrained``, the loader the conversion is for. Both see the same random
token ids, in float32 on CPU, and the report gives the largest absolute logit difference.

Where the output stores a weight in a narrower float than the source's values (``--dtype bf16``,
or a quantized source written as bf16), the reference runs on the source's values rounded by torch
to that type: the check is that the conversion moved every value to the right place, and the
rounding the user chose is measured apart (``rounding_logit_diff``: the same comparison against
the unrounded source, reported, never a pass condition).

Tolerances, stated in every report (the README's table):

* 1e-4 for float sources without folds (renames, splits, permutations, zero biases, casts): the two
  sides compute with the same numbers, in a different summation order, nothing more;
* 1e-3 for quantized sources (GGUF block types, llama2.c int8): both sides use the same decoded
  values, rounded the same way to the output dtype, but these are real trained models, where
  float32 summation order alone measured 6e-5 to 9e-5 (SmolLM2-135M Q4_1, logits up to 32): 1e-4
  would leave no headroom;
* 1e-3 where the conversion folds a runtime operation into weights (MiniCPM's scales, Baichuan2's
  NormHead): the folded product is rounded once more, which the reference does not do.

A wrong conversion (a swapped gate/up, a missed rotary permutation, a dropped scale) moves logits by
whole units, far above all three.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, MissingDependencyError, PathNotFoundError, UnshellError, UsageError
from ..formats import open_checkpoint
from ..formats.base import Checkpoint, sanitize
from ..inspection import InspectResult
from ..model import Model
from .reference import SourceModel, describe_source, reference_logits

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXACT_TOLERANCE",
    "FOLD_TOLERANCE",
    "QUANTIZED_TOLERANCE",
    "VerificationReport",
    "verify_conversion",
    "verify_model",
]

EXACT_TOLERANCE = 1e-4
FOLD_TOLERANCE = 1e-3
QUANTIZED_TOLERANCE = 1e-3

MAX_TOKENS = 4096
SMALL_MODEL_PARAMETERS = 50_000_000


@dataclass
class VerificationReport:
    """The outcome of running source and output on the same token ids."""

    max_abs_logit_diff: float
    passed: bool
    tolerance: float
    reference: str
    """The reference forward used for the source (a key of `unshell.conversion.reference.LAYOUTS`)."""
    tokens: int
    tolerance_reason: str = ""
    reference_description: str = ""
    max_abs_logit: float = 0.0
    """Largest absolute logit of the reference, to read the difference against."""
    argmax_agreement: float = 1.0
    """Fraction of positions where both sides predict the same next token."""
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    rounded_to: tuple[str, ...] = ()
    """Float types the output rounds source values to (the reference ran on rounded values)."""
    rounding_logit_diff: float | None = None
    """Max |logit difference| between the output and the unrounded source: the rounding's effect."""
    rounding_argmax_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_abs_logit_diff": _finite_or_none(self.max_abs_logit_diff),
            "tolerance": self.tolerance,
            "tolerance_reason": self.tolerance_reason,
            "reference": self.reference,
            "reference_description": self.reference_description,
            "max_abs_logit": _finite_or_none(self.max_abs_logit),
            "argmax_agreement": self.argmax_agreement,
            "tokens": self.tokens,
            "seed": self.seed,
            "dtype": "float32",
            "rounded_to": list(self.rounded_to),
            "rounding_logit_diff": None
            if self.rounding_logit_diff is None
            else _finite_or_none(self.rounding_logit_diff),
            "rounding_argmax_agreement": self.rounding_argmax_agreement,
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line for the command line."""
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"verification {verdict}: max |logit difference| {self.max_abs_logit_diff:.3g} "
            f"(tolerance {self.tolerance:g}, {self.tolerance_reason}) over {self.tokens} random tokens, "
            f"reference forward: {self.reference}"
        )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def verify_conversion(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    tokens: int = 16,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
    rounding: Mapping[str, str] | None = None,
) -> VerificationReport:
    """Compare the source's reference logits with ``LlamaForCausalLM`` on the converted output.

    Token ids are drawn uniformly from the source's vocabulary with ``numpy.random.default_rng(seed)``.
    ``mapping`` is the ``{source tensor name: reference name}`` the conversion was given, needed
    when roles are ambiguous from names and shapes (the reference forward never guesses either).
    ``rounding`` maps source tensor names to the narrower float (``BF16``, ``F16``) the output
    stores them in (None: read from the output's tensor types); the reference rounds them the same
    way, and the report adds the rounding's own effect on the logits.

    Raises:
        MissingDependencyError: torch or transformers is not installed (the ``[transformers]`` extra).
        UsageError: ``tokens`` is not between 1 and 4096.
        PathNotFoundError, InputError: the source cannot be read, no reference forward exists for
            it, or transformers cannot load the output as ``LlamaForCausalLM``.
        AmbiguousRolesError: roles that only a mapping decides, and none was given.
    """
    _checked_arguments(tokens, output)
    with Model.open(source) as opened:
        return verify_model(opened, output, tokens=tokens, seed=seed, mapping=mapping, rounding=rounding)


def _checked_arguments(tokens: int, output: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The backends (refused first: they are what is missing most often), then the arguments."""
    backends = _import_backends()
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= MAX_TOKENS:
        raise UsageError(f"verification tokens must be an integer from 1 to {MAX_TOKENS}, not {tokens!r}")
    if not Path(output).is_dir():
        raise PathNotFoundError(f"{sanitize(str(output))}: no converted model directory to verify")
    return backends


def verify_model(
    source: Model,
    output: str | os.PathLike[str],
    *,
    tokens: int = 16,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
    rounding: Mapping[str, str] | None = None,
) -> VerificationReport:
    """`verify_conversion` of an opened source: the recognition a conversion already made is the
    one the reference forward reads (the source is neither opened nor inspected again)."""
    torch, transformers = _checked_arguments(tokens, output)
    output_path = Path(output)
    checkpoint, result = source.checkpoint, source.inspection
    model = describe_source(checkpoint, result, mapping=mapping)
    ids = np.random.default_rng(seed).integers(0, model.vocab, size=tokens).tolist()
    used: set[str] = set()
    if rounding is None:
        rounding = _output_rounding(checkpoint, result, output_path, mapping)
    narrowed = {name: code for name, code in rounding.items() if code in ("BF16", "F16")}
    with _threads_for(torch, checkpoint.parameter_count):
        expected = reference_logits(checkpoint, model, ids, used=used, rounding=narrowed)
        unused = [n for n in checkpoint.tensors if n not in used and n not in set(result.ignored)]
        actual, loading_notes = _llama_logits(torch, transformers, output_path, ids)
        unrounded = reference_logits(checkpoint, model, ids) if narrowed else None
    report = _report(model, expected, actual, ids, seed, unused, loading_notes)
    if unrounded is not None:
        report.rounded_to = tuple(sorted(set(narrowed.values())))
        report.tolerance_reason += f"; both sides on weights rounded to {', '.join(report.rounded_to)}"
        report.rounding_logit_diff, report.rounding_argmax_agreement = _difference(unrounded, actual)
    return report


@contextlib.contextmanager
def _threads_for(torch: Any, parameters: int) -> Iterator[None]:
    """One intra-op thread for small models: their matmuls are microseconds, and on a busy machine
    waking a thread pool costs more than the work (30x slower measured on 2 loaded cores)."""
    previous = torch.get_num_threads()
    if parameters < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _import_backends() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "verifying a conversion needs torch and transformers: pip install 'unshell[transformers]'"
        ) from exc
    return torch, transformers


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """Silence transformers' progress bars and warnings; missing keys are reported by us instead."""
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _llama_logits(
    torch: Any, transformers: Any, output: Path, ids: list[int]
) -> tuple[np.ndarray, list[str]]:
    """Logits of the output as ``LlamaForCausalLM`` loads it, plus notes on what loading skipped."""
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    # transformers 4.56 renamed torch_dtype to dtype.
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    kwargs = {dtype_key: torch.float32, "attn_implementation": "eager", "output_loading_info": True}
    with _quiet_transformers(transformers):
        try:
            model, info = transformers.LlamaForCausalLM.from_pretrained(str(output), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(
                f"{sanitize(str(output))}: transformers cannot load it as LlamaForCausalLM: {sanitize(first_line)}"
            ) from None
    notes = []
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(n) for n in (info.get(key) or []))
        if names:
            shown = ", ".join(sanitize(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
            notes.append(f"LlamaForCausalLM loading: {len(names)} {key.replace('_', ' ')}: {shown}")
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    return _to_numpy(logits), notes


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor.detach().float().numpy(), dtype=np.float32)


def _output_rounding(
    checkpoint: Checkpoint, result: InspectResult, output: Path, mapping: Mapping[str, str] | None
) -> dict[str, str]:
    """Source tensor -> the narrower float its output tensor is stored in, from the output's own
    headers. Which output tensor a source tensor feeds is the plan's (names only: the row maps and
    folds, which this module checks, play no part)."""
    from .plan import build_plan

    try:
        with open_checkpoint(output) as converted:
            stored = {name: info.dtype for name, info in converted.tensors.items()}
        plan = build_plan(checkpoint, result, mapping=dict(mapping) if mapping else None)
    except UnshellError:
        return {}  # not a conversion unshell planned: nothing is known to be rounded
    return {
        recipe.source: stored[recipe.output]
        for recipe in plan.recipes
        if recipe.source is not None
        and stored.get(recipe.output) in ("BF16", "F16")
        and stored[recipe.output] != recipe.source_dtype
    }


def _difference(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """(max |difference|, fraction of positions with the same argmax); (inf, 0) for unlike shapes."""
    if actual.shape != expected.shape:
        return math.inf, 0.0
    delta = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff = float(delta.max()) if np.all(np.isfinite(delta)) else math.inf
    return diff, float(np.mean(actual.argmax(-1) == expected.argmax(-1)))


def _tolerance(model: SourceModel) -> tuple[float, str]:
    if model.quantized:
        return QUANTIZED_TOLERANCE, "quantized source, compared on its dequantized values"
    if model.folds:
        return FOLD_TOLERANCE, "runtime operation folded into weights"
    return EXACT_TOLERANCE, "exact transform"


def _report(
    model: SourceModel,
    expected: np.ndarray,
    actual: np.ndarray,
    ids: list[int],
    seed: int,
    unused: list[str],
    loading_notes: list[str],
) -> VerificationReport:
    tolerance, reason = _tolerance(model)
    notes = list(model.notes) + loading_notes
    if unused:
        shown = ", ".join(sanitize(n) for n in unused[:5]) + (" ..." if len(unused) > 5 else "")
        notes.append(f"source tensors the reference forward does not use: {shown}")
    if actual.shape != expected.shape:
        notes.append(f"logit shapes differ: source {list(expected.shape)}, output {list(actual.shape)}")
    diff, agreement = _difference(expected, actual)
    passed = diff <= tolerance and not loading_notes
    return VerificationReport(
        max_abs_logit_diff=diff,
        passed=passed,
        tolerance=tolerance,
        reference=model.layout,
        tokens=len(ids),
        tolerance_reason=reason,
        reference_description=model.description,
        max_abs_logit=float(np.abs(expected).max()) if expected.size else 0.0,
        argmax_agreement=agreement,
        seed=seed,
        notes=notes,
    )
