"""Recognize an architecture from tensor shapes alone, then use names only to break ties.

How it works, in order:

1. Drop buffers (rotary tables, causal masks, integer position ids): they carry no weights.
2. Split tensors into global ones and per-layer blocks using the first whole numeric token of each
   name (``...layers.7...``, ``blk.7...``). When names carry no usable layer index (arbitrary
   renames), the whole checkpoint is one multiset of shapes and the layer count is solved too.
3. For every catalog family, solve the family's shape symbols (H, I, V, Q = nh*d, K = nkv*d, ...)
   from the observed shapes by backtracking over one-unknown dimensions, then check that the
   multiset of concrete template shapes, with optional tensor groups switched on or off, equals
   the observed multiset exactly. Families that fit exactly are structurally indistinguishable
   on this checkpoint; the declared config picks among them, never overriding the structure.
4. Tensors of one concrete shape can carry any role of that shape (k vs v, gate vs up, the two
   norms). Names, known alias conventions (GGUF, Meta, Yi's ``ln1``/``ln2``...), elimination and
   finally lexical tokens resolve them; what nothing resolves is reported as candidates.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .catalog import Family, TensorTemplate, family_by_id, load_catalog, lookup_name

Shape = tuple[int, ...]

# Non-weight buffers some writers save. Matched against the last dotted segments of a name.
_BUFFER_PATTERNS = re.compile(
    r"(^|\.)(rotary_emb\.inv_freq|inv_freq|rotary_pos_emb\.inv_freq|cos_cached|sin_cached|"
    r"masked_bias|attn\.bias|attention\.bias|position_ids|freqs_cos|freqs_sin|freq_cis_real|"
    r"freq_cis_imag|rope\.freqs|rope_freqs\.weight|rope_freqs|_extra_state|num_batches_tracked)$"
)
_INTEGER_DTYPES = frozenset({"I64", "I32", "I16", "U64", "U32", "U16", "BOOL"})

MAX_LEAVES = 512


@dataclass(frozen=True)
class ObservedTensor:
    name: str
    shape: Shape
    key: str
    layer: int | None
    expert: int | None


@dataclass
class Assignment:
    """What one tensor is: its role, its canonical name, or the roles it could be."""

    name: str
    shape: Shape
    layer: int | None
    expert: int | None
    role: str | None
    candidates: tuple[str, ...]
    resolved_by: str
    convention: str | None = None
    canonical: str | None = None
    canonical_candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.role is None


@dataclass
class Fit:
    family: Family
    values: dict[str, int]
    groups: frozenset[str]
    exact: bool
    explained: int
    extras: list[str]
    layered: bool
    layers: int
    declared_consistent: bool
    notes: list[str] = field(default_factory=list)
    # Other exact interpretations of the same family (say, which [X, H] matrix is the vocabulary).
    alternatives: list[tuple[dict[str, int], frozenset[str]]] = field(default_factory=list)


@dataclass
class Recognition:
    family: str | None
    reference: str | None
    matched_family: str | None
    compatible_with: list[str]
    confidence: str
    evidence: list[str]
    config: dict[str, Any]
    assignments: list[Assignment]
    ignored: list[str]
    unexplained: list[str]
    notes: list[str]
    layered: bool


def is_buffer(name: str, dtype: str, extra: dict[str, Any] | None = None) -> bool:
    if extra and (extra.get("buffer") or extra.get("onnx_source") == "constant"):
        # ONNX Constant nodes are graph plumbing (shape scalars), not parameters.
        return True
    if dtype in _INTEGER_DTYPES:
        return True
    return bool(_BUFFER_PATTERNS.search(name))


# --- solving symbols --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scoped:
    template: TensorTemplate
    scope: str  # "global", "layer" or "all"


def _bind_template(template: TensorTemplate, shape: Shape, values: dict[str, int]) -> dict[str, int] | None:
    """Bindings that make ``template`` produce ``shape`` given ``values``; None if impossible."""
    if len(template.shape) != len(shape):
        return None
    local = dict(values)
    pending = list(zip(template.shape, shape, strict=True))
    progress = True
    while pending and progress:
        progress = False
        remaining = []
        for expression, observed in pending:
            value = expression.evaluate(local)
            if value is not None:
                if value != observed:
                    return None
                progress = True
                continue
            unbound = [s for s in expression.symbols if s not in local]
            if len(unbound) == 1:
                solved = expression.solve_for(unbound[0], observed, local)
                if solved is None:
                    return None
                local[unbound[0]] = solved
                progress = True
            else:
                remaining.append((expression, observed))
        pending = remaining
    return {k: v for k, v in local.items() if k not in values}


def _derive(values: dict[str, int], q_is_h: bool) -> dict[str, int]:
    """Fill in symbols that follow from others: Q = nh*d, K = nkv*d, and Q = H for families whose
    config fixes the head size to H/nh (their catalog shapes say H where nh*d is meant)."""
    out = dict(values)
    for _ in range(2):
        if q_is_h and "H" in out and "Q" not in out:
            out["Q"] = out["H"]
        d = out.get("d")
        for composite, base in (("Q", "nh"), ("K", "nkv")):
            if d and composite in out and base not in out and out[composite] % d == 0:
                out[base] = out[composite] // d
            if d and base in out and composite not in out:
                out[composite] = out[base] * d
    return out


def _consistent(values: dict[str, int]) -> bool:
    """Composite symbols must agree with their parts where both are known."""
    for composite, base in (("Q", "nh"), ("K", "nkv")):
        if (
            composite in values
            and base in values
            and "d" in values
            and values[base] * values["d"] != values[composite]
        ):
            return False
    # Grouped-query attention shares KV heads; no architecture has more KV than query channels.
    return not ("Q" in values and "K" in values and values["K"] > values["Q"])


def _solve(
    required: Sequence[_Scoped],
    observed: dict[str, Counter[Shape]],
    values: dict[str, int],
    seen: set[frozenset[tuple[str, int]]],
    q_is_h: bool,
) -> Iterator[dict[str, int]]:
    values = _derive(values, q_is_h)
    if (
        len(seen) >= MAX_LEAVES
        or not _consistent(values)
        or not _required_present(required, observed, values)
    ):
        return
    best: list[dict[str, int]] | None = None
    for scoped in required:
        template = scoped.template
        if template.concrete_shape(values) is not None and _multiplicity(template, values) is not None:
            continue
        options = []
        for shape in observed[scoped.scope]:
            binding = _bind_template(template, shape, values)
            if binding and binding not in options:
                options.append(binding)
        if not options:
            continue
        if best is None or len(options) < len(best):
            best = options
    if best is None:
        key = frozenset(values.items())
        if key not in seen:
            seen.add(key)
            yield values
        return
    for binding in best:
        yield from _solve(required, observed, {**values, **binding}, seen, q_is_h)


def _required_present(
    required: Sequence[_Scoped], observed: dict[str, Counter[Shape]], values: dict[str, int]
) -> bool:
    """Bound required templates must fit in the observed counts (one copy per layer at least)."""
    demand: dict[str, Counter[Shape]] = {}
    for scoped in required:
        shape = scoped.template.concrete_shape(values)
        if shape is None:
            continue
        count = _multiplicity(scoped.template, values) or 1
        demand.setdefault(scoped.scope, Counter())[shape] += count
    return all(observed[scope][shape] >= n for scope, counts in demand.items() for shape, n in counts.items())


def _multiplicity(template: TensorTemplate, values: dict[str, int]) -> int | None:
    if template.repeat is None:
        return 1
    return values.get(template.repeat)


def _instances(
    templates: Sequence[_Scoped], groups: frozenset[str], values: dict[str, int]
) -> list[tuple[_Scoped, Shape, int]] | None:
    """(template, concrete shape, copies per block) for the templates ``groups`` switch on; None
    while a shape or repeat count is still unknown."""
    out = []
    for scoped in templates:
        template = scoped.template
        if template.group is not None and template.group not in groups:
            continue
        shape = template.concrete_shape(values)
        count = _multiplicity(template, values)
        if shape is None or count is None:
            return None
        out.append((scoped, shape, count))
    return out


def _expected(
    templates: Sequence[_Scoped], groups: frozenset[str], values: dict[str, int], layers: int | None
) -> dict[str, Counter[Shape]] | None:
    instances = _instances(templates, groups, values)
    if instances is None:
        return None
    expected: dict[str, Counter[Shape]] = {"global": Counter(), "layer": Counter(), "all": Counter()}
    for scoped, shape, count in instances:
        if scoped.scope == "all" and scoped.template.per_layer:
            if layers is None:
                return None
            count *= layers
        expected[scoped.scope][shape] += count
    return expected


# --- fitting one family -----------------------------------------------------------------------


def _group_subsets(family: Family) -> list[frozenset[str]]:
    names = sorted({t.group for t in family.templates if t.group is not None})
    subsets = []
    for size in range(len(names) + 1):
        for combo in itertools.combinations(names, size):
            subsets.append(frozenset(combo))
    return subsets


def _flat_layer_count(
    templates: Sequence[_Scoped], groups: frozenset[str], values: dict[str, int], observed: Counter[Shape]
) -> list[int]:
    """Layer counts that could explain ``observed`` when names give no layer index."""
    instances = _instances(templates, groups, values)
    if instances is None:
        return []
    per_layer: Counter[Shape] = Counter()
    fixed: Counter[Shape] = Counter()
    for scoped, shape, count in instances:
        (per_layer if scoped.template.per_layer else fixed)[shape] += count
    candidates = set()
    for shape, count in per_layer.items():
        available = observed[shape] - fixed[shape]
        if available > 0:
            candidates.add(available // count)
    return sorted(c for c in candidates if c > 0)


def _score(
    expected: dict[str, Counter[Shape]], observed: dict[str, Counter[Shape]], weights: dict[str, int]
) -> tuple[bool, int, int] | None:
    """(exact, explained, unexplained), or None if the family demands tensors that are absent."""
    explained = unexplained = 0
    for scope, counts in observed.items():
        want = expected.get(scope, Counter())
        weight = weights.get(scope, 1)
        for shape, need in want.items():
            if need > counts[shape]:
                return None
        for shape, have in counts.items():
            used = min(have, want[shape])
            explained += used * weight
            unexplained += (have - used) * weight
    return unexplained == 0, explained, unexplained


def fit_family(
    family: Family,
    observed: dict[str, Counter[Shape]],
    *,
    layered: bool,
    layer_count: int,
    declared: dict[str, int],
) -> Fit | None:
    scope_of = (lambda t: "layer" if t.per_layer else "global") if layered else (lambda t: "all")
    # A model whose first layers are dense is fitted on its (majority) sparse layers; the dense
    # ones are checked afterwards (`_fit_dense_layers`).
    scoped = [_Scoped(t, scope_of(t)) for t in family.templates if t.layers != "dense"]
    if layered and _mixed_layers(family) and not _ranks_can_match(scoped, observed, _group_subsets(family)):
        # Their many free MLA ranks make a partial search costly; it could only end inexact.
        return None
    required = [s for s in scoped if s.template.group is None]
    weights = {"global": 1, "layer": layer_count, "all": 1}
    q_is_h = family.head_dim_fixed_by_hidden
    best: Fit | None = None
    attempts = [(declared, True), ({}, False)] if declared else [({}, False)]
    exact_interpretations: list[tuple[dict[str, int], frozenset[str]]] = []
    subsets = _group_subsets(family)
    for start, with_declared in attempts:
        seen: set[frozenset[tuple[str, int]]] = set()
        for base_values in _solve(required, observed, dict(start), seen, q_is_h):
            for groups in subsets:
                # Symbols used only by optional tensors (a q-norm's head size) are solved per group choice.
                needed = [s for s in scoped if s.template.group is None or s.template.group in groups]
                group_seen: set[frozenset[tuple[str, int]]] = set()
                for values in _solve(needed, observed, base_values, group_seen, q_is_h):
                    layer_options = (
                        [layer_count]
                        if layered
                        else _flat_layer_count(scoped, groups, values, observed["all"])
                    )
                    for layers in layer_options:
                        expected = _expected(scoped, groups, values, None if layered else layers)
                        if expected is None:
                            continue
                        scored = _score(expected, observed, weights)
                        if scored is None:
                            continue
                        exact, explained, _unexplained = scored
                        if explained == 0:
                            continue
                        candidate = Fit(
                            family=family,
                            values=dict(values),
                            groups=groups,
                            exact=exact,
                            explained=explained,
                            extras=[],
                            layered=layered,
                            layers=layers,
                            declared_consistent=with_declared,
                        )
                        if exact:
                            exact_interpretations.append((dict(values), groups))
                        if best is None or _better(candidate, best):
                            best = candidate
        if best is not None and best.exact:
            break
    if best is not None and best.exact:
        best.alternatives = [
            (values, groups)
            for values, groups in exact_interpretations
            if (values, groups) != (best.values, best.groups) and _agrees(values, best, declared)
        ]
    return best


def _agrees(values: dict[str, int], best: Fit, declared: dict[str, int]) -> bool:
    """An alternative counts only if it is as consistent with the declared config as the best one."""
    if not best.declared_consistent:
        return True
    return all(values.get(k) == v for k, v in declared.items() if k in values)


def _plausibility(values: dict[str, int]) -> int:
    """A prior used only to choose which exact interpretation's numbers to report: vocabularies
    are larger than position tables, which are larger than token-type tables."""
    vocab, positions, types = values.get("V"), values.get("P"), values.get("T")
    score = 0
    if vocab is not None and positions is not None and vocab < positions:
        score -= 1
    if vocab is not None and types is not None and vocab < types:
        score -= 1
    if positions is not None and types is not None and positions < types:
        score -= 1
    return score


def _better(a: Fit, b: Fit) -> bool:
    def key(f: Fit) -> tuple[bool, int, bool, int, int]:
        return (f.exact, f.explained, f.declared_consistent, _plausibility(f.values), -len(f.groups))

    return key(a) > key(b)


# --- roles ------------------------------------------------------------------------------------

_LEXICAL: dict[str, tuple[str, ...]] = {
    "attn.q": ("q", "query", "wq", "q_proj", "to_q"),
    "attn.k": ("k", "key", "wk", "k_proj", "to_k"),
    "attn.v": ("v", "value", "wv", "v_proj", "to_v"),
    "attn.o": ("o", "o_proj", "wo", "out_proj", "to_out", "attn_output", "output"),
    "mlp.gate": ("gate", "gate_proj", "ffn_gate"),
    "mlp.up": ("up", "up_proj", "ffn_up", "fc1", "c_fc", "fc_in"),
    "mlp.down": ("down", "down_proj", "ffn_down", "fc2", "fc_out"),
    "attn_norm": ("input_layernorm", "attention_norm", "attn_norm", "ln1", "ln_1", "norm1"),
    "ffn_norm": ("post_attention_layernorm", "ffn_norm", "ln2", "ln_2", "norm2"),
}


def _lexical_roles(name: str, candidates: Sequence[str]) -> list[str]:
    tokens = set(re.split(r"[./]", name))
    matches = []
    for role in candidates:
        stem = role.rsplit(".", 1)[0]
        suffix = role.rsplit(".", 1)[1] if "." in role else ""
        words = _LEXICAL.get(stem)
        if not words or (suffix and suffix not in tokens):
            continue
        if tokens & set(words):
            matches.append(role)
    return matches


def _active_templates(fit: Fit) -> list[TensorTemplate]:
    return [t for t in fit.family.templates if t.group is None or t.group in fit.groups]


def assign_roles(fit: Fit, tensors: Sequence[ObservedTensor]) -> list[Assignment]:
    """Give each tensor its role, or the set of roles its shape allows when nothing else decides."""
    roles_by_shape: dict[tuple[str, Shape], list[str]] = {}
    for values, groups in [(fit.values, fit.groups), *fit.alternatives]:
        for template in fit.family.templates:
            if template.group is not None and template.group not in groups:
                continue
            shape = template.concrete_shape(values)
            if shape is None:
                continue
            scope = ("layer" if template.per_layer else "global") if fit.layered else "all"
            roles_by_shape.setdefault((scope, shape), []).append(template.role)

    def scope_of(t: ObservedTensor) -> str:
        if not fit.layered:
            return "all"
        return "layer" if t.layer is not None else "global"

    # Decide per normalized key, so every layer's copy of a tensor gets the same answer.
    by_key: dict[tuple[str, str, Shape], list[ObservedTensor]] = {}
    for tensor in tensors:
        by_key.setdefault((scope_of(tensor), tensor.key, tensor.shape), []).append(tensor)

    own_names = {_strip_prefixes(t.name): t.role for t in _active_templates(fit)}
    convention_rank: Counter[str] = Counter()
    for key in {t.key for t in tensors}:
        convention_rank.update({h.convention for h in lookup_name(key)})
    decided: dict[tuple[str, str, Shape], tuple[str | None, tuple[str, ...], str, str | None]] = {}
    for (scope, key, shape), _members in by_key.items():
        candidates = tuple(dict.fromkeys(roles_by_shape.get((scope, shape), [])))
        own_role = own_names.get(_strip_prefixes(key))
        if own_role in candidates:
            exact = [h for h in lookup_name(key) if h.role == own_role and h.template == key]
            if exact and not any(h.convention == fit.family.family for h in exact):
                # Meta's "norm.weight" is Llama's "model.norm.weight" less a prefix; credit Meta.
                hint = max(exact, key=lambda h: convention_rank[h.convention])
                decided[(scope, key, shape)] = (
                    own_role,
                    candidates,
                    f"alias:{hint.convention}",
                    hint.convention,
                )
            else:
                decided[(scope, key, shape)] = (own_role, candidates, "name", fit.family.family)
            continue
        hints = [h for h in lookup_name(key) if h.role in candidates]
        roles = list(dict.fromkeys(h.role for h in hints))
        if len(roles) == 1:
            # Several conventions share a name (output.weight: GGUF, Meta, InternLM2); credit the one
            # most of this checkpoint's names follow.
            hint = max((h for h in hints if h.role == roles[0]), key=lambda h: convention_rank[h.convention])
            decided[(scope, key, shape)] = (roles[0], candidates, f"alias:{hint.convention}", hint.convention)
        elif len(candidates) == 1:
            decided[(scope, key, shape)] = (candidates[0], candidates, "structure", None)
        else:
            decided[(scope, key, shape)] = (None, candidates, "ambiguous", None)

    _eliminate(decided)
    for slot, (role, candidates, _how, _convention) in list(decided.items()):
        if role is None:
            lexical = _lexical_roles(slot[1], candidates)
            taken = {r for s, (r, _, _, _) in decided.items() if r and s[0] == slot[0] and s[2] == slot[2]}
            lexical = [r for r in lexical if r not in taken]
            if len(lexical) == 1:
                decided[slot] = (lexical[0], candidates, "lexical", None)
    _eliminate(decided)

    assignments = []
    for tensor in tensors:
        role, candidates, how, convention = decided[(scope_of(tensor), tensor.key, tensor.shape)]
        assignments.append(
            Assignment(
                name=tensor.name,
                shape=tensor.shape,
                layer=tensor.layer,
                expert=tensor.expert,
                role=role,
                candidates=candidates if role is None else (role,),
                resolved_by=how if candidates else "unexplained",
                convention=convention,
            )
        )
    return assignments


# Wrappers that differ between a base model and its task heads (BertModel vs BertForMaskedLM...).
_PREFIXES = ("model.", "transformer.", "bert.", "roberta.", "gpt_neox.", "language_model.", "base_model.")


def _strip_prefixes(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix) and name.count(".") > 1:
                name = name[len(prefix) :]
                changed = True
    return name


def _eliminate(
    decided: dict[tuple[str, str, Shape], tuple[str | None, tuple[str, ...], str, str | None]],
) -> None:
    """Within one (scope, shape) class, a role taken by a resolved tensor is not open to the rest."""
    classes: dict[tuple[str, Shape], list[tuple[str, str, Shape]]] = {}
    for slot in decided:
        classes.setdefault((slot[0], slot[2]), []).append(slot)
    for members in classes.values():
        changed = True
        while changed:
            changed = False
            taken = {decided[s][0] for s in members if decided[s][0] is not None}
            open_slots = [s for s in members if decided[s][0] is None]
            for slot in open_slots:
                _, candidates, _, convention = decided[slot]
                remaining = tuple(c for c in candidates if c not in taken)
                if len(remaining) == 1 and len(open_slots) == 1:
                    decided[slot] = (remaining[0], candidates, "elimination", convention)
                    changed = True


# --- the whole recognition ----------------------------------------------------------------------


def _declared_family(declared_config: dict[str, Any] | None, hint: str | None) -> set[str]:
    names: set[str] = set()
    if hint:
        names.add(hint.lower())
    if declared_config:
        model_type = declared_config.get("model_type")
        if isinstance(model_type, str):
            names.add(model_type.lower())
        architectures = declared_config.get("architectures")
        if isinstance(architectures, list):
            names.update(str(a) for a in architectures)
    return names


def _declares(family: Family, names: set[str]) -> bool:
    lowered = {n.lower() for n in names}
    return (
        family.model_type.lower() in lowered
        or family.family.lower() in lowered
        or any(a in names for a in family.architectures)
    )


def observe(tensors: Sequence[tuple[str, Shape]]) -> list[ObservedTensor]:
    """Find each name's layer (and expert) index.

    The index is a whole dot- or slash-delimited number, but not every such number is one:
    sentence-transformers prefixes everything with ``model.0.``. Among names that differ only in
    their numbers, the positions whose values vary are indices and constant ones are part of
    the name. A checkpoint where nothing varies (one layer) falls back to the first number.
    """
    split = [re.split(r"([./])", name) for name, _ in tensors]
    numeric = [
        [i for i, token in enumerate(tokens) if token.isdigit() and len(token) <= 6] for tokens in split
    ]
    skeletons: dict[tuple[str, ...], list[int]] = {}
    for row, (tokens, positions) in enumerate(zip(split, numeric, strict=True)):
        skeleton = tuple("#" if i in positions else t for i, t in enumerate(tokens))
        skeletons.setdefault(skeleton, []).append(row)
    varying: dict[int, list[int]] = {}
    for rows in skeletons.values():
        positions = numeric[rows[0]]
        moving = [p for p in positions if len({split[r][p] for r in rows}) > 1]
        for r in rows:
            varying[r] = moving
    anything_varies = any(varying.values())
    # A name of which the checkpoint holds one (DeepSeek's single dense first layer: only
    # ``model.layers.0.mlp.gate_proj``) varies nowhere; its number is an index where the same
    # prefix leads to one in other names.
    index_prefixes = {tuple(split[r][:p]) for r, moving in varying.items() for p in moving}
    for r, moving in varying.items():
        if not moving:
            varying[r] = [p for p in numeric[r] if tuple(split[r][:p]) in index_prefixes]

    out = []
    for row, (name, shape) in enumerate(tensors):
        tokens = list(split[row])
        indices = varying[row] if anything_varies else numeric[row][:2]
        layer = expert = None
        for position in indices[:2]:
            value = int(tokens[position])
            if layer is None:
                layer, tokens[position] = value, "{i}"
            else:
                expert, tokens[position] = value, "{e}"
        out.append(ObservedTensor(name, tuple(shape), "".join(tokens), layer, expert))
    return out


def unstack_experts(tensors: list[ObservedTensor]) -> list[ObservedTensor]:
    """A 3-D tensor named as all of a layer's experts stacked (GGUF's ``blk.N.ffn_up_exps``:
    experts x rows x columns) seen as one 2-D tensor per expert, so that it fits the per-expert
    templates of an MoE family (`restack_experts` gives the assignments back one per tensor)."""
    out: list[ObservedTensor] = []
    for tensor in tensors:
        stacked = len(tensor.shape) == 3 and any(
            h.role.startswith("moe.expert.") for h in lookup_name(tensor.key)
        )
        if not stacked:
            out.append(tensor)
            continue
        for expert in range(tensor.shape[0]):
            out.append(replace(tensor, shape=tensor.shape[1:], expert=expert))
    return out


SPLIT_KV_B = {"attn.k_b.weight": "k", "attn.v_b.weight": "v"}


@dataclass
class SplitKvB:
    """A layer's MLA kv_b stored split per head (newer llama.cpp: ``blk.N.attn_k_b`` [nh, Rkv, d_n]
    and ``blk.N.attn_v_b`` [nh, d_v, Rkv]), fitted as the one kv_b it was cut from."""

    joined: str  # the name the fit sees ("" when the file also keeps kv_b itself)
    parts: list[ObservedTensor]


def join_split_kv_b(tensors: list[ObservedTensor]) -> tuple[list[ObservedTensor], list[SplitKvB]]:
    """Each layer's k_b and v_b seen as one kv_b [nh*(d_n+d_v), Rkv] (the shape the DeepSeek
    families' templates have), or left out of the fit when the layer keeps kv_b as well
    (`split_kv_b_assignments` gives them their own roles back)."""
    by_layer: dict[int, dict[str, ObservedTensor]] = {}
    for tensor in tensors:
        if tensor.layer is None or len(tensor.shape) != 3:
            continue
        part = next((SPLIT_KV_B[h.role] for h in lookup_name(tensor.key) if h.role in SPLIT_KV_B), None)
        if part is not None:
            by_layer.setdefault(tensor.layer, {})[part] = tensor
    keeps_kv_b = {t.layer for t in tensors if any(h.role == "attn.kv_b.weight" for h in lookup_name(t.key))}
    splits: list[SplitKvB] = []
    taken: set[str] = set()
    joined: list[ObservedTensor] = []
    for layer, parts in sorted(by_layer.items()):
        k, v = parts.get("k"), parts.get("v")
        if k is None or v is None:
            continue
        heads, rank, nope = k.shape
        if v.shape[0] != heads or v.shape[2] != rank:
            continue
        taken.update((k.name, v.name))
        if layer in keeps_kv_b:
            splits.append(SplitKvB("", [k, v]))
            continue
        name = k.name.replace("attn_k_b", "attn_kv_b")
        key = k.key.replace("attn_k_b", "attn_kv_b")
        joined.append(ObservedTensor(name, (heads * (nope + v.shape[1]), rank), key, layer, None))
        splits.append(SplitKvB(name, [k, v]))
    if not splits:
        return tensors, []
    return [t for t in tensors if t.name not in taken] + joined, splits


def split_kv_b_assignments(assignments: list[Assignment], splits: list[SplitKvB]) -> list[Assignment]:
    """The joined kv_b's assignment replaced by k_b's and v_b's, each with its own role."""
    if not splits:
        return assignments
    joined = {split.joined: split for split in splits if split.joined}
    out = [a for a in assignments if a.name not in joined]
    recognized = {a.name for a in assignments if a.role is not None}
    for split in splits:
        explained = not split.joined or split.joined in recognized
        for part in split.parts:
            if not explained:  # the fit did not explain the joined kv_b: neither part is explained
                out.append(Assignment(part.name, part.shape, part.layer, None, None, (), "unexplained"))
                continue
            role = next(h.role for h in lookup_name(part.key) if h.role in SPLIT_KV_B)
            out.append(
                Assignment(part.name, part.shape, part.layer, None, role, (role,), "alias:gguf", "gguf")
            )
    return out


def restack_experts(assignments: list[Assignment], tensors: Sequence[tuple[str, Shape]]) -> list[Assignment]:
    """One assignment per stacked expert tensor again (its stored 3-D shape, no expert index)."""
    shapes = {name: tuple(shape) for name, shape in tensors}
    out: list[Assignment] = []
    seen: set[str] = set()
    for assignment in assignments:
        shape = shapes.get(assignment.name, assignment.shape)
        if len(shape) == 3 and len(assignment.shape) == 2:
            if assignment.name in seen:
                continue
            seen.add(assignment.name)
            assignment = replace(
                assignment, shape=shape, expert=None, canonical=None, canonical_candidates=()
            )
        out.append(assignment)
    return out


def _layered_view(
    tensors: Sequence[ObservedTensor],
) -> tuple[dict[str, Counter[Shape]], int, list[str]] | None:
    """Globals and the majority layer signature; None when names carry no layer structure."""
    layered = [t for t in tensors if t.layer is not None]
    if not layered or len(layered) < len(tensors) / 2:
        return None
    blocks: dict[int, Counter[Shape]] = {}
    for tensor in layered:
        assert tensor.layer is not None
        blocks.setdefault(tensor.layer, Counter())[tensor.shape] += 1
    signatures = Counter(frozenset(c.items()) for c in blocks.values())
    majority, count = signatures.most_common(1)[0]
    notes = []
    indices = sorted(blocks)
    if indices != list(range(indices[0], indices[0] + len(indices))):
        notes.append(
            f"layer indices are not contiguous ({len(indices)} layers, indices {indices[0]}..{indices[-1]})"
        )
    if count != len(blocks):
        odd = sorted(i for i, c in blocks.items() if frozenset(c.items()) != majority)
        notes.append(f"{len(odd)} layer(s) differ in shape from the majority: {odd[:10]}")
    observed = {
        "global": Counter(t.shape for t in tensors if t.layer is None),
        "layer": Counter(dict(majority)),
    }
    return observed, len(blocks), notes


def _ranks_can_match(
    scoped: Sequence[_Scoped], observed: dict[str, Counter[Shape]], subsets: Sequence[frozenset[str]]
) -> bool:
    """Whether some group choice gives each scope as many tensors of each rank as observed, for
    the ranks no expert-repeated template has (their counts do not depend on any symbol)."""
    for groups in subsets:
        active = [s for s in scoped if s.template.group is None or s.template.group in groups]
        repeated = {(s.scope, len(s.template.shape)) for s in active if s.template.repeat}
        wanted: Counter[tuple[str, int]] = Counter(
            (s.scope, len(s.template.shape)) for s in active if not s.template.repeat
        )
        have: Counter[tuple[str, int]] = Counter()
        for scope, shapes in observed.items():
            for shape, count in shapes.items():
                have[(scope, len(shape))] += count
        keys = (set(wanted) | set(have)) - repeated
        if all(wanted[k] == have[k] for k in keys):
            return True
    return False


def _mixed_layers(family: Family) -> bool:
    return any(t.layers is not None for t in family.templates)


def _fit_dense_layers(fit: Fit, tensors: Sequence[ObservedTensor]) -> None:
    """Explain the layers that differ from the fitted (sparse) majority as the family's dense first
    layers: they must be layers 0..k-1, all alike, and hold exactly the family's common plus dense
    templates. On success the dense symbols (the dense FFN width) join ``fit.values`` with
    ``Ld`` = k, and the note about odd layers says what they are."""
    active = [t for t in fit.family.layer if t.group is None or t.group in fit.groups]
    dense = [t for t in active if t.layers == "dense"]
    if not dense:
        return
    blocks: dict[int, Counter[Shape]] = {}
    for tensor in tensors:
        if tensor.layer is not None:
            blocks.setdefault(tensor.layer, Counter())[tensor.shape] += 1
    sparse_signature = Counter(
        {shape: count for shape, count in _expected_block(active, fit.values, "sparse").items()}
    )
    odd = sorted(i for i, block in blocks.items() if block != sparse_signature)
    if not odd or odd != list(range(min(blocks), min(blocks) + len(odd))):
        return
    signature = blocks[odd[0]]
    if any(blocks[i] != signature for i in odd):
        return
    scoped = [_Scoped(t, "layer") for t in dense]
    seen: set[frozenset[tuple[str, int]]] = set()
    q_is_h = fit.family.head_dim_fixed_by_hidden
    for values in _solve(scoped, {"layer": signature}, dict(fit.values), seen, q_is_h):
        if _expected_block(active, values, "dense") == signature:
            fit.values = {**values, "Ld": len(odd)}
            fit.notes = [n for n in fit.notes if "differ in shape from the majority" not in n]
            fit.notes.append(
                f"the first {len(odd)} layer(s) are dense, the others sparse (first_k_dense_replace)"
            )
            return


def _expected_block(templates: Sequence[TensorTemplate], values: dict[str, int], kind: str) -> Counter[Shape]:
    """One layer's shapes when it is ``kind`` (dense or sparse); empty while a symbol is unknown."""
    block: Counter[Shape] = Counter()
    for template in templates:
        if template.layers not in (None, kind):
            continue
        shape = template.concrete_shape(values)
        count = _multiplicity(template, values)
        if shape is None or count is None:
            return Counter()
        block[shape] += count
    return block


def recognize(
    tensors: Sequence[tuple[str, Shape]],
    *,
    declared_config: dict[str, Any] | None = None,
    declared_family: str | None = None,
    families: Sequence[Family] | None = None,
) -> Recognition:
    """Recognize the architecture of a tensor table (names and shapes of weights, buffers removed).

    ``declared_config`` is what the files say (config.json, GGUF hyperparameters, a llama2.c
    header), in Hugging Face key names; it chooses among structurally identical families and
    supplies head counts that shapes cannot show, but never overrides what the shapes say.
    """
    families = tuple(families) if families is not None else load_catalog()
    observed_tensors, kv_b_splits = join_split_kv_b(unstack_experts(observe(tensors)))
    declared_names = _declared_family(declared_config, declared_family)
    layered_view = _layered_view(observed_tensors)
    notes: list[str] = []

    declared_values = {}
    for family in families:
        values = family.symbols_from_config(declared_config) if declared_config else {}
        values.pop("L", None)
        declared_values[family.family] = values

    fits: list[Fit] = []
    if layered_view is not None:
        observed, layer_count, layer_notes = layered_view
        for family in families:
            fit = fit_family(
                family,
                observed,
                layered=True,
                layer_count=layer_count,
                declared=declared_values[family.family],
            )
            if fit is not None:
                fit.notes.extend(layer_notes)
                fits.append(fit)
    if not any(f.exact for f in fits):
        # Names gave no usable layer structure (or none that fits): solve the layer count too.
        flat = {"all": Counter(t.shape for t in observed_tensors)}
        for family in families:
            if _mixed_layers(family) and not _declares(family, declared_names):
                # Dense-then-sparse families (DeepSeek-V2/V3) have too many free dimensions (MLA's
                # ranks) to solve from one bag of shapes in bounded time: they need layer indices
                # in the names, or a declared config naming them.
                continue
            fit = fit_family(
                family, flat, layered=False, layer_count=1, declared=declared_values[family.family]
            )
            if fit is not None:
                fits.append(fit)

    exact = [f for f in fits if f.exact]
    if any(f.layered for f in exact):
        exact = [f for f in exact if f.layered]
    if not exact:
        partial = _partial(fits, observed_tensors, declared_names, declared_config)
        partial.assignments = split_kv_b_assignments(
            restack_experts(partial.assignments, tensors), kv_b_splits
        )
        return partial

    declared_exact = [f for f in exact if _declares(f.family, declared_names)]
    chosen_pool = declared_exact or exact
    chosen = max(
        chosen_pool,
        key=lambda f: (f.declared_consistent, _name_score(f, observed_tensors), -f.family.priority),
    )
    if chosen.layered:
        _fit_dense_layers(chosen, observed_tensors)
    assignments = assign_roles(chosen, observed_tensors)
    reference = family_by_id(chosen.family.reference_family) or chosen.family
    _canonicalize(assignments, reference, chosen.family)
    assignments = split_kv_b_assignments(restack_experts(assignments, tensors), kv_b_splits)

    evidence = [f"tensor shapes fit {chosen.family.family} exactly ({len(tensors)} tensors)"]
    named = sum(1 for a in assignments if a.resolved_by in ("name",) or a.resolved_by.startswith("alias"))
    if named:
        evidence.append(f"{named} tensor names match known conventions")
    if declared_exact:
        evidence.append("the declared config names this family")
    if declared_config and not chosen.declared_consistent:
        notes.append("the declared config disagrees with the tensor shapes; the shapes were used")
    notes.extend(chosen.notes)
    if not chosen.layered:
        indexed = sum(1 for t in observed_tensors if t.layer is not None)
        notes.append(
            f"only {indexed} of {len(observed_tensors)} names carry a layer index: the layer positions of "
            "the others cannot be recovered without reading weights"
            if indexed
            else "names carry no layer index: layer positions cannot be recovered without reading weights"
        )

    compatible = sorted(
        {f.family.family for f in exact if f.family.family != reference.family}
        - {chosen.family.family if chosen.family.family == reference.family else ""}
    )
    if chosen.family.family != reference.family and chosen.family.family not in compatible:
        compatible.append(chosen.family.family)
        compatible.sort()
    ambiguous_classes = len({(a.layer is None, a.candidates) for a in assignments if a.ambiguous})
    confidence = "high"
    if not chosen.layered or (not declared_exact and named < len(assignments) / 2):
        confidence = "medium"
    if ambiguous_classes and not declared_exact and not named:
        confidence = "medium"
    return Recognition(
        family=reference.family,
        reference=reference.reference,
        matched_family=chosen.family.family,
        compatible_with=compatible,
        confidence=confidence,
        evidence=evidence,
        config=_config(chosen, declared_config),
        assignments=assignments,
        ignored=[],
        unexplained=[],
        notes=notes,
        layered=chosen.layered,
    )


def _name_score(fit: Fit, tensors: Sequence[ObservedTensor]) -> int:
    own = {fit.family.family, fit.family.reference_family}
    score = 0
    for key in {t.key for t in tensors}:
        if any(h.convention in own for h in lookup_name(key)):
            score += 1
    return score


def _partial(
    fits: list[Fit],
    tensors: Sequence[ObservedTensor],
    declared_names: set[str],
    declared_config: dict[str, Any] | None,
) -> Recognition:
    if not fits:
        return Recognition(
            family=None,
            reference=None,
            matched_family=None,
            compatible_with=[],
            confidence="none",
            evidence=["no catalog family explains these tensor shapes"],
            config={},
            assignments=[],
            ignored=[],
            unexplained=[t.name for t in tensors],
            notes=[],
            layered=False,
        )
    best = max(fits, key=lambda f: (f.explained, _declares(f.family, declared_names), -f.family.priority))
    assignments = assign_roles(best, tensors)
    reference = family_by_id(best.family.reference_family) or best.family
    _canonicalize(assignments, reference, best.family)
    unexplained = [a.name for a in assignments if not a.candidates]
    total = len(tensors)
    return Recognition(
        family=reference.family,
        reference=reference.reference,
        matched_family=best.family.family,
        compatible_with=[],
        confidence="low",
        evidence=[
            f"closest family {best.family.family} explains {total - len(unexplained)} of {total} tensors"
        ],
        config=_config(best, declared_config),
        assignments=assignments,
        ignored=[],
        unexplained=unexplained,
        notes=list(best.notes),
        layered=best.layered,
    )


def _canonicalize(assignments: list[Assignment], reference: Family, matched: Family) -> None:
    by_role = {t.role: t for t in matched.templates}
    by_role.update({t.role: t for t in reference.templates})
    for assignment in assignments:

        def render(role: str, a: Assignment = assignment) -> str | None:
            template = by_role.get(role)
            if template is None:
                return None
            layer = a.layer if template.per_layer else None
            if template.per_layer and layer is None:
                return template.name.replace("{i}", "?")
            return template.render(layer, a.expert)

        if assignment.role is not None:
            assignment.canonical = render(assignment.role)
        assignment.canonical_candidates = tuple(c for c in (render(r) for r in assignment.candidates) if c)


def _config(fit: Fit, declared: dict[str, Any] | None) -> dict[str, Any]:
    values = fit.values
    declared_values = fit.family.symbols_from_config(declared) if declared else {}
    hidden = values.get("H", declared_values.get("H"))
    q, k = values.get("Q"), values.get("K")
    head_dim = values.get("d") or declared_values.get("d")
    heads = values.get("nh") or declared_values.get("nh")
    kv_heads = values.get("nkv") or declared_values.get("nkv")
    if head_dim and q and not heads and q % head_dim == 0:
        heads = q // head_dim
    if heads and q and not head_dim and q % heads == 0:
        head_dim = q // heads
    if head_dim and k and (not kv_heads or kv_heads * head_dim != k) and k % head_dim == 0:
        kv_heads = k // head_dim
    if heads and head_dim and q and heads * head_dim != q:
        heads = q // head_dim if q % head_dim == 0 else None
    tie = None
    if any(t.group for t in fit.family.templates if t.role == "lm_head.weight"):
        tie = not any(t.role == "lm_head.weight" and t.group in fit.groups for t in fit.family.templates)
    elif any(t.role == "lm_head.weight" for t in fit.family.templates):
        tie = False
    elif fit.family.templates:
        tie = bool(declared_values.get("tie", 1)) if declared else True
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": fit.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": values.get("I", declared_values.get("I")),
        "vocab_size": values.get("V", declared_values.get("V")),
        "tie_word_embeddings": tie,
    }
    if any(t.repeat for t in fit.family.templates):
        config.update(_expert_config(values, declared or {}))
    if any(t.layers == "dense" for t in fit.family.templates):
        config["first_k_dense_replace"] = values.get("Ld", 0)
    return config


def _expert_config(values: dict[str, int], declared: dict[str, Any]) -> dict[str, Any]:
    """An MoE's expert counts: the routed experts the shapes show (the declared count where they
    show none), and the experts each token uses, which only a declared config can say."""
    routed = values.get("E")
    if routed is None:
        routed = _declared_int(declared, "num_experts", "num_local_experts", "n_routed_experts")
    return {
        "num_experts": routed,
        "num_experts_per_tok": _declared_int(declared, "num_experts_per_tok"),
    }


def _declared_int(declared: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = declared.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
