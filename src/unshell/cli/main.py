"""``unshell``: the console script. Each command is one library call plus rendering."""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from .. import __version__
from ..auditing.report import LEVELS
from ..constants import debug
from ..errors import (
    EXIT_FINDING,
    EXIT_INTERRUPTED,
    failure,
)
from ..formats.hub import looks_like_repo_id
from ..report.text import (
    render_audit,
    render_compare,
    render_convert,
    render_inspect,
    render_library_added,
    render_library_list,
    render_library_show,
    render_probe,
    render_profile_recorded,
    render_scan,
    render_search,
)
from .output import FORMATS, Output, check_output_path, note, quiet, set_quiet
from .progress import terminal_progress

format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people, json for programs (versioned schema).",
)


def revision_option(parameter: str) -> Any:
    """``--revision REV``: which snapshot of a Hub repo id PATH names (``org/name@REV`` says the same)."""

    def decorate(function: Any) -> Any:
        @functools.wraps(function)
        def with_revision(*args: Any, **kwargs: Any) -> Any:
            revision = kwargs.pop("revision", None)
            if revision is not None:
                target = kwargs[parameter]
                if (
                    target is None
                    or os.path.exists(target)
                    or "@" in target
                    or not looks_like_repo_id(target)
                ):
                    raise click.UsageError(f"--revision applies to a Hub repo id (org/name), not {target!r}")
                kwargs[parameter] = f"{target}@{revision}"
            return function(*args, **kwargs)

        return click.option(
            "--revision",
            metavar="REV",
            help="With a Hub repo id: the branch, tag or commit to read from the local Hub cache (default main).",
        )(with_revision)

    return decorate


def _writable_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An output file checked before the work starts (exit 19 naming it when it cannot be written)."""
    return None if value is None else check_output_path(value)


def _writable_anywhere(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The same for an output whose missing folders the writer creates."""
    return None if value is None else check_output_path(value, makes_folders=True)


html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=str, dir_okay=False),
    callback=_writable_file,
    help="Also write a self-contained HTML report to this file (no network resources).",
)


def _report_written(path: str) -> None:
    note(f"report written to {path}")


def _thread_count(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--threads N``, checked here so that a bad N is one line and exit 2 (no usage block)."""
    from ..errors import UsageError
    from ..threads import check_threads

    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--threads must be a whole number, not {value!r}") from None
    return check_threads(count)


threads_option = click.option(
    "--threads",
    metavar="N",
    callback=_thread_count,
    help="Threads to compute with, NumPy's BLAS included (1 to 1024; default: the cores this process "
    "may use, BLAS within an OMP_NUM_THREADS or OPENBLAS_NUM_THREADS cap).",
)


def _progress() -> Any:
    """Progress bars on stderr when it is a terminal and the command is not --quiet, else None."""
    return terminal_progress(quiet=quiet())


library_option = click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="The fingerprint library (SQLite). Default: $UNSHELL_HOME/library.sqlite (~/.cache/unshell).",
)


def behaviour_options(served: str) -> Any:
    """The options `probe` and `library profile` share: where the ``served`` model is (an endpoint),
    which prompts are asked and how, and the answer cache. The command receives them as one
    ``behaviour`` dict of `unshell.probe` / `record_profile` keyword arguments, plus ``endpoint``
    and ``model`` (see `_served_source`)."""
    options = [
        click.option(
            "--endpoint", help=f"The {served} is served here (OpenAI-compatible; its root or its /v1)."
        ),
        click.option("--model", help=f"The name the --endpoint serves the {served} under."),
        click.option(
            "--api-key-env",
            default="OPENAI_API_KEY",
            show_default=True,
            help="The environment variable holding the endpoints' API key (never printed, cached or stored).",
        ),
        click.option(
            "--prompts",
            default=48,
            show_default=True,
            type=click.IntRange(1, 10_000),
            help="Prompts to ask each model.",
        ),
        click.option(
            "--prompt-set",
            default="general-v1",
            show_default=True,
            help="The versioned prompt set to draw them from.",
        ),
        click.option("--seed", default=0, show_default=True, type=int, help="Which prompts, in which order."),
        click.option(
            "--max-tokens",
            default=16,
            show_default=True,
            type=click.IntRange(1, 512),
            help="New tokens per answer.",
        ),
        click.option(
            "--budget",
            default=400,
            show_default=True,
            type=click.IntRange(1),
            help="At most this many requests (cached answers are free); a probe decides on the prompts answered by then.",
        ),
        click.option(
            "--rate",
            type=click.FloatRange(min=0.001),
            help="At most this many requests a second per endpoint.",
        ),
        click.option(
            "--cache",
            "cache_dir",
            type=click.Path(path_type=str, file_okay=False),
            help="Where answers are kept so an interrupted run resumes. Default: ~/.cache/unshell/probe.",
        ),
        click.option("--no-cache", is_flag=True, help="Keep answers in memory only."),
        click.option(
            "--timeout",
            "timeout_s",
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0.1),
            help="Seconds to wait for one endpoint answer before retrying.",
        ),
    ]
    keys = ("api_key_env", "prompts", "prompt_set", "seed", "max_tokens", "budget", "cache_dir", "timeout_s")

    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def gathered(**kwargs: Any) -> Any:
            behaviour = {key: kwargs.pop(key) for key in keys}
            behaviour["rate_per_s"] = kwargs.pop("rate")
            behaviour["use_cache"] = not kwargs.pop("no_cache")
            return command(behaviour=behaviour, **kwargs)

        for option in reversed(options):
            gathered = option(gathered)
        return gathered

    return decorate


def _served_source(source: str | None, endpoint: str | None, model: str | None, what: str) -> str:
    """The model to ask: ``source`` (a GGUF path or URL#MODEL), or ``endpoint`` served as ``model``."""
    from ..errors import UsageError

    if endpoint is not None:
        if source is not None:
            raise UsageError(f"give either {what.upper()} or --endpoint, not both")
        if not model:
            raise UsageError("--endpoint needs --model (the name the endpoint serves the model as)")
        return endpoint
    if source is None:
        raise UsageError(f"name the {what}: a GGUF file, URL#MODEL, or --endpoint URL --model NAME")
    if model is not None:
        raise UsageError("--model names the model behind --endpoint")
    return source


class UnshellCommand(click.Command):
    """Every command gets the same conventions: ``-q/--quiet``, ``--json`` beside ``--format``, a
    summary in ``unshell --help`` that is the help's whole first paragraph (never cut mid-phrase),
    and input paths that unshell's own readers check (an unreadable file is exit 11, not a usage
    error from Click)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param.type, click.Path):
                param.type.readable = False  # the readers say "permission denied" (exit 11)
        if any(param.name == "fmt" for param in self.params):
            self.params.append(
                click.Option(["--json", "json_alias"], is_flag=True, help="The same as --format json.")
            )
        self.params.append(
            click.Option(
                ["-q", "--quiet"],
                is_flag=True,
                help="No progress, notes or 'report written' lines; the result and errors still print.",
            )
        )
        if self.short_help is None and self.help:
            self.short_help = " ".join(self.help.split("\n\n")[0].split())

    def invoke(self, ctx: click.Context) -> Any:
        set_quiet(bool(ctx.params.pop("quiet", False)))
        if ctx.params.pop("json_alias", False):
            ctx.params["fmt"] = "json"
        if "threads" not in ctx.params:
            return super().invoke(ctx)
        from ..threads import limited

        # --threads bounds the whole command (BLAS and unshell's pools, `unshell.threads`); a
        # command that also hands the count on (probe, to llama.cpp) keeps it as a parameter.
        count = ctx.params["threads"]
        if self.callback is None or "threads" not in inspect.signature(self.callback).parameters:
            del ctx.params["threads"]
        with limited(count):
            return super().invoke(ctx)


class UnshellGroup(click.Group):
    command_class = UnshellCommand
    group_class = type  # subgroups are UnshellGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.short_help is None and self.help:
            self.short_help = " ".join(self.help.split("\n\n")[0].split())


@click.group(cls=UnshellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="unshell", help="Show the version and exit.")
def cli() -> None:
    """Is this model a shell of another one? Evidence from checkpoints.

    \b
    Examples:
      unshell inspect model.gguf
      unshell compare base/ suspect/ --html report.html
      unshell audit my-finetune/ --against base/
      unshell COMMAND --help

    \b
    Shell completion (bash; zsh_source and fish_source likewise):
      eval "$(_UNSHELL_COMPLETE=bash_source unshell)"
    """


@cli.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@format_option
@click.option("--tensors", "tensor_map", is_flag=True, help="List every tensor's role and canonical name.")
@revision_option("path")
def inspect_command(path: str, fmt: str, tensor_map: bool) -> None:
    """What a checkpoint is, without reading weight data.

    PATH is a safetensors file or sharded index, a Hugging Face model directory or hub-cache
    folder, a PyTorch .bin/.pt, Meta consolidated.*.pth directory, GGUF, llama2.c export or ONNX.

    \b
    Examples:
      unshell inspect model.gguf
      unshell inspect org/name --revision main   # from the local Hub cache
      unshell inspect path/to/model --format json
      unshell inspect path/to/model --tensors
    """
    from ..inspection import inspect

    result = inspect(path)
    Output(fmt).document(result.to_dict(tensor_map=tensor_map), lambda d: render_inspect(d, tensor_map))


@cli.command("convert")
@click.argument("src", type=click.Path(path_type=str))
@click.option(
    "--to",
    "target",
    type=click.Choice(["llama"]),
    default="llama",
    show_default=True,
    help="Target architecture: Hugging Face Llama, as transformers, vLLM and llama.cpp load it.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(path_type=str),
    callback=lambda ctx, param, value: check_output_path(value, makes_folders=True, is_folder=True),
    help="Directory to create; it must not exist or be empty, unless --force.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output (only once the new one is complete).")
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Compare source and output logits before writing (default: on when torch and transformers are installed).",
)
@click.option(
    "--mapping",
    type=click.Path(path_type=str),
    help="JSON object {source tensor name: reference name} for roles names and shapes cannot decide.",
)
@click.option(
    "--shard-size", default="5GB", show_default=True, help="Largest safetensors shard (5GB, 500MiB, bytes)."
)
@click.option(
    "--source-digests/--no-source-digests",
    default=True,
    show_default=True,
    help="Record every source file's sha256 in conversion.json (free from a Hub cache, else a second read).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bf16", "f16", "f32"]),
    default="auto",
    show_default=True,
    help="Output weight type. auto: float weights keep theirs bit for bit, quantized ones are decoded to bf16.",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(path_type=str),
    help="Tokenizer to write instead of the source's: a tokenizer.json, a folder holding one, or a llama2.c tokenizer.bin.",
)
@threads_option
@format_option
@revision_option("src")
def convert_command(
    src: str,
    target: str,
    output: str,
    force: bool,
    verify: bool | None,
    mapping: str | None,
    shard_size: str,
    source_digests: bool,
    dtype: str,
    tokenizer_path: str | None,
    fmt: str,
) -> None:
    """Write SRC as a Hugging Face Llama checkpoint in OUTPUT, or refuse and say why.

    Output: safetensors shards with an index, config.json, tokenizer and licence files, a model
    card keeping the original's name, licence and base_model, and conversion.json (hashes,
    transforms, verification). Nothing is written unless the whole conversion succeeds. The
    tokenizer a GGUF or a llama2.c export carries is written as Hugging Face files, so the output
    loads with AutoTokenizer and AutoModelForCausalLM alone.

    \b
    Examples:
      unshell convert model.Q4_K_M.gguf -o model-hf
      unshell convert model.Q4_K_M.gguf -o model-hf --dtype f16
      unshell convert stories15M.bin -o stories-hf --tokenizer tokenizer.bin
      unshell convert yi-style/ --to llama -o yi-as-llama/
      unshell convert renamed/ -o out/ --mapping roles.json --force
      unshell convert model.Q4_K_M.gguf -o model-hf --threads 4 --quiet
    """
    from ..conversion import convert

    result = convert(
        src,
        to=target,
        output=output,
        force=force,
        verify=verify,
        mapping=mapping,
        shard_size=shard_size,
        source_digests=source_digests,
        report=lambda line: note(f"note: {line}"),
        dtype=dtype,
        tokenizer=tokenizer_path,
        progress=_progress(),
    )
    Output(fmt).document(result.to_dict(), render_convert)


@cli.command("compare")
@click.argument("a", type=click.Path(path_type=str))
@click.argument("b", type=click.Path(path_type=str), required=False)
@format_option
@click.option(
    "--quick",
    is_flag=True,
    help="Decide from embedding anchors and 1 row in 20 of each matrix, no hashing (about 4% of a 7B pair's bytes).",
)
@click.option(
    "--against",
    "parents",
    multiple=True,
    type=click.Path(path_type=str),
    help="A candidate parent (repeatable; more may follow as plain arguments): compare A with each, "
    "and test whether A is a merge of them (linear or SLERP weights per layer).",
)
@html_option
@threads_option
def compare_command(
    a: str, b: str | None, fmt: str, quick: bool, parents: tuple[str, ...], html_path: str | None
) -> None:
    """Did B's weights come from A's, or were they trained independently?

    Reports architecture reuse apart from weight reuse, a verdict (identical, derived,
    independent, inconclusive) with a calibrated p-value for "trained independently", how B was
    derived where it can be told, and which layer of A each layer of B matches. With --against,
    A is the suspect: it is compared with every candidate parent, and tested for being a merge
    of them (the parents and their weights per layer, with a calibrated p-value).

    \b
    Examples:
      unshell compare base/ suspect/
      unshell compare base/ suspect.gguf --quick
      unshell compare base/ suspect/ --json
      unshell compare base/ suspect/ --html report.html
      unshell compare merged/ --against parent1/ --against parent2/
      unshell compare base/ suspect/ --threads 2   # progress on stderr; -q silences it
    """
    if parents or b is None:
        from ..errors import UsageError
        from ..lineage.merges import compare_merge
        from ..report.merges import merge_html, render_merge

        if not parents:
            raise UsageError(
                "Missing argument 'B': compare needs two models (A B), or a suspect and its candidate parents (--against)"
            )
        document = compare_merge(
            a, [*parents, *([b] if b is not None else [])], quick=quick, progress=_progress()
        ).to_dict()
        if html_path is not None:
            from ..report.html import write_html

            write_html(merge_html(document), html_path)
            _report_written(html_path)
        Output(fmt).document(document, render_merge)
        return
    from ..lineage.compare import compare

    result = compare(a, b, quick=quick, progress=_progress())
    if html_path is not None:
        from ..report.html import compare_html, write_html

        write_html(compare_html(result), html_path)
        _report_written(html_path)
    Output(fmt).document(result.to_dict(), render_compare)


@cli.command("probe")
@click.argument("suspect", required=False)
@click.option(
    "--against",
    "candidates",
    multiple=True,
    required=True,
    help="A candidate source (repeatable): a GGUF file, an endpoint as URL#MODEL, or library:NAME (a recorded profile).",
)
@click.option(
    "--controls",
    "controls",
    multiple=True,
    required=True,
    help="A model known to be unrelated to the suspect (repeatable; at least one, better two or more; same forms as --against): calibrates the test.",
)
@behaviour_options("suspect")
@click.option(
    "--alpha",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Significance level (after Holm across candidates).",
)
@library_option
@threads_option
@format_option
@html_option
def probe_command(
    suspect: str | None,
    candidates: tuple[str, ...],
    controls: tuple[str, ...],
    endpoint: str | None,
    model: str | None,
    behaviour: dict[str, Any],
    alpha: float,
    library_path: str | None,
    threads: int | None,
    fmt: str,
    html_path: str | None,
) -> None:
    """Black-box provenance: does SUSPECT (or the model behind --endpoint) come from a candidate?

    Every model answers the same seeded prompts greedily; for each candidate, its agreement with
    the suspect is tested against the controls' (p for H0 "unrelated", Holm-adjusted), and the
    verdict is same-model, derived, not-derived or inconclusive. Needs no weights: endpoints
    are OpenAI-compatible servers (/v1/completions with log-probs, else /v1/chat/completions).

    \b
    Examples:
      unshell probe suspect.gguf --against base.gguf --controls other1.gguf --controls other2.gguf
      unshell probe --endpoint https://api.example.com/v1 --model their-model \\
          --against base.gguf --controls http://localhost:8080#other --budget 300 --format json
      unshell probe http://localhost:8080#suspect --against library:smollm2 \\
          --controls library:qwen --controls library:gemma   # recorded profiles, no weights
      unshell probe suspect.gguf --against base.gguf --controls other.gguf --html probe.html
    """
    from ..behaviour import probe

    suspect = _served_source(suspect, endpoint, model, "suspect")
    progress = _probe_progress_for(fmt)
    result = probe(
        suspect,
        candidates,
        controls,
        model=model,
        alpha=alpha,
        threads=threads,
        progress=progress,
        library=library_path,
        **behaviour,
    )
    _probe_output(result.to_dict(), fmt, html_path)


def _probe_progress(done: int, total: int) -> None:
    click.echo(f"\rprobe: {done}/{total} prompts answered", err=True, nl=done == total)


def _probe_progress_for(fmt: str) -> Callable[[int, int], None] | None:
    """Prompt progress on stderr: only on a terminal, for table output, and not under --quiet."""
    return _probe_progress if sys.stderr.isatty() and fmt == "table" and not quiet() else None


def _probe_output(document: dict[str, Any], fmt: str, html_path: str | None) -> None:
    """A probe result (of `probe` or `search --endpoint`): the HTML report if asked, then the document."""
    if html_path is not None:
        from ..report.html import write_html
        from ..report.probe import probe_html

        write_html(probe_html(document), html_path)
        _report_written(html_path)
    Output(fmt).document(document, render_probe)


@cli.command("audit")
@click.argument("path", type=click.Path(path_type=str))
@click.option(
    "--against",
    type=click.Path(path_type=str),
    help="A base model to test the weights against (the only evidence that can show a derivative).",
)
@click.option("--quick", is_flag=True, help="Compare weights as `compare --quick` does.")
@click.option(
    "--library",
    "library_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="Without --against: search this fingerprint library for the weights' source (p Holm-adjusted).",
)
@click.option(
    "--fail-on",
    type=click.Choice(LEVELS[:-1]),
    help="Exit with status 1 when a finding is this severe or worse (for CI and upload checks).",
)
@threads_option
@format_option
@html_option
@revision_option("path")
def audit_command(
    path: str,
    against: str | None,
    quick: bool,
    library_path: str | None,
    fail_on: str | None,
    fmt: str,
    html_path: str | None,
) -> None:
    """Disclosure audit: detected lineage (weights, architecture, tokenizer, code) against declared.

    Reports the most severe finding as the level (undisclosed-derivative,
    licence-obligations-unmet, architecture-reuse-undisclosed, inconclusive, note, ok), each
    finding with its evidence and one line of advice.

    \b
    Examples:
      unshell audit yi-style/
      unshell audit my-finetune/ --against base/ --html audit.html
      unshell audit upload/ --library known.sqlite --fail-on undisclosed-derivative
    """
    from ..auditing.report import audit

    result = audit(path, against=against, quick=quick, library=library_path, progress=_progress())
    if html_path is not None:
        from ..report.html import audit_html, write_html

        write_html(audit_html(result), html_path)
        _report_written(html_path)
    Output(fmt).document(result.to_dict(), render_audit)
    if fail_on is not None and LEVELS.index(result.level) <= LEVELS.index(fail_on):
        sys.exit(EXIT_FINDING)


@cli.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default)."
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    required=True,
    type=click.Path(path_type=str, exists=True, file_okay=False),
    help="A directory the UI may read checkpoints under (repeatable); nothing outside is opened.",
)
@click.option("--max-jobs", default=2, show_default=True, type=click.IntRange(1, 64), help="Concurrent jobs.")
@click.option(
    "--job-timeout",
    default=600,
    show_default=True,
    type=click.IntRange(1, 7 * 24 * 3600),
    help="Seconds an inspection or a job may run before it is stopped.",
)
@library_option
@threads_option
def serve_command(
    host: str, port: int, roots: tuple[str, ...], max_jobs: int, job_timeout: int, library_path: str | None
) -> None:
    """A local web UI and JSON API over inspect, compare, audit and the library (the `web` extra).

    Reads only under the --root directories, runs nothing from model files, and bounds concurrent
    jobs. The API mirrors the CLI; its OpenAPI schema is at /openapi.json.

    \b
    Examples:
      unshell serve --root ~/models
      unshell serve --root /models --root ~/.cache/huggingface/hub --port 8080
      unshell serve --root /models --max-jobs 2 --threads 8   # 4 threads per job
    """
    from pathlib import Path

    from ..errors import MissingDependencyError

    try:
        from ..web import serve
    except ImportError as error:
        raise MissingDependencyError(
            f"unshell serve needs the web extra: pip install 'unshell[web]' ({error.name} is missing)"
        ) from None
    serve(
        host=host,
        port=port,
        roots=[Path(r) for r in roots],
        max_jobs=max_jobs,
        library=library_path,
        job_timeout=job_timeout,
    )


def _open_library(path: str | None, *, create: bool = False) -> Any:
    """The library at ``path`` (default: the default one). Only commands that add fingerprints
    create it; the others report a missing library instead of leaving an empty file behind."""
    from ..library import Library, existing_library

    return Library(path) if create else existing_library(path)


@cli.group("library")
def library_group() -> None:
    """The fingerprint library that `unshell search` looks suspects up in.

    A fingerprint is a few megabytes per 7B model: content hashes of every tensor, sketches of
    every matrix and embedding anchors, enough to test lineage without the base weights.

    \b
    Examples:
      unshell library add llama-2-7b/ --library known.sqlite
      unshell library list
      unshell library export known.jsonl
    """


@library_group.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--name", help="The entry's name (one PATH only). Default: the Hub repo id, else the file or folder name."
)
@click.option("--replace", is_flag=True, help="Replace an entry of the same name.")
@library_option
@threads_option
@format_option
def library_add_command(
    paths: tuple[str, ...], name: str | None, replace: bool, library_path: str | None, fmt: str
) -> None:
    """Fingerprint each checkpoint (reads its weights once) and store it in the library.

    \b
    Examples:
      unshell library add llama-2-7b/ qwen2.5-7b/
      unshell library add base/ --name my-base --replace --library known.sqlite
      unshell library add llama-2-7b/ --threads 4
    """
    from ..errors import UsageError
    from ..library import add_checkpoints

    if name is not None and len(paths) > 1:
        raise UsageError("--name names one entry: give one PATH with it")
    with _open_library(library_path, create=True) as library:
        added = add_checkpoints(library, list(paths), name=name, replace=replace, progress=_progress())
        doc = {
            "library": str(library.path),
            "added": [entry.to_dict() for entry in added],
            "size": len(library),
        }
    Output(fmt).document(doc, render_library_added)


@library_group.command("profile")
@click.argument("name")
@click.argument("source", required=False)
@behaviour_options("model")
@click.option("--replace", is_flag=True, help="Replace a profile of NAME recorded with the same settings.")
@library_option
@threads_option
@format_option
def library_profile_command(
    name: str,
    source: str | None,
    endpoint: str | None,
    model: str | None,
    behaviour: dict[str, Any],
    replace: bool,
    library_path: str | None,
    threads: int | None,
    fmt: str,
) -> None:
    """Record NAME's behavioural profile: SOURCE's answers to probe's prompts, kept in the library.

    SOURCE is a GGUF file or an endpoint as URL#MODEL (or --endpoint URL --model NAME). Then
    `unshell probe SUSPECT --against library:NAME` needs neither its weights nor its endpoint;
    record with the --prompts, --seed and --max-tokens the probes will use.

    \b
    Examples:
      unshell library profile smollm2 SmolLM2-135M-Instruct.Q4_1.gguf --max-tokens 16
      unshell library profile their-model --endpoint https://api.example.com/v1 --model m --budget 100
    """
    from ..behaviour.profiles import record_profile

    source = _served_source(source, endpoint, model, "source")
    progress = _probe_progress_for(fmt)
    with _open_library(library_path, create=True) as library:
        recorded = record_profile(
            source,
            name,
            library,
            model=model,
            threads=threads,
            replace=replace,
            progress=progress,
            **behaviour,
        )
    Output(fmt).document(recorded.to_dict(), render_profile_recorded)


@library_group.command("list")
@library_option
@format_option
def library_list_command(library_path: str | None, fmt: str) -> None:
    """Every fingerprint in the library, with its family, shape and tokenizer.

    \b
    Examples:
      unshell library list
      unshell library list --library known.sqlite --json
    """
    with _open_library(library_path) as library:
        doc = {"library": str(library.path), "entries": [entry.to_dict() for entry in library.list()]}
    Output(fmt).document(doc, render_library_list)


@library_group.command("show")
@click.argument("name")
@library_option
@format_option
def library_show_command(name: str, library_path: str | None, fmt: str) -> None:
    """One fingerprint: family, shape, tokenizer, source, and what it holds.

    \b
    Examples:
      unshell library show llama-2-7b
    """
    with _open_library(library_path) as library:
        doc = library.describe(name)
    Output(fmt).document(doc, render_library_show)


@library_group.command("remove")
@click.argument("names", nargs=-1, required=True)
@library_option
@format_option
def library_remove_command(names: tuple[str, ...], library_path: str | None, fmt: str) -> None:
    """Remove entries by name (all or none: an unknown name removes nothing).

    \b
    Examples:
      unshell library remove llama-2-7b qwen2.5-7b
    """
    with _open_library(library_path) as library:
        library.remove_many(list(names))
        doc = {"library": str(library.path), "removed": list(names), "size": len(library)}
    Output(fmt).document(
        doc, lambda d: f"removed {', '.join(d['removed'])}; {d['size']} left in {d['library']}\n"
    )


@library_group.command("export")
@click.argument("file", type=click.Path(path_type=str, dir_okay=False), callback=_writable_file)
@library_option
@format_option
def library_export_command(file: str, library_path: str | None, fmt: str) -> None:
    """Write the whole library to a portable, checksummed JSON-lines FILE.

    \b
    Examples:
      unshell library export known.jsonl
    """
    with _open_library(library_path) as library:
        count = library.export(file)
        doc = {"library": str(library.path), "file": file, "exported": count}
    Output(fmt).document(doc, lambda d: f"exported {d['exported']} fingerprints to {d['file']}\n")


@library_group.command("import")
@click.argument("file", type=click.Path(path_type=str, dir_okay=False))
@click.option("--replace", is_flag=True, help="Replace entries of the same name.")
@library_option
@format_option
def library_import_command(file: str, replace: bool, library_path: str | None, fmt: str) -> None:
    """Add every fingerprint of an exported FILE, all or nothing, after checking each one.

    \b
    Examples:
      unshell library import known.jsonl --library mine.sqlite
      unshell library import known.jsonl --replace
    """
    with _open_library(library_path, create=True) as library:
        count = library.import_(file, replace=replace)
        doc = {"library": str(library.path), "file": file, "imported": count, "size": len(library)}
    Output(fmt).document(
        doc, lambda d: f"imported {d['imported']} fingerprints; {d['size']} in {d['library']}\n"
    )


@cli.command("search")
@click.argument("path", required=False, type=click.Path(path_type=str))
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000), help="Candidates shown.")
@click.option(
    "--endpoint", help="Search for the model served here by its behaviour (the library's recorded profiles)."
)
@click.option("--model", help="The model name the --endpoint serves.")
@click.option(
    "--controls",
    "controls",
    multiple=True,
    help="With --endpoint: a model unrelated to the suspect (repeatable; GGUF, URL#MODEL or library:NAME).",
)
@click.option(
    "--prompts",
    default=48,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="With --endpoint: prompts asked.",
)
@click.option(
    "--max-tokens",
    default=16,
    show_default=True,
    type=click.IntRange(1, 512),
    help="With --endpoint: new tokens per answer (the profiles' setting).",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=str, file_okay=False),
    help="With --endpoint: where answers are kept. Default: ~/.cache/unshell/probe.",
)
@library_option
@threads_option
@format_option
@html_option
@revision_option("path")
def search_command(
    path: str | None,
    top: int,
    endpoint: str | None,
    model: str | None,
    controls: tuple[str, ...],
    prompts: int,
    max_tokens: int,
    cache_dir: str | None,
    library_path: str | None,
    fmt: str,
    html_path: str | None,
) -> None:
    """Which fingerprints in the library does PATH's weights come from?

    A cheap stage ranks the library by shared content hashes, architecture, width, vocabulary and
    tokenizer; the best candidates get the full lineage test against PATH's weights. p-values are
    Holm-adjusted over the whole library, so a bigger library needs stronger evidence.

    \b
    Examples:
      unshell search suspect/ --library known.sqlite
      unshell search suspect.gguf --top 10 --html search.html
      unshell search --endpoint https://api.example.com/v1 --model theirs --controls library:other
    """
    from ..library import search

    if endpoint is not None or (path is not None and path.startswith(("http://", "https://"))):
        _search_by_behaviour(
            path, endpoint, model, controls, prompts, max_tokens, cache_dir, library_path, fmt, html_path
        )
        return
    if path is None:
        raise click.UsageError("name the suspect: a checkpoint PATH, or --endpoint URL --model NAME")

    with _open_library(library_path) as library:
        result = search(path, library, top=top, progress=_progress())
    if html_path is not None:
        from ..report.html import search_html, write_html

        write_html(search_html(result), html_path)
        _report_written(html_path)
    Output(fmt).document(result.to_dict(), render_search)


def _search_by_behaviour(
    path: str | None,
    endpoint: str | None,
    model: str | None,
    controls: tuple[str, ...],
    prompts: int,
    max_tokens: int,
    cache_dir: str | None,
    library_path: str | None,
    fmt: str,
    html_path: str | None,
) -> None:
    """`search --endpoint`: `probe` against every profile in the library."""
    from ..behaviour.profiles import search_profiles
    from ..errors import UsageError

    if endpoint is not None and path is not None:
        raise UsageError("give either PATH or --endpoint, not both")
    if endpoint is not None and not model:
        raise UsageError("--endpoint needs --model (the name the endpoint serves the suspect as)")
    if not controls:
        raise UsageError(
            "searching by behaviour needs --controls: models known to be unrelated to the suspect"
        )
    progress = _probe_progress_for(fmt)
    result = search_profiles(
        endpoint or path or "",
        controls,
        library=library_path,
        max_tokens=max_tokens,
        model=model,
        prompts=prompts,
        cache_dir=cache_dir,
        progress=progress,
    )
    _probe_output(result.to_dict(), fmt, html_path)


@cli.command("scan")
@click.argument("roots", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--output",
    type=click.Path(path_type=str, dir_okay=False),
    callback=_writable_anywhere,
    help="JSON-lines file, one record per checkpoint; an existing one is resumed from.",
)
@library_option
@click.option(
    "--add/--no-add",
    "add_to_library",
    default=False,
    show_default=True,
    help="Add every fingerprint computed to the library.",
)
@click.option("--headers-only", is_flag=True, help="Read tensor tables only, no weights (no fingerprints).")
@click.option(
    "--engine",
    type=click.Choice(("local", "ray")),
    default="local",
    show_default=True,
    help="local: a process pool on this machine; ray: Ray tasks (the `ray` extra).",
)
@click.option("--address", help="A running Ray cluster (--engine ray); default: start a local one.")
@click.option(
    "--workers",
    type=click.IntRange(1, 4096),
    help="Processes (local) or CPUs (local Ray), each with one BLAS thread. Default: --threads.",
)
@threads_option
@click.option(
    "--max-depth", default=12, show_default=True, type=click.IntRange(0, 64), help="How deep to look."
)
@click.option(
    "--search",
    "search_path",
    type=click.Path(path_type=str, dir_okay=False),
    help="Fleet audit: also search every checkpoint against this library of known bases and audit it "
    "(declared lineage against detected); records get the best candidates, verdicts, Holm p-values "
    "and the audit level.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=str, dir_okay=False),
    callback=_writable_file,
    help="With --search: also write the fleet report, one self-contained HTML file (counts by level, "
    "the derived pairs with their evidence).",
)
@format_option
def scan_command(
    roots: tuple[str, ...],
    output: str | None,
    library_path: str | None,
    add_to_library: bool,
    headers_only: bool,
    engine: str,
    address: str | None,
    workers: int | None,
    max_depth: int,
    search_path: str | None,
    html_path: str | None,
    fmt: str,
) -> None:
    """Fingerprint every checkpoint under ROOTS, locally or on Ray; exit 1 if any failed.

    Finds safetensors, PyTorch, GGUF, ONNX and llama2.c checkpoints and Hugging Face model and
    hub-cache folders. A checkpoint that fails is recorded with its error and the scan goes on; a
    second scan with the same --output skips the checkpoints that did not change. With --search,
    a fleet audit: each checkpoint is also searched against that library and audited.

    \b
    Examples:
      unshell scan /models --output fleet.jsonl
      unshell scan /models --output fleet.jsonl --add --library fleet.sqlite
      unshell scan /models --output audit.jsonl --search known.sqlite --html fleet.html
      unshell scan /models --engine ray --address auto --output fleet.jsonl
      unshell scan /models --output fleet.jsonl --threads 8
    """
    from ..scanning import scan
    from ..threads import budget

    if (
        workers is not None
        and click.get_current_context().get_parameter_source("threads") is ParameterSource.COMMANDLINE
        and workers > budget()
    ):
        from ..errors import UsageError

        raise UsageError(f"--workers {workers} is more than --threads {budget()}: each worker needs a thread")
    library: Any = None
    if html_path is not None and search_path is None:
        from ..errors import UsageError

        raise UsageError("--html writes the fleet report: give --search LIBRARY with it")
    if add_to_library and headers_only:
        from ..errors import UsageError

        raise UsageError("--headers-only computes no fingerprints: nothing to --add")
    if add_to_library:
        library = _open_library(library_path, create=True)
    elif library_path is not None:
        from ..errors import UsageError

        raise UsageError("--library is where --add puts fingerprints: give --add with it")
    try:
        summary = scan(
            list(roots),
            library=library,
            engine=engine,
            address=address,
            output=output,
            fingerprints=not headers_only,
            workers=workers,
            progress=_progress(),
            max_depth=max_depth,
            search=search_path,
        )
    finally:
        if library is not None:
            library.close()
    doc = {**summary.to_dict(), "records": summary.records}
    if search_path is None:
        Output(fmt).document(doc, render_scan)
    else:
        from ..report.fleet import render_fleet, write_fleet_html

        if html_path is not None:
            write_fleet_html(doc, html_path)
            _report_written(html_path)
        Output(fmt).document(doc, render_fleet)
    if summary.exit_code:
        sys.exit(EXIT_FINDING)


def _wants_json(argv: list[str]) -> bool:
    """``--json`` or ``--format json`` among the options (read before parsing, so that a usage
    error is JSON too)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    pairs = itertools.pairwise(options)
    return "--json" in options or "--format=json" in options or ("--format", "json") in pairs


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every unshell error into one line and its exit code
    (with ``--format json``, ``{"error": ..., "exit_code": ...}`` on stdout)."""
    errors_out = Output("json" if _wants_json(sys.argv[1:] if argv is None else argv) else "table")
    try:
        cli.main(args=argv, prog_name="unshell", standalone_mode=False)
    except click.exceptions.Abort:
        if errors_out.format == "json":
            errors_out.error("aborted", EXIT_INTERRUPTED)
        else:
            click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        if errors_out.format == "json":
            errors_out.error(exc.format_message(), exc.exit_code)
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # MemoryError and OSError included: `errors.failure` maps them all
        shown = failure(exc)
        if shown.internal:  # a bug in unshell, not bad input: one line, and a way to see more
            if debug():
                raise
            message = f"{shown.message} (set UNSHELL_DEBUG=1 for a traceback; please report it)"
            if errors_out.format == "json":
                errors_out.error(message, shown.exit_code)
            else:
                click.echo(message, err=True)
        else:
            errors_out.error(shown.message, shown.exit_code)
        sys.exit(shown.exit_code)
    sys.exit(0)
