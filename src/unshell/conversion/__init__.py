"""`unshell.convert(src, to="llama", output=dst)`: give a checkpoint its Hugging Face Llama layout back.

The source is recognized (`unshell.inspect`), planned (`plan.build_plan`: one recipe per output
tensor, or a refusal saying why the architecture is not exactly Llama), then streamed tensor by
tensor into safetensors shards in a hidden directory beside ``output`` (`writer`), together with
a complete ``config.json``, the tokenizer and licence files, a model card that keeps the original's
name, licence and ``base_model``, and ``conversion.json``: source and output sha256, every
transform per tensor class, the unshell version and the verification report (schema in
``docs/convert-record.md``). Only a complete output is renamed into place.

With torch and transformers installed, the output is verified before it is committed: the
source runs through an independent reference forward pass, the output through
``LlamaForCausalLM`` (`unshell.conversion.verify`).
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptCheckpointError,
    MissingDependencyError,
    UnsupportedFormatError,
    UsageError,
    VerificationFailedError,
)
from ..formats.base import Checkpoint, sanitize
from ..formats.facts import EmbeddedTokenizer, embedded_tokenizer
from ..formats.safetensors import read_json_file
from ..inspection import InspectResult
from ..model import Model
from ..progress import BYTES, ProgressReporter, ProgressStage, reporting, stage
from .plan import ConversionPlan, Recipe, build_plan
from .writer import (
    DEFAULT_SHARD_SIZE,
    FileDigest,
    OutputFile,
    SourceReader,
    check_destination,
    copy_file,
    hash_files,
    parse_size,
    recipe_chunks,
    refuse_input_overlap,
    remove_stale_staging,
    staging_directory,
    write_json,
    write_shards,
    write_text,
)

__all__ = ["RECORD_SCHEMA_VERSION", "ConversionResult", "convert"]

RECORD_SCHEMA_VERSION = 1
MAPPING_LIMIT = 64_000_000
AUTO_VERIFY_MAX_PARAMETERS = 2_000_000_000
"""Above this, verification runs only when asked for: two float32 forward passes of a large model
on CPU take longer and more memory than the conversion itself."""

# Sidecar roles copied verbatim (tokenizer and generation settings).
COPIED_SIDECARS = (
    "generation_config",
    "tokenizer_json",
    "tokenizer_config",
    "special_tokens_map",
    "tokenizer_model",
    "llama2c_tokenizer",
    "vocab",
    "merges",
    "vocab_txt",
    "added_tokens",
    "chat_template",
    "tiktoken",
)
# The sidecars that are the tokenizer (copied only when it is the tokenizer written).
TOKENIZER_SIDECARS = frozenset(COPIED_SIDECARS) - {"generation_config"}
# Hugging Face tokenizer files taken from beside a --tokenizer tokenizer.json, or from its folder.
HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# Attribution files copied from the source directory.
ATTRIBUTION_FILES = re.compile(r"(LICENSE|LICENCE|NOTICE|COPYING|USE_POLICY)([._-].*)?", re.IGNORECASE)
REMOTE_TOKENIZER_CODE = re.compile(r"tokenization_[A-Za-z0-9_]+\.py")


@dataclass
class ConversionResult:
    """What `convert` wrote. ``record`` is the content of ``conversion.json``."""

    output: Path
    record: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def verification(self) -> dict[str, Any] | None:
        report = self.record["verification"]
        return report if report.get("status") == "ran" else None

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.record["output"]["files"])

    def to_dict(self) -> dict[str, Any]:
        """The conversion record plus where it was written (``--format json``)."""
        return {"output_path": sanitize(str(self.output), limit=4096), **self.record}


def convert(
    src: str | os.PathLike[str],
    to: str = "llama",
    output: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    verify: bool | None = None,
    mapping: str | os.PathLike[str] | Mapping[str, str] | None = None,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    source_digests: bool = True,
    report: Callable[[str], object] | None = None,
    dtype: str = "auto",
    tokenizer: str | os.PathLike[str] | None = None,
    progress: ProgressReporter | None = None,
) -> ConversionResult:
    """Write ``src`` as a Hugging Face Llama checkpoint in the directory ``output``.

    Args:
        src: any checkpoint `unshell.inspect` reads.
        to: the target architecture; ``"llama"`` (transformers', vLLM's and llama.cpp's Llama).
        output: the directory to create. It must not exist, or be empty, unless ``force``.
        force: replace an existing ``output`` (only after the new one is complete).
        verify: compare logits of source and output before committing; None (default) verifies
            when torch and transformers are installed and the model is small enough.
        mapping: ``{source tensor name: reference name}`` (a dict or a JSON file) for tensors whose
            role names and shapes do not decide.
        shard_size: largest safetensors shard, in bytes or as ``"5GB"``.
        source_digests: record the sha256 of every source file in ``conversion.json``. Free for
            a Hub-cache source (the blob names are the digests); elsewhere a second full read and
            hash of the source, the slowest part of a conversion on two cores. ``False`` records
            ``"sha256": null, "sha256_from": "not-computed"`` for files a Hub cache does not name.
        report: called with one line for each thing done beside the output: folders that killed
            conversions to the same output left behind, removed; an interrupt held back because
            it came once the output was complete.
        dtype: ``auto`` (float weights keep their type, bit for bit; quantized weights are decoded
            and written as bf16), or ``bf16``, ``f16``, ``f32`` for every tensor.
        tokenizer: a ``tokenizer.json`` (its ``tokenizer_config.json`` and ``special_tokens_map.json``
            beside it come along), a folder holding one, or a llama2.c ``tokenizer.bin``: the
            tokenizer to write instead of the source's. Without it, the source's tokenizer
            files are copied, or the tokenizer a GGUF or llama2.c export carries is written as
            Hugging Face files (needs the ``tokenizers`` library).
        progress: where to report the bytes of weights written (`unshell.progress`).

    Raises:
        ConversionRefusedError: the architecture is not exactly Llama; the message says why.
        AmbiguousRolesError: roles only a mapping can decide (the message lists the tensors).
        OutputExistsError: ``output`` exists and is not empty, and ``force`` is off.
        UsageError: ``output`` is, contains or lies inside the input (where its files really lie,
            after links), with or without ``force``.
        OutputWriteError: writing the output failed (a full disk, a file-size limit).
        VerificationFailedError: the output does not compute what the source computes.
        InputError and its subclasses: the source cannot be read.
    """
    if output is None:
        raise UsageError("convert needs an output directory")
    source, destination = Path(src), Path(output)
    size_limit = parse_size(shard_size)
    entries, mapping_info = _load_mapping(mapping)
    with reporting(progress), Model.open(source) as model:
        checkpoint = model.checkpoint
        carried = _tokenizer_source(checkpoint, None if tokenizer is None else Path(tokenizer))
        source_files = _source_files(checkpoint) + [p for p in carried.inputs if p not in checkpoint.files]
        refuse_input_overlap(destination, source, [*source_files, *_attribution_files(checkpoint)])
        if isinstance(mapping, str | os.PathLike):  # an input too, but its folder is not the model's
            refuse_input_overlap(destination, Path(mapping), [Path(mapping)])
        if tokenizer is not None:
            refuse_input_overlap(destination, Path(tokenizer), list(carried.inputs))
        remove_stale_staging(destination, report)
        check_destination(destination, force=force)
        result = model.inspection
        plan = build_plan(checkpoint, result, mapping=entries, target=to, dtype=dtype)
        tokenizer_files = carried.build(plan)
        run_verification, verification_note = _verification_wanted(verify, checkpoint)
        with (
            staging_directory(destination) as staging,
            hash_files(source_files, compute=source_digests) as source_hashes,
        ):
            reader = SourceReader(checkpoint)
            recipes = _write_order(plan, checkpoint)
            try:
                with stage(f"writing {destination.name}", sum(r.nbytes for r in recipes), BYTES) as shown:
                    files = write_shards(
                        staging.path, recipes, lambda r: _counted(recipe_chunks(r, reader), shown), size_limit
                    )
            finally:
                reader.close()
            files.append(write_json(staging.path / "config.json", plan.config))
            files += _copy_side_files(checkpoint, staging.path, copy_tokenizer=carried.kind == "copied")
            files += _write_tokenizer(carried, tokenizer_files, staging.path, {f.path for f in files})
            files.append(write_text(staging.path / "README.md", model_card(checkpoint, result, plan)))
            verification = _verification_record(
                run_verification, verification_note, model, staging.path, entries
            )
            hashes = source_hashes.result()
            record = _record(checkpoint, result, plan, files, hashes, mapping_info, verification)
            record["tokenizer"] = carried.record()
            record["output"]["dtype"] = dtype
            record["notes"] += [sanitize(n, limit=1000) for n in carried.notes]
            write_json(staging.path / "conversion.json", record)
            staging.commit(force=force)
    if staging.interrupted_after_commit and report is not None:
        report("an interrupt came once the output was complete: the conversion finished first")
    return ConversionResult(output=destination, record=record, notes=list(record["notes"]))


def _counted(chunks: Iterator[np.ndarray], shown: ProgressStage) -> Iterator[np.ndarray]:
    for chunk in chunks:
        yield chunk
        shown.advance(chunk.nbytes)


# -- inputs ------------------------------------------------------------------------------------------


def _load_mapping(
    mapping: str | os.PathLike[str] | Mapping[str, str] | None,
) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
    if mapping is None:
        return None, None
    if isinstance(mapping, Mapping):
        entries: Any = dict(mapping)
        info: dict[str, Any] = {"source": "argument"}
    else:
        path = Path(mapping)
        try:
            entries = read_json_file(path, limit=MAPPING_LIMIT)
        except CorruptCheckpointError as error:  # a bad mapping is a bad argument, not a bad checkpoint
            raise UsageError(f"mapping file {error}") from None
        info = {"source": sanitize(str(path), limit=4096), "sha256": _sha256_file(path)}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items()):
        raise UsageError("the mapping must be a JSON object of tensor name -> reference tensor name strings")
    info["entries"] = len(entries)
    return entries, info


def _sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_files(checkpoint: Checkpoint) -> list[Path]:
    paths = list(checkpoint.files)
    paths += [path for _, path in sorted(checkpoint.sidecars.items()) if path.is_file()]
    return paths


def _source_directory(checkpoint: Checkpoint) -> Path | None:
    """The folder holding the model's side files, when the source is a model directory."""
    if not checkpoint.sidecars:
        return None
    return next(iter(checkpoint.sidecars.values())).parent


def _write_order(plan: ConversionPlan, checkpoint: Checkpoint) -> list[Recipe]:
    """Recipes in the order their sources lie on disk, so reads run front to back; a zero bias
    follows the tensor planned before it."""
    files = {path: index for index, path in enumerate(checkpoint.files)}
    keyed = []
    last: tuple[int, int] = (-1, -1)
    for position, recipe in enumerate(plan.recipes):
        if recipe.source is not None:
            info = checkpoint.info(recipe.source)
            first = info.parts[0] if info.parts else info
            last = (files.get(first.file, len(files)), first.offset)
        keyed.append((last, position, recipe))
    return [recipe for _, _, recipe in sorted(keyed, key=lambda item: (item[0], item[1]))]


def _attribution_files(checkpoint: Checkpoint) -> list[Path]:
    """Licence, notice and remote tokenizer code files beside the model, copied as they are."""
    directory = _source_directory(checkpoint)
    if directory is None:
        return []
    found = []
    for entry in sorted(directory.iterdir()):
        wanted = ATTRIBUTION_FILES.fullmatch(entry.name) or (
            REMOTE_TOKENIZER_CODE.fullmatch(entry.name) and "tokenizer_config" in checkpoint.sidecars
        )
        if wanted and entry.is_file():
            found.append(entry)
    return found


def _copy_side_files(
    checkpoint: Checkpoint, staging: Path, *, copy_tokenizer: bool = True
) -> list[OutputFile]:
    copied: list[OutputFile] = []
    names: set[str] = set()
    for role in COPIED_SIDECARS:
        if not copy_tokenizer and role in TOKENIZER_SIDECARS:
            continue
        path = checkpoint.sidecars.get(role)
        if path is not None and path.name not in names:
            copied.append(copy_file(path, staging))
            names.add(path.name)
    for entry in _attribution_files(checkpoint):
        if entry.name not in names:
            copied.append(copy_file(entry, staging))
            names.add(entry.name)
    return copied


# -- verification --------------------------------------------------------------------------------------


def _verification_wanted(verify: bool | None, checkpoint: Checkpoint) -> tuple[bool, str]:
    if verify is False:
        return False, "not run: --no-verify"
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        if verify:
            raise MissingDependencyError(
                f"--verify needs {' and '.join(missing)}: pip install 'unshell[transformers]'"
            )
        return False, f"not run: {' and '.join(missing)} not installed"
    if verify is None and checkpoint.parameter_count > AUTO_VERIFY_MAX_PARAMETERS:
        return False, (
            f"not run: {checkpoint.parameter_count:,} parameters is above the automatic limit "
            f"of {AUTO_VERIFY_MAX_PARAMETERS:,}; pass --verify to run it"
        )
    return True, ""


def _verification_record(
    run: bool,
    note: str,
    source: Model,
    output: Path,
    mapping: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    if not run:
        return {"status": "skipped", "reason": note}
    try:
        from .verify import verify_model
    except ImportError as error:  # the optional module or one of its imports is absent
        raise MissingDependencyError(
            f"verification is unavailable ({error}): pip install 'unshell[transformers]'"
        ) from None
    # The source as the conversion opened and recognized it: verification reads it, never again.
    report = verify_model(source, output, mapping=mapping or None)
    if not report.passed:
        raise VerificationFailedError(
            f"the converted model's logits differ from the source's by {report.max_abs_logit_diff:.3g} "
            f"(tolerance {report.tolerance:g}, reference {report.reference}); nothing was written"
        )
    return {"status": "ran", **report.to_dict()}


# -- model card -----------------------------------------------------------------------------------------


def _card_body(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for index in range(1, len(lines)):
            if lines[index].strip() in ("---", "..."):
                return "\n".join(lines[index + 1 :]).strip()
    return text.strip()


def _yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def model_card(checkpoint: Checkpoint, result: InspectResult, plan: ConversionPlan) -> str:
    """A README.md that keeps the original's name, licence and base_model, says what was done,
    and carries the original card below (conversion never strips attribution)."""
    from .. import __version__
    from ..declared import read_declared

    declared = read_declared(checkpoint)
    source_label = Path(plan.source).name or plan.source
    name = str(declared.name.value) if declared.name else source_label
    front: dict[str, Any] = {}
    for key in ("license", "license_name", "license_link", "base_model", "base_model_relation"):
        claim = getattr(declared, key)
        if claim is not None:
            front[key] = claim.value
    front["tags"] = ["llama", "unshell-converted"]
    front["library_name"] = "transformers"
    lines = ["---"]
    for key, value in front.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"- {_yaml_scalar(item)}" for item in value]
        else:
            lines.append(f"{key}: {_yaml_scalar(value)}")
    lines.append("---")
    licence = (
        f"{front['license']} (as declared by the original)"
        if "license" in front
        else "none declared by the source; the original's terms apply"
    )
    what = [
        f"# {name} (Llama layout)",
        "",
        f"This is **{name}** with its weights laid out as Hugging Face Llama (`LlamaForCausalLM`), "
        f"converted by unshell {__version__}. The weights are the original model's: tensor names, the "
        "split of fused tensors and the row order changed"
        + (", and runtime scale factors were folded into weights" if not plan.exact else "")
        + ". `conversion.json` lists every transform, the sha256 of every source and output file, "
        "and the verification result.",
        "",
        f"- Source: `{source_label}` ({plan.source_format}), recognized as {plan.matched_family} "
        f"(reference {plan.reference})",
        f"- Licence: {licence}",
    ]
    if "base_model" in front:
        what.append(f"- Base model (from the original): {front['base_model']}")
    card = checkpoint.sidecars.get("card")
    if card is not None and card.is_file():
        body = _card_body(card)
        what += ["", "## Original model card", "", body or "(the original card has no text)"]
    else:
        what += [
            "",
            f"The source came without a model card: it was the {plan.source_format} checkpoint "
            f"`{source_label}` ({result.parameters:,} parameters), whose file hashes are in `conversion.json`.",
        ]
    return "\n".join(lines + what) + "\n"


# -- conversion record --------------------------------------------------------------------------------


def _pattern(name: str, layer: int | None) -> str:
    if layer is None:
        return name
    return re.sub(rf"(^|[./]){layer}(?=[./]|$)", r"\g<1>{i}", name, count=1)


def _transform_classes(plan: ConversionPlan) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for recipe in plan.recipes:
        source = _pattern(recipe.source, recipe.source_layer) if recipe.source else None
        key = (
            recipe.role,
            source,
            _pattern(recipe.output, recipe.layer),
            tuple(step.text for step in recipe.steps),
            recipe.dtype,
        )
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = {
                "class": recipe.role,
                "from": sanitize(source) if source else None,
                "to": _pattern(recipe.output, recipe.layer),
                "transform": recipe.transform_class,
                "steps": [step.to_dict() for step in recipe.steps],
                "exactness": recipe.exactness,
                "dtype": {"source": recipe.source_dtype, "output": recipe.dtype},
                "tensors": 0,
                "layers": [],
            }
        entry["tensors"] += 1
        if recipe.layer is not None:
            entry["layers"].append(recipe.layer)
    for entry in groups.values():
        if not entry["layers"]:
            entry["layers"] = None
    return list(groups.values())


def _record(
    checkpoint: Checkpoint,
    result: InspectResult,
    plan: ConversionPlan,
    files: list[OutputFile],
    hashes: dict[Path, FileDigest],
    mapping: dict[str, Any] | None,
    verification: dict[str, Any],
) -> dict[str, Any]:
    from .. import __version__

    notes = list(plan.notes)
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "unshell_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": {"architecture": "LlamaForCausalLM", "model_type": "llama"},
        "source": {
            "path": sanitize(plan.source, limit=4096),
            "format": plan.source_format,
            "layout": checkpoint.layout,
            "family": plan.family,
            "matched_family": plan.matched_family,
            "reference": plan.reference,
            "confidence": result.recognition.confidence,
            "rotary": plan.rotary,
            "tied_embeddings": plan.tied_in_source,
            "files": [
                {
                    "path": sanitize(str(path), limit=4096),
                    "bytes": digest.bytes,
                    "sha256": digest.sha256,
                    "sha256_from": digest.origin,
                }
                for path, digest in hashes.items()
            ],
        },
        "output": {
            "files": [f.to_dict() for f in files],
            "tensors": len(plan.recipes),
            "bytes": plan.total_bytes,
            "config": plan.config,
        },
        "exact": plan.exact,
        "transforms": _transform_classes(plan),
        "dropped": plan.dropped,
        "mapping": mapping,
        "verification": verification,
        "notes": [sanitize(n, limit=1000) for n in notes],
    }


# -- tokenizer ------------------------------------------------------------------------------------------


@dataclass
class _CarriedTokenizer:
    """Which tokenizer the output gets: ``copied`` (the source's files), ``argument`` (files named
    by ``--tokenizer``), ``rebuilt`` (Hugging Face files made from a carried `EmbeddedTokenizer`)
    or ``none``."""

    kind: str
    inputs: list[Path] = field(default_factory=list)
    embedded: EmbeddedTokenizer | None = None
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    written: list[str] = field(default_factory=list)
    given: bool = False

    def build(self, plan: ConversionPlan) -> dict[str, str]:
        """The rebuilt files' texts, before anything is written (so a failure writes nothing);
        the config gains the tokenizer's BOS/EOS/PAD ids where the source declared none."""
        if self.embedded is None:
            return {}
        from ..tokenizers.export import tokenizer_files

        try:
            built = tokenizer_files(
                self.embedded, model_max_length=plan.config.get("max_position_embeddings")
            )
        except (MissingDependencyError, UnsupportedFormatError) as error:
            if self.given:  # asked for by name: its failure is the command's
                raise
            self.notes.append(f"no tokenizer written: {error}")
            self.kind, self.embedded = "none", None
            return {}
        rows = plan.dims.vocab
        if len(self.embedded.tokens) > rows:
            self.notes.append(
                f"the tokenizer has {len(self.embedded.tokens)} tokens for {rows} embedding rows: "
                "ids past the embedding cannot be run"
            )
        for key, value in (
            ("bos_token_id", built.bos_id),
            ("eos_token_id", built.eos_id),
            ("pad_token_id", built.pad_id),
        ):
            if value is not None and value < rows:
                plan.config.setdefault(key, value)
        return built.files

    def record(self) -> dict[str, Any]:
        return {
            "from": self.kind,
            "source": sanitize(self.source, limit=4096) if self.source else None,
            "files": sorted(self.written),
        }


def _tokenizer_source(checkpoint: Checkpoint, given: Path | None) -> _CarriedTokenizer:
    if given is not None:
        return _given_tokenizer(given)
    roles = {role for role in TOKENIZER_SIDECARS if role in checkpoint.sidecars}
    if roles == {"llama2c_tokenizer"}:  # run.c's format, which no Hugging Face loader reads
        from ..formats.llama2c import read_llama2c_tokenizer

        beside = read_llama2c_tokenizer(checkpoint.sidecars["llama2c_tokenizer"])
        return _CarriedTokenizer("rebuilt", list(beside.files), beside, source=beside.source)
    if roles:
        names = sorted({checkpoint.sidecars[r].name for r in TOKENIZER_SIDECARS if r in checkpoint.sidecars})
        return _CarriedTokenizer("copied", source="the source's files", written=names)
    embedded = embedded_tokenizer(checkpoint)
    if embedded is not None:
        return _CarriedTokenizer("rebuilt", list(embedded.files), embedded, source=embedded.source)
    return _CarriedTokenizer(
        "none",
        notes=["the source carries no tokenizer unshell reads; none was written (pass --tokenizer PATH)"],
    )


def _given_tokenizer(path: Path) -> _CarriedTokenizer:
    from ..formats.llama2c import read_llama2c_tokenizer

    shown = sanitize(str(path), limit=4096)
    if path.is_dir():
        found = [path / name for name in HF_TOKENIZER_FILES if (path / name).is_file()]
        if not any(p.name in ("tokenizer.json", "tokenizer.model", "vocab.json") for p in found):
            raise UsageError(
                f"--tokenizer {shown}: the folder holds no tokenizer.json, tokenizer.model or vocab.json"
            )
        return _CarriedTokenizer("argument", found, source=shown, written=[p.name for p in found])
    if not path.is_file():
        raise UsageError(f"--tokenizer {shown}: no such file or folder")
    if path.suffix == ".json":
        found = [path] + [path.parent / n for n in HF_TOKENIZER_FILES[1:3] if (path.parent / n).is_file()]
        return _CarriedTokenizer(
            "argument", found, source=shown, written=["tokenizer.json", *(p.name for p in found[1:])]
        )
    if path.suffix == ".bin":
        try:
            embedded = read_llama2c_tokenizer(path)
        except CorruptCheckpointError as error:
            raise UsageError(f"--tokenizer {error}") from None
        return _CarriedTokenizer("rebuilt", [path], embedded, source=embedded.source, given=True)
    raise UsageError(
        f"--tokenizer {shown}: give a tokenizer.json, a folder holding one, or a llama2.c tokenizer.bin"
    )


def _write_tokenizer(
    carried: _CarriedTokenizer, built: dict[str, str], staging: Path, present: set[str]
) -> list[OutputFile]:
    written: list[OutputFile] = []
    if carried.kind == "argument":
        # A tokenizer.json given by any name is the output's tokenizer.json (`written` has the names).
        for path, name in zip(carried.inputs, carried.written, strict=True):
            written.append(copy_file(path, staging, name))
    for name, text in built.items():
        if name not in present:  # the source's own generation_config.json wins
            written.append(write_text(staging / name, text))
            carried.written.append(name)
    return written
