"""From an inspected checkpoint to a conversion plan: one recipe per output tensor, before any data.

Recognition (`unshell.inspect`) gives every source tensor a role (``attn.q.weight``...) and a
layer, and names the matched catalog family; the family's catalog file says how its fused tensors
are laid out. The plan turns that into, for every Hugging Face Llama tensor:

* which source tensor it comes from (or none: an explicit zero bias);
* which rows, in which order (row maps: fused splits, the rotary permutation);
* which value folds (MiniCPM's scales, Baichuan2's NormHead);
* its output dtype and shape, hence its exact byte size, so the writer can lay out every
  safetensors header before reading a single weight.

Everything that makes the source not exactly Llama is refused here, with the reason, before
anything is written. Roles that neither names nor shapes decide are never guessed: the plan
refuses and lists them, and a user mapping (``{source name: reference name}``) resolves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..arch.catalog import Family, family_by_id
from ..arch.expr import parse_linear
from ..arch.recognize import Assignment
from ..errors import (
    AmbiguousRolesError,
    ConversionRefusedError,
    InconsistentHeaderError,
    UsageError,
)
from ..formats.base import Checkpoint, expected_nbytes, sanitize
from ..formats.facts import ForwardHeader, forward_header
from ..inspection import InspectResult
from ..numbers import MAX_REAL, MAX_WHOLE, checked_float, describe
from .transforms import FLOAT_CODES, OUTPUT_DTYPES

__all__ = [
    "SUPPORTED_FAMILIES",
    "ConversionPlan",
    "Dimensions",
    "Recipe",
    "Step",
    "build_plan",
    "output_dtype_code",
]

TARGET = "llama"

SUPPORTED_FAMILIES = frozenset(
    {
        "llama",
        "yi",
        "mistral",
        "deepseek-v1",
        "internlm",
        "internlm2",
        "baichuan",
        "qwen",
        "qwen2",
        "phi3",
        "minicpm",
    }
)

# Why a recognized family is not exactly Llama, in full, where its catalog facts (norm, activation,
# positions, residual) do not say it all; other families get a reason assembled from their facts.
_FAMILY_REASONS: dict[str, str] = {
    "baichuan-alibi": "Baichuan-13B and Baichuan2-13B add ALiBi biases to attention instead of rotary positions "
    "(told from the config: model_max_length without max_position_embeddings, or hidden size 5120)",
    "chatglm": "ChatGLM rotates only the first half of each head, in adjacent pairs (partial rotary); "
    "Llama rotates whole heads",
    "glm": "GLM rotates only half of each head (partial rotary); Llama rotates whole heads",
    "glm4": "GLM-4 rotates only half of each head (partial rotary) and adds post-sublayer norms",
    "gemma": "Gemma's MLP is GeGLU (tanh GELU): transformers could run it with another hidden_act, but "
    "llama.cpp's and vLLM's Llama loaders are SiLU-only, so it would not load as Llama everywhere",
    "gemma2": "Gemma 2 has a GeGLU MLP (llama.cpp's and vLLM's Llama are SiLU-only), extra pre/post "
    "feed-forward norms and logit soft-capping",
    "gemma3": "Gemma 3 has a GeGLU MLP (llama.cpp's and vLLM's Llama are SiLU-only), per-head q/k norms and "
    "sandwich norms",
    "qwen3": "Qwen3 normalizes each query and key head (q_norm/k_norm), which Llama has no slot for",
    "olmo": "OLMo's norms are non-parametric LayerNorms (mean subtraction) where Llama has RMSNorm",
    "olmo2": "OLMo 2 normalizes after each sublayer and normalizes q/k",
    "mixtral": "Mixtral is a mixture of experts; Llama has one dense MLP per layer",
    "falcon": "Falcon runs attention and MLP in parallel from one LayerNorm (with bias) and has a GELU MLP; "
    "Llama runs them in sequence, with RMSNorm and a SiLU-gated MLP",
    "falcon-new-decoder": "Falcon-40B/180B run attention and MLP in parallel from LayerNorms (with bias) "
    "and have a GELU MLP",
    "gpt_neox": "GPT-NeoX runs attention and MLP in parallel (use_parallel_residual), with LayerNorm (with bias), "
    "a GELU MLP and rotary over part of each head",
    "phi": "Phi-1/2 run attention and MLP in parallel from one LayerNorm, with a GELU MLP and partial rotary",
}

_FACT_REASONS = {
    ("norm", "layernorm"): "LayerNorm (mean subtraction, bias) where Llama has RMSNorm",
    ("positional", "alibi"): "ALiBi attention biases where Llama has rotary positions",
    ("positional", "learned"): "learned absolute position embeddings where Llama has rotary positions",
    ("positional", "rope-partial"): "rotary applied to part of each head only (partial rotary)",
    (
        "parallel_residual",
        True,
    ): "attention and MLP in parallel (one residual) where Llama runs them in sequence",
}

SUPPORTED_ROPE_SCALING = frozenset({"default", "linear", "dynamic", "llama3", "yarn"})
SILU = frozenset({"silu", "swiglu", "swish"})

LLAMA_ROLES_PER_LAYER = (
    "attn_norm.weight",
    "attn.q.weight",
    "attn.k.weight",
    "attn.v.weight",
    "attn.o.weight",
    "ffn_norm.weight",
    "mlp.gate.weight",
    "mlp.up.weight",
    "mlp.down.weight",
)
ATTENTION_BIASES = ("attn.q.bias", "attn.k.bias", "attn.v.bias", "attn.o.bias")
MLP_BIASES = ("mlp.gate.bias", "mlp.up.bias", "mlp.down.bias")
ROTARY_ROLES = {
    "attn.q.weight": "heads",
    "attn.q.bias": "heads",
    "attn.k.weight": "kv_heads",
    "attn.k.bias": "kv_heads",
}

MINICPM_SCALARS = ("scale_emb", "scale_depth", "dim_model_base")


@dataclass(frozen=True)
class Dimensions:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    def symbols(self) -> dict[str, int]:
        """The catalog's shape symbols (``H``, ``nh*d`` as ``Q``...) for evaluating its expressions."""
        return {
            "H": self.hidden,
            "L": self.layers,
            "nh": self.heads,
            "nkv": self.kv_heads,
            "d": self.head_dim,
            "I": self.intermediate,
            "V": self.vocab,
            "Q": self.heads * self.head_dim,
            "K": self.kv_heads * self.head_dim,
        }


@dataclass(frozen=True)
class Step:
    """One transform of a recipe: a row map (see `transforms.row_index`) or a value fold."""

    op: str
    args: dict[str, Any]
    text: str

    @property
    def moves_rows(self) -> bool:
        return self.op not in ("scale", "normalize_rows")

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in self.args.items()},
            "what": self.text,
        }


# (source, output) float types whose every value the output holds exactly.
_WIDENING = frozenset(
    {
        ("F16", "F32"),
        ("BF16", "F32"),
        ("F32", "F64"),
        ("F16", "F64"),
        ("BF16", "F64"),
        *((f8, wide) for f8 in ("F8_E4M3", "F8_E5M2") for wide in ("F16", "BF16", "F32", "F64")),
    }
)


@dataclass
class Recipe:
    """How one output tensor is made."""

    output: str
    role: str
    layer: int | None
    shape: tuple[int, ...]
    dtype: str
    source: str | None
    """The source tensor read (None: the tensor is zeros)."""
    source_dtype: str | None = None
    steps: list[Step] = field(default_factory=list)
    source_layer: int | None = None
    """The layer index in the source's name (the output renumbers from 0 when they differ)."""

    @property
    def nbytes(self) -> int:
        return expected_nbytes(self.dtype, self.shape)

    @property
    def row_maps(self) -> list[Step]:
        return [s for s in self.steps if s.moves_rows]

    @property
    def folds(self) -> list[Step]:
        return [s for s in self.steps if not s.moves_rows]

    @property
    def exactness(self) -> str:
        """``bitwise``: the output holds the source's bits; ``widened``: the same values in a wider
        float; ``rounded``: float values rounded once to a narrower float (``--dtype``);
        ``dequantized``: decoded values, rounded once to the output dtype; ``fold``: new values,
        rounded once."""
        if self.folds:
            return "fold"
        if self.source is None or self.source_dtype == self.dtype:
            return "bitwise"
        if self.source_dtype not in FLOAT_CODES and not str(self.source_dtype).startswith("F8"):
            return "dequantized"
        return "widened" if (self.source_dtype, self.dtype) in _WIDENING else "rounded"

    @property
    def transform_class(self) -> str:
        if self.source is None:
            return "zeros"
        kinds = [s.op for s in self.steps]
        return "+".join(kinds) if kinds else "rename"


@dataclass
class ConversionPlan:
    source: str
    source_format: str
    family: str
    matched_family: str
    reference: str
    dims: Dimensions
    rotary: str
    """Row order of the source's q/k: ``hf`` (rotate-half) or ``meta`` (interleaved pairs)."""
    recipes: list[Recipe]
    config: dict[str, Any]
    dropped: list[dict[str, str]]
    notes: list[str]
    mapped: int = 0
    tied_in_source: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(r.nbytes for r in self.recipes)

    @property
    def exact(self) -> bool:
        return all(r.exactness == "bitwise" for r in self.recipes)


# -- refusals -----------------------------------------------------------------------------------------


def _family_reasons(family: Family) -> list[str]:
    if family.family in _FAMILY_REASONS:
        return [_FAMILY_REASONS[family.family]]
    facts = family.facts
    reasons = []
    for (key, value), reason in _FACT_REASONS.items():
        if facts.get(key) == value:
            reasons.append(reason)
    activation = facts.get("activation")
    if isinstance(activation, str) and activation not in SILU:
        reasons.append(f"a {activation} MLP where Llama's is SiLU-gated")
    return reasons or [f"{family.family} has tensors Llama has no slot for"]


def _refuse_family(result: InspectResult) -> Family:
    recognition = result.recognition
    if recognition.matched_family is None or recognition.confidence in ("none", "low"):
        detail = "; ".join(recognition.evidence) or "no catalog family fits"
        raise ConversionRefusedError(f"not recognized as an architecture unshell can convert ({detail})")
    if recognition.unexplained:
        names = ", ".join(sanitize(n) for n in recognition.unexplained[:5])
        raise ConversionRefusedError(
            f"{len(recognition.unexplained)} tensors fit no role of {recognition.matched_family} (e.g. {names})"
        )
    family = family_by_id(recognition.matched_family)
    assert family is not None
    if family.family not in SUPPORTED_FAMILIES:
        reasons = "; ".join(_family_reasons(family))
        raise ConversionRefusedError(f"{family.family} is not exactly Llama: {reasons}")
    return family


def _config_refusals(family: Family, config: dict[str, Any]) -> None:
    """Config switches that change the math of an otherwise Llama-shaped family."""
    if family.family == "baichuan":
        if "max_position_embeddings" not in config and "model_max_length" in config:
            raise ConversionRefusedError(
                "baichuan-alibi is not exactly Llama: " + _FAMILY_REASONS["baichuan-alibi"]
            )
        if config.get("hidden_size") == 5120:
            raise ConversionRefusedError(
                "baichuan-alibi is not exactly Llama: " + _FAMILY_REASONS["baichuan-alibi"]
            )
    activation = config.get("hidden_act") or config.get("hidden_activation")
    if isinstance(activation, str) and activation.lower() not in SILU:
        raise ConversionRefusedError(
            f"the config sets hidden_act {sanitize(activation, 40)!r}: llama.cpp's and vLLM's Llama MLP are SiLU-only"
        )
    for key in ("partial_rotary_factor", "rotary_pct", "rope_pct"):
        value = config.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 1:
            raise ConversionRefusedError(
                f"the config sets {key} {value}: rotary over part of each head only, Llama rotates whole heads"
            )
    scaling = _rope_scaling(config)
    if scaling is not None:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind not in SUPPORTED_ROPE_SCALING:
            raise ConversionRefusedError(
                f"rope scaling {sanitize(str(kind), 40)!r} is not one all Llama loaders read "
                f"(supported: {', '.join(sorted(SUPPORTED_ROPE_SCALING))})"
            )
    if config.get("use_parallel_residual") is True or config.get("parallel_attn") is True:
        raise ConversionRefusedError(
            "the config runs attention and MLP in parallel; Llama runs them in sequence"
        )


def _rope_scaling(config: dict[str, Any]) -> dict[str, Any] | None:
    scaling = config.get("rope_scaling")
    if isinstance(scaling, dict):
        return scaling
    parameters = config.get("rope_parameters")
    if isinstance(parameters, dict) and parameters.get("rope_type", "default") != "default":
        return {k: v for k, v in parameters.items() if k != "rope_theta"}
    return None


def _header_refusals(header: ForwardHeader, dims: Dimensions) -> None:
    """What the format's own header fixes and Llama's config cannot say."""
    if header.graph is None:
        return
    label, arch = header.label, header.architecture
    if arch != "llama":
        raise ConversionRefusedError(
            f"{label} architecture {sanitize(str(arch), 40)!r}: only 'llama' {label} files are converted "
            "(others store q/k in their own rotary order)"
        )
    rotary = header.values.get("rotary_dim")
    if isinstance(rotary, int) and rotary != dims.head_dim:
        raise ConversionRefusedError(
            f"{header.source('rotary_dim')} {rotary} is not the head size {dims.head_dim}: partial rotary"
        )
    if header.scaled_rope:
        raise ConversionRefusedError(
            f"the {label} carries rope scaling ({header.scaled_rope}), which this converter does not map"
        )


# -- roles ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Role:
    name: str
    role: str
    layer: int | None
    convention: str | None


def _target_names(families: list[Family], layers: int) -> dict[str, tuple[str, int | None]]:
    """Every tensor name of these families, rendered for each layer -> (role, layer)."""
    names: dict[str, tuple[str, int | None]] = {}
    for family in families:
        for template in family.templates:
            if template.per_layer:
                for layer in range(layers):
                    names.setdefault(template.render(layer), (template.role, layer))
            else:
                names.setdefault(template.render(None), (template.role, None))
    return names


def _roles(
    result: InspectResult, family: Family, mapping: dict[str, str] | None, layers: int
) -> tuple[list[_Role], int]:
    """Every weight's (role, layer), with the user mapping applied; refuses what stays unknown."""
    assignments: list[Assignment] = result.recognition.assignments
    by_name = {a.name: a for a in assignments}
    resolved: dict[str, tuple[str, int | None]] = {}
    mapped = 0
    if mapping:
        reference = family_by_id(family.reference_family) or family
        llama = family_by_id(TARGET)
        assert llama is not None
        targets = _target_names([family, reference, llama], layers)
        own_roles = {t.role for t in family.templates}
        for source, target in mapping.items():
            if source not in by_name:
                raise UsageError(
                    f"the mapping names {sanitize(source)!r}, which is not a weight of this checkpoint"
                )
            if target not in targets:
                raise UsageError(
                    f"the mapping's target {sanitize(target)!r} is not a tensor name of {family.family} or Llama"
                )
            role, layer = targets[target]
            if role not in own_roles:
                raise UsageError(
                    f"the mapping's target {sanitize(target)!r} is a {role}, which {family.family} does not have"
                )
            resolved[source] = (role, layer)
            mapped += 1
    out, unresolved = [], []
    per_layer_roles = {t.role for t in family.layer}
    for assignment in assignments:
        if assignment.name in resolved:
            role, layer = resolved[assignment.name]
            # The naming convention still tells the rotary order when the mapping confirms the role.
            convention = assignment.convention if role == assignment.role else None
            out.append(_Role(assignment.name, role, layer, convention))
            continue
        if assignment.role is None or (assignment.role in per_layer_roles and assignment.layer is None):
            unresolved.append(assignment)
            continue
        out.append(_Role(assignment.name, assignment.role, assignment.layer, assignment.convention))
    if unresolved:
        raise AmbiguousRolesError(_ambiguity_message(unresolved))
    return out, mapped


def _ambiguity_message(unresolved: list[Assignment]) -> str:
    shown = []
    for assignment in unresolved[:12]:
        if assignment.role is None:
            options = " or ".join(assignment.canonical_candidates or assignment.candidates)
        else:
            options = f"{assignment.role}, layer unknown"
        shown.append(f"{sanitize(assignment.name)} ({options})")
    more = f" and {len(unresolved) - 12} more" if len(unresolved) > 12 else ""
    return (
        f"{len(unresolved)} tensors have no role that names or shapes decide: {'; '.join(shown)}{more}. "
        "Pass --mapping FILE, a JSON object {source name: reference name}"
    )


def _layer_numbers(roles: list[_Role], family: Family, layers: int, notes: list[str]) -> dict[int, int]:
    """Source layer index -> output layer index (0..L-1, in source order)."""
    per_layer = {t.role for t in family.layer}
    seen = sorted({r.layer for r in roles if r.layer is not None and r.role in per_layer})
    if len(seen) != layers:
        raise ConversionRefusedError(f"found {len(seen)} layer indices for a {layers}-layer model")
    if seen != list(range(layers)):
        notes.append(f"source layers numbered {seen[0]}..{seen[-1]} are written as 0..{layers - 1} in order")
    return {source: index for index, source in enumerate(seen)}


# -- dimensions and conventions -----------------------------------------------------------------------


def _dimensions(result: InspectResult) -> Dimensions:
    config = result.recognition.config
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
    )
    missing = [k for k in keys if not isinstance(config.get(k), int)]
    if missing:
        raise ConversionRefusedError(
            f"the files do not declare {', '.join(missing)} and the shapes cannot show it "
            "(add a config.json with the head counts)"
        )
    dims = Dimensions(*(int(config[k]) for k in keys))
    if dims.heads % dims.kv_heads or dims.head_dim % 2:
        raise ConversionRefusedError(
            f"{dims.heads} query heads, {dims.kv_heads} KV heads of size {dims.head_dim}: not a rotary GQA layout"
        )
    return dims


def _rotary_convention(header: ForwardHeader | None, roles: list[_Role]) -> str:
    """``meta`` when q/k rows pair adjacent dimensions: files whose format fixes a graph (Meta's
    consolidated files, llama2.c exports, GGUF ``llama``: llama.cpp permutes on export) and
    checkpoints using Meta's names. The permutation is invisible in shapes, so this is decided by
    where the weights come from."""
    if header is not None and header.graph is not None:
        return "meta"
    qk = [r for r in roles if r.role in ("attn.q.weight", "attn.k.weight")]
    if qk and all(r.convention == "meta" for r in qk):
        return "meta"
    return "hf"


# -- recipes ---------------------------------------------------------------------------------------------


class _Builder:
    def __init__(
        self,
        checkpoint: Checkpoint,
        family: Family,
        dims: Dimensions,
        roles: list[_Role],
        layer_numbers: dict[int, int],
        rotary: str,
        dtype: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.family = family
        self.dims = dims
        self.rotary = rotary
        self.notes: list[str] = []
        llama = family_by_id(TARGET)
        assert llama is not None
        self.llama = llama.role_templates
        self.sources: dict[tuple[str, int | None], _Role] = {}
        per_layer = {t.role for t in family.layer}
        for role in roles:
            layer = layer_numbers[role.layer] if role.layer is not None and role.role in per_layer else None
            key = (role.role, layer)
            if key in self.sources:
                raise ConversionRefusedError(
                    f"two tensors carry {role.role}"
                    + (f" in layer {layer}" if key[1] is not None else "")
                    + f": {sanitize(self.sources[key].name)} and {sanitize(role.name)}"
                )
            self.sources[key] = role
        self.fused = self._fused_specs()

    def _fused_specs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Part role -> (fused role, spec) for the fused tensors this checkpoint holds."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for fused_role, spec in (self.family.facts.get("fused") or {}).items():
            if spec.get("axis", 0) != 0 or spec.get("transposed"):
                raise ConversionRefusedError(
                    f"{self.family.family}'s {fused_role} is fused along its columns"
                )
            for part in spec["parts"]:
                out[part] = (fused_role, spec)
        return out

    def size(self, expression: str) -> int:
        value = parse_linear(expression).evaluate(self.dims.symbols())
        if value is None:
            raise ConversionRefusedError(f"cannot size {expression!r} from the recognized config")
        return value

    def llama_shape(self, role: str) -> tuple[int, ...]:
        return tuple(self.size(text) for text in self.llama[role].shape_text)

    def output_name(self, role: str, layer: int | None) -> str:
        return self.llama[role].render(layer)

    def has(self, role: str, layer: int | None) -> bool:
        if (role, layer) in self.sources:
            return True
        fused = self.fused.get(role)
        return fused is not None and (fused[0], layer) in self.sources

    def recipe(self, role: str, layer: int | None) -> Recipe | None:
        """The recipe for a role read from the source (directly or out of a fused tensor)."""
        steps: list[Step] = []
        source = self.sources.get((role, layer))
        if source is None:
            fused = self.fused.get(role)
            if fused is None or (fused[0], layer) not in self.sources:
                return None
            source = self.sources[(fused[0], layer)]
            steps.append(self._split(role, fused[1]))
        if role in ROTARY_ROLES and self.rotary == "meta":
            heads = self.dims.heads if ROTARY_ROLES[role] == "heads" else self.dims.kv_heads
            steps.append(
                Step(
                    "meta_to_hf",
                    {"heads": heads},
                    f"rotary rows from Meta's interleaved pairs to rotate-half order ({heads} heads)",
                )
            )
        info = self.checkpoint.info(source.name)
        shape = self._shape_after(info.shape, steps)
        expected = self.llama_shape(role)
        if shape != expected:
            raise ConversionRefusedError(
                f"{sanitize(source.name)} gives {role} of shape {list(shape)}, but the recognized config needs {list(expected)}"
            )
        dtype = self.dtype or _output_dtype(info.dtype)
        return Recipe(
            self.output_name(role, layer),
            role,
            layer,
            shape,
            dtype,
            source.name,
            info.dtype,
            steps,
            source.layer,
        )

    def _split(self, role: str, spec: dict[str, Any]) -> Step:
        parts: list[str] = list(spec["parts"])
        part = parts.index(role)
        sizes = [self.size(text) for text in spec["sizes"]]
        layout = spec.get("layout", "contiguous")
        short = [p.split(".")[1] for p in parts]
        d, nkv = self.dims.head_dim, self.dims.kv_heads
        if layout == "contiguous":
            return Step(
                "split_contiguous",
                {"sizes": tuple(sizes), "part": part},
                f"part {part + 1} of a contiguous [{'; '.join(short)}] block (rows {sum(sizes[:part])}..{sum(sizes[: part + 1])})",
            )
        if layout == "grouped":
            group = self.dims.heads // nkv
            return Step(
                "split_grouped_qkv",
                {"part": short[part], "kv_heads": nkv, "group": group, "head_dim": d},
                f"{short[part]} out of {nkv} groups of [{group} query heads, key, value] ({d} rows per head)",
            )
        if layout in ("per_head", "per-head"):
            return Step(
                "split_per_head_qkv",
                {"part": short[part], "heads": self.dims.heads, "head_dim": d},
                f"{short[part]} out of {self.dims.heads} per-head [q, k, v] blocks ({d} rows per head)",
            )
        raise ConversionRefusedError(
            f"{self.family.family}'s fused layout {layout!r} is not one unshell splits"
        )

    def _shape_after(self, shape: tuple[int, ...], steps: list[Step]) -> tuple[int, ...]:
        rows = shape[0]
        for step in steps:
            if step.op == "split_contiguous":
                rows = step.args["sizes"][step.args["part"]]
            elif step.op == "split_grouped_qkv":
                a = step.args
                rows = (a["kv_heads"] * a["group"] if a["part"] == "q" else a["kv_heads"]) * a["head_dim"]
            elif step.op == "split_per_head_qkv":
                rows = step.args["heads"] * step.args["head_dim"]
        return (rows, *shape[1:])

    def zeros(self, role: str, layer: int | None, like: Recipe) -> Recipe:
        shape = self.llama_shape(role)
        dtype = like.dtype if like.dtype in FLOAT_CODES else "F32"
        return Recipe(self.output_name(role, layer), role, layer, shape, dtype, None)


DEQUANTIZED_DTYPE = "BF16"
"""What ``--dtype auto`` writes a quantized tensor as: its decoded values have no float precision
of their own, bf16 is what Hugging Face checkpoints of these models ship in, and it is half of
float32 (a 4-bit source grows 4x, not 8x). The rounding is part of what verification checks."""


def _output_dtype(stored: str) -> str:
    """``--dtype auto``: float storage keeps its dtype (bits copied); quantized and integer storage
    is decoded and written as `DEQUANTIZED_DTYPE`."""
    if stored in FLOAT_CODES or stored.startswith("F8"):
        return stored
    return DEQUANTIZED_DTYPE


def output_dtype_code(dtype: str) -> str | None:
    """``auto`` -> None (per tensor, `_output_dtype`); ``bf16``/``f16``/``f32`` -> the safetensors code.

    Raises:
        UsageError: any other name.
    """
    if dtype == "auto":
        return None
    code = OUTPUT_DTYPES.get(dtype)
    if code is None:
        raise UsageError(f"unknown output dtype {dtype!r} (auto, {', '.join(OUTPUT_DTYPES)})")
    return code


def _fold(recipe: Recipe, step: Step) -> None:
    if recipe.dtype not in FLOAT_CODES:
        recipe.dtype = "F32"  # FP8 cannot hold a rescaled value faithfully
    recipe.steps.append(step)


def _folds(family: Family, config: dict[str, Any], dims: Dimensions) -> dict[str, list[Step]]:
    """Value folds per role for families with runtime scalars (tensor-naming.md §4 class D)."""
    if family.family == "minicpm":
        values = {}
        for key in MINICPM_SCALARS:
            raw = config.get(key)
            if not isinstance(raw, int | float) or isinstance(raw, bool) or not raw > 0:
                # The remote code's defaults differ between releases: never guess a scale.
                raise ConversionRefusedError(
                    f"MiniCPM's config does not give {key}, a scale factor the conversion folds"
                )
            values[key] = float(raw)
        residual = values["scale_depth"] / math.sqrt(dims.layers)
        logits = values["dim_model_base"] / dims.hidden
        return {
            "embed.weight": [
                Step("scale", {"factor": values["scale_emb"]}, f"times scale_emb {values['scale_emb']:g}")
            ],
            "attn.o.weight": [
                Step(
                    "scale",
                    {"factor": residual},
                    f"times scale_depth/sqrt(L) = {values['scale_depth']:g}/sqrt({dims.layers})",
                )
            ],
            "mlp.down.weight": [
                Step(
                    "scale",
                    {"factor": residual},
                    f"times scale_depth/sqrt(L) = {values['scale_depth']:g}/sqrt({dims.layers})",
                )
            ],
            "lm_head.weight": [
                Step(
                    "scale",
                    {"factor": logits},
                    f"times dim_model_base/H = {values['dim_model_base']:g}/{dims.hidden}",
                )
            ],
        }
    if family.family == "baichuan" and _is_baichuan2(config, dims):
        return {
            "lm_head.weight": [
                Step("normalize_rows", {}, "Baichuan2 NormHead: each row divided by its L2 norm")
            ]
        }
    return {}


def _is_baichuan2(config: dict[str, Any], dims: Dimensions) -> bool:
    """Baichuan2 spells its class ``BaichuanForCausalLM`` (Baichuan-7B: ``BaiChuanForCausalLM``);
    vLLM tells them apart by the 125,696-token vocabulary, used here when the config is silent."""
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures:
        return "BaichuanForCausalLM" in architectures
    return dims.vocab == 125696


# -- the plan ---------------------------------------------------------------------------------------------


def build_plan(
    checkpoint: Checkpoint,
    result: InspectResult,
    *,
    mapping: dict[str, str] | None = None,
    target: str = TARGET,
    dtype: str = "auto",
) -> ConversionPlan:
    """Plan the conversion of an opened, inspected checkpoint to Hugging Face Llama.

    ``dtype`` is what every tensor is written as: ``auto`` keeps float storage as it is and writes
    decoded quantized values as bf16; ``bf16``, ``f16`` or ``f32`` cast every tensor (rounding
    once where the type is narrower than the source's).

    Raises:
        ConversionRefusedError: the architecture (or a config switch) is not exactly Llama.
        AmbiguousRolesError: tensors whose role names and shapes do not decide; use ``mapping``.
        UsageError: a mapping entry that names no weight, or no tensor of the family.
    """
    if target != TARGET:
        raise UsageError(f"unknown conversion target {target!r} (only 'llama')")
    forced_dtype = output_dtype_code(dtype)
    family = _refuse_family(result)
    declared = dict(result.declared_config or {})
    _config_refusals(family, declared)
    dims = _dimensions(result)
    header = forward_header(checkpoint)
    if header is not None:
        _header_refusals(header, dims)
    notes: list[str] = []
    roles, mapped = _roles(result, family, mapping, dims.layers)
    layer_numbers = _layer_numbers(roles, family, dims.layers, notes)
    rotary = _rotary_convention(header, roles)
    builder = _Builder(checkpoint, family, dims, roles, layer_numbers, rotary, forced_dtype)
    _refuse_foreign_roles(builder)
    folds = _folds(family, declared, dims)
    recipes, tied_source, tied_output = _recipes(builder, folds)
    config = _llama_config(header, family, dims, recipes, tied_output, declared, rotary, notes)
    return ConversionPlan(
        source=str(checkpoint.path),
        source_format=checkpoint.format,
        family=result.recognition.family or family.family,
        matched_family=family.family,
        reference=result.recognition.reference or family.reference,
        dims=dims,
        rotary=rotary,
        recipes=recipes,
        config=config,
        dropped=_dropped(checkpoint, result, roles),
        notes=notes + builder.notes + _family_notes(family, declared),
        mapped=mapped,
        tied_in_source=tied_source,
    )


def _refuse_foreign_roles(builder: _Builder) -> None:
    known = set(builder.llama) | {fused for fused, _ in builder.fused.values()}
    for (role, layer), source in builder.sources.items():
        if role not in known:
            where = f" (layer {layer})" if layer is not None else ""
            raise ConversionRefusedError(
                f"{sanitize(source.name)}{where} is a {role}, which Llama has no slot for"
            )


def _recipes(builder: _Builder, folds: dict[str, list[Step]]) -> tuple[list[Recipe], bool, bool]:
    dims = builder.dims
    recipes: list[Recipe] = []

    def required(role: str, layer: int | None) -> Recipe:
        recipe = builder.recipe(role, layer)
        if recipe is None:
            where = f" in layer {layer}" if layer is not None else ""
            raise ConversionRefusedError(f"no tensor carries {role}{where}")
        return recipe

    embed = required("embed.weight", None)
    recipes.append(embed)
    attention_bias = any(builder.has(r, i) for r in ATTENTION_BIASES for i in range(dims.layers))
    mlp_bias = any(builder.has(r, i) for r in MLP_BIASES for i in range(dims.layers))
    for layer in range(dims.layers):
        weights = {role: required(role, layer) for role in LLAMA_ROLES_PER_LAYER}
        for role, recipe in weights.items():
            recipes.append(recipe)
            bias_role = role.replace(".weight", ".bias")
            if (attention_bias and bias_role in ATTENTION_BIASES) or (mlp_bias and bias_role in MLP_BIASES):
                recipes.append(builder.recipe(bias_role, layer) or builder.zeros(bias_role, layer, recipe))
    recipes.append(required("final_norm.weight", None))
    lm_head = builder.recipe("lm_head.weight", None)
    tied_source = lm_head is None
    if lm_head is None and ("lm_head.weight" in folds or "embed.weight" in folds):
        # A fold on one end of tied embeddings would change the other end: untie.
        lm_head = Recipe(
            builder.output_name("lm_head.weight", None),
            "lm_head.weight",
            None,
            embed.shape,
            embed.dtype,
            embed.source,
            embed.source_dtype,
        )
    untied = tied_source and lm_head is not None
    for recipe in recipes + ([lm_head] if lm_head is not None else []):
        for step in folds.get(recipe.role, []):
            _fold(recipe, step)
    if lm_head is not None:
        recipes.append(lm_head)
    if untied:
        builder.notes.append(
            "tied embeddings untied: a fold applies to one end, so lm_head.weight is made from the input embedding"
        )
    return recipes, tied_source, lm_head is None


def _dropped(checkpoint: Checkpoint, result: InspectResult, roles: list[_Role]) -> list[dict[str, str]]:
    kept = {r.name for r in roles}
    ignored = set(result.ignored)
    out = [
        {"name": sanitize(n), "reason": "buffer (rotary table, mask or position ids), not a weight"}
        for n in result.ignored
    ]
    locations = {}
    for name in kept:
        info = checkpoint.tensors[name]
        locations[(info.file, info.offset, info.nbytes)] = name
    for name, info in checkpoint.tensors.items():
        if name in kept or name in ignored:
            continue
        twin = locations.get((info.file, info.offset, info.nbytes))
        if twin is None:
            raise ConversionRefusedError(
                f"tensor {sanitize(name)} has no role and shares no storage with one that has"
            )
        out.append({"name": sanitize(name), "reason": f"the same storage as {sanitize(twin)} (tied)"})
    return out


def _family_notes(family: Family, config: dict[str, Any]) -> list[str]:
    notes = []
    if family.family == "qwen":
        notes.append(
            "Qwen v1: mlp.w2 is the gate and mlp.w1 the up projection; intermediate_size is the real width, "
            "half the config's; use_dynamic_ntk/use_logn_attn change nothing within seq_length, which becomes "
            "max_position_embeddings"
        )
    window = config.get("sliding_window")
    windowed = family.family in ("mistral", "phi3") or config.get("use_sliding_window") is True
    if windowed and isinstance(window, int) and not isinstance(window, bool):
        notes.append(
            f"the source's sliding window ({window} tokens) is not part of Llama: outputs differ beyond {window} tokens"
        )
    return notes


# -- config.json -------------------------------------------------------------------------------------------

_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def _number(*sources: tuple[str, Any]) -> float | None:
    """The first declared (label, value) whose value is not None, as a float; a stated value that
    is not a finite number > 0 refuses the conversion (falling back to a default would write a
    model that computes something else)."""
    for label, value in sources:
        if value is not None:
            return checked_float(value, where=label, above=0.0, maximum=MAX_REAL)
    return None


def _integer(*sources: tuple[str, Any]) -> int | None:
    """The first declared (label, value) whose value is not None, as an int >= 1 (else refused)."""
    for label, value in sources:
        if value is not None:
            number = checked_float(value, where=label, minimum=1, maximum=MAX_WHOLE)
            if not number.is_integer():
                raise InconsistentHeaderError(f"{label} is {describe(value)}, not a whole number")
            return int(number)
    return None


def _initializer_range(declared: dict[str, Any]) -> float:
    value = declared.get("initializer_range")
    if value is None:
        return 0.02
    return checked_float(value, where="config initializer_range", minimum=0.0, maximum=MAX_REAL)


def _from(mapping: Any, key: str, label: str) -> tuple[str, Any]:
    return label, mapping.get(key) if isinstance(mapping, dict) else None


def _short_float(value: float) -> float:
    """1e-05 rather than 9.999999747378752e-06 for a float32 read from GGUF."""
    return float(f"{value:.7g}")


def _header_value(header: ForwardHeader | None, key: str) -> tuple[str, Any]:
    """(where, value) of what the format's own header states for config.json's ``key``."""
    if header is None:
        return "", None
    return header.source(key), header.values.get(key)


def _llama_config(
    header: ForwardHeader | None,
    family: Family,
    dims: Dimensions,
    recipes: list[Recipe],
    tied: bool,
    declared: dict[str, Any],
    rotary: str,
    notes: list[str],
) -> dict[str, Any]:
    raw_parameters = declared.get("rope_parameters")
    rope_parameters: dict[str, Any] = raw_parameters if isinstance(raw_parameters, dict) else {}
    eps = _number(
        _from(declared, "rms_norm_eps", "config rms_norm_eps"),
        _from(declared, "layer_norm_epsilon", "config layer_norm_epsilon"),
        _header_value(header, "rms_norm_eps"),
    )
    if eps is None:
        # Meta's and llama2.c's code fix 1e-5; transformers' LlamaConfig defaults to 1e-6.
        eps = 1e-5 if rotary == "meta" else 1e-6
        notes.append(f"no norm epsilon declared; used {eps:g}")
    theta = _number(
        _from(declared, "rope_theta", "config rope_theta"),
        _from(declared, "rotary_emb_base", "config rotary_emb_base"),
        _from(rope_parameters, "rope_theta", "config rope_parameters.rope_theta"),
        _header_value(header, "rope_theta"),
    )
    if theta is None:
        theta = 10000.0
    longest = declared.get("model_max_length")
    if isinstance(longest, int | float) and longest > MAX_WHOLE:
        longest = None  # Hugging Face's 1e30: "no limit"
    positions = _integer(
        _from(declared, "seq_length", "config seq_length") if family.family == "qwen" else ("", None),
        _from(declared, "max_position_embeddings", "config max_position_embeddings"),
        ("config model_max_length", longest),
        _from(declared, "seq_length", "config seq_length"),
        _from(declared, "n_positions", "config n_positions"),
    )
    if positions is None:
        positions = 2048
        notes.append("no context length declared; max_position_embeddings set to 2048")
    weights = [r for r in recipes if r.role.endswith(".weight")]
    dtype_counts: dict[str, int] = {}
    for recipe in weights:
        dtype_counts[recipe.dtype] = dtype_counts.get(recipe.dtype, 0) + math.prod(recipe.shape)
    dominant = max(dtype_counts, key=lambda k: dtype_counts[k])
    roles = {r.role for r in recipes}
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": dims.hidden,
        "intermediate_size": dims.intermediate,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "head_dim": dims.head_dim,
        "vocab_size": dims.vocab,
        "max_position_embeddings": positions,
        "rms_norm_eps": _short_float(eps),
        "rope_theta": _short_float(theta) if header is not None and header.float32 else theta,
        "rope_scaling": _rope_scaling(declared),
        "attention_bias": "attn.q.bias" in roles,
        "attention_dropout": 0.0,
        "mlp_bias": "mlp.gate.bias" in roles,
        "pretraining_tp": 1,
        "tie_word_embeddings": tied,
        "initializer_range": _initializer_range(declared),
        "use_cache": True,
        "torch_dtype": _TORCH_DTYPES.get(dominant, "float32"),
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = declared.get(key)
        if value is None:
            value = _header_value(header, key)[1]
        if _token_id(value, dims.vocab):
            config[key] = value
    return config


def _token_id(value: Any, vocab: int) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab for v in values
    )
