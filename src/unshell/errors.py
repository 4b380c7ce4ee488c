"""Every exception unshell raises on purpose.

Each class carries the process exit code the CLI uses for it, so that scripts can tell
"this is not a checkpoint" from "this checkpoint is corrupt" from "this pickle wanted to run code"
without parsing messages. The codes are part of the public interface (documented in the README).

All classes keep their message in ``args[0]`` only, so they pickle cleanly across process pools
and Ray workers.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnshellError(Exception):
    """Base class. ``exit_code`` is what ``unshell`` exits with when this reaches the CLI."""

    exit_code: int = 1


# --- problems with the input -------------------------------------------------------------------


class InputError(UnshellError, ValueError):
    """The input cannot be used. Subclasses say why."""

    exit_code = 10


class PathNotFoundError(InputError, FileNotFoundError):
    """The path does not exist or cannot be read."""

    exit_code = 11


class NotACheckpointError(InputError):
    """The path exists but holds nothing unshell recognizes as model weights."""

    exit_code = 12


class UnsupportedFormatError(InputError):
    """A known container, but a variant or feature unshell does not read (say so, never guess)."""

    exit_code = 13


class CorruptCheckpointError(InputError):
    """Truncated or corrupt file: it ends early, or its bytes do not parse."""

    exit_code = 14


class InconsistentHeaderError(CorruptCheckpointError):
    """The header lies: offsets out of range or overlapping, dtype/shape/size mismatch, and so on."""

    exit_code = 15


class UnsafePickleError(InputError):
    """A pickle asked for something outside the allow-list (it might have run code if loaded normally)."""

    exit_code = 16


class ResourceLimitError(InputError):
    """The input asks for more than a safety bound allows (a header of gigabytes, a million dims)."""

    exit_code = 17


class StaleFingerprintError(InputError):
    """A fingerprint, or a library holding one, of an older fingerprint format that this unshell no
    longer compares with (its evidence is weaker than `compare`'s): re-fingerprint the checkpoint."""

    exit_code = 23


class TensorNotFoundError(UnshellError, KeyError):
    """A tensor name that the checkpoint does not hold."""

    exit_code = 18

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --- problems with the environment -------------------------------------------------------------


class OutputWriteError(UnshellError):
    """Writing the output failed: a full disk, a file-size limit (``ulimit -f``), a read-only or
    vanished file system. The message names the output path; nothing was committed.

    19 is the code of every operating-system I/O error: the CLI exits 19 for an unexpected
    ``OSError`` on the input side too."""

    exit_code = 19


class MissingDependencyError(UnshellError, ImportError):
    """An optional extra is needed for this input (the message names the pip extra)."""

    exit_code = 20


class AddressUnavailableError(UnshellError):
    """``serve`` cannot listen on the host and port asked for (in use, not this machine's, a
    privileged port): nothing was started."""

    exit_code = 22


# --- problems with what was asked --------------------------------------------------------------


class UsageError(UnshellError):
    """Arguments that cannot work together."""

    exit_code = 2


# --- conversion ---------------------------------------------------------------------------------


class ConversionRefusedError(UnshellError):
    """The checkpoint is not exactly the target architecture (ALiBi, LayerNorm, partial rotary,
    parallel attention, GeGLU...): the message says why, and nothing was written."""

    exit_code = 30


class OutputExistsError(UnshellError):
    """The output path exists and is not empty (``--force`` replaces it)."""

    exit_code = 31


class AmbiguousRolesError(ConversionRefusedError):
    """Tensors whose roles neither names nor shapes decide (k vs v, gate vs up, the two norms):
    the message lists them; a ``--mapping`` file resolves them. Never guessed."""

    exit_code = 32


class VerificationFailedError(UnshellError):
    """The converted checkpoint's logits differ from the source's beyond the tolerance; nothing
    was written."""

    exit_code = 33


# --- probe (black-box provenance) ---------------------------------------------------------------


class EndpointError(UnshellError):
    """`probe`: an endpoint is unreachable after the retries, refuses the request, or answers
    something that is not an OpenAI-compatible response (the API key never appears in the message)."""

    exit_code = 40


class BudgetExhaustedError(UnshellError):
    """`probe`: the query budget was spent before enough prompts were answered to decide; the
    answers so far are in the response cache, so a rerun with a larger budget resumes."""

    exit_code = 41


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        UnshellError,
        InputError,
        PathNotFoundError,
        NotACheckpointError,
        UnsupportedFormatError,
        CorruptCheckpointError,
        InconsistentHeaderError,
        UnsafePickleError,
        ResourceLimitError,
        StaleFingerprintError,
        TensorNotFoundError,
        OutputWriteError,
        MissingDependencyError,
        AddressUnavailableError,
        UsageError,
        ConversionRefusedError,
        OutputExistsError,
        AmbiguousRolesError,
        VerificationFailedError,
        EndpointError,
        BudgetExhaustedError,
    )
}


# -- one mapping from any exception to what the user sees --------------------------------------------

EXIT_FINDING = 1
"""`audit --fail-on`: the audit ran and found something that severe; `scan`: some checkpoints failed."""
EXIT_IO_ERROR = 19
EXIT_OUT_OF_MEMORY = 21
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Failure:
    """What the CLI, a web job and a scan record say about one exception."""

    exit_code: int
    message: str
    error_type: str

    @property
    def internal(self) -> bool:
        """A bug in unshell, not bad input."""
        return self.exit_code == EXIT_INTERNAL


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def failure(exc: BaseException) -> Failure:
    """Map any exception to (exit code, one line): the one mapping the CLI, `serve`'s jobs and
    `scan`'s records share. An OSError names the path it concerns, so an output that cannot be
    written is not reported as an unreadable input."""
    kind = type(exc).__name__
    if isinstance(exc, UnshellError):
        return Failure(exc.exit_code, one_line(exc), kind)
    if isinstance(exc, MemoryError):
        return Failure(EXIT_OUT_OF_MEMORY, "out of memory while reading the input", kind)
    if isinstance(exc, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "aborted", kind)
    if isinstance(exc, PermissionError) and exc.filename:  # an input that may not be read
        reason = (exc.strerror or "permission denied").lower()
        return Failure(PathNotFoundError.exit_code, f"{exc.filename}: {reason}", kind)
    if isinstance(exc, OSError):
        reason = exc.strerror or one_line(exc)
        where = f": {exc.filename}" if exc.filename else ""
        return Failure(EXIT_IO_ERROR, f"I/O error: {reason}{where}", kind)
    return Failure(EXIT_INTERNAL, f"internal error: {kind}: {one_line(exc)}", kind)
