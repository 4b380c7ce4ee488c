"""What a request may carry: the JSON API's bodies (validated by pydantic) and the pages' forms
(bounded, decoded and checked here)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote, unquote

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from .guard import MAX_BODY_BYTES
from .paths import MAX_PATH_CHARS
from .problems import WebError

PathText = Annotated[str, Field(max_length=MAX_PATH_CHARS + 1)]
FORM_FIELDS = 16  # a form has a handful of fields; parse_qs stops past this many
TRUE_VALUES = ("on", "1", "true")
# "compare as A" and "as B" (Files, Inspect) are remembered in the browser, one cookie each, so
# that picking B after A keeps A. A path too long for a cookie is simply not remembered.
PICK_COOKIES = {"a": "unshell-compare-a", "b": "unshell-compare-b"}
PICK_COOKIE_CHARS = 3000


class PathRef(BaseModel):
    """A path relative to root ``root`` (an index into ``GET /api/roots``)."""

    model_config = ConfigDict(extra="forbid")
    root: int = Field(0, ge=0, description="index of the served root")
    path: PathText = Field(..., description="path relative to that root ('' for the root itself)")


PathArg = Annotated[
    PathRef | PathText,
    Field(
        description="a path under a served root: {root, path}, or a string relative to root 0, or an "
        "absolute path inside a root"
    ),
]


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    tensors: bool = Field(False, description="include every tensor's role and reference name")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: PathArg
    b: PathArg
    quick: bool = Field(False, description="as `unshell compare --quick`")


class AuditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    against: PathArg | None = Field(None, description="a base model to test the weights against")
    quick: bool = Field(False, description="compare weights as `compare --quick` does")
    library: bool = Field(
        False, description="without `against`: search the served fingerprint library for the weights' source"
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: PathArg
    top: int = Field(5, ge=1, le=100, description="candidates returned, as `unshell search --top`")


async def read_form(request: Request) -> dict[str, str]:
    """A page's form post: URL-encoded, at most `guard.MAX_BODY_BYTES` (however it is sent)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise WebError("send the form as application/x-www-form-urlencoded", 415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise WebError(f"request body over {MAX_BODY_BYTES} bytes", 413)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise WebError("the form could not be decoded", 400) from None
    return {key: values[-1] for key, values in fields.items()}


def checked(form: dict[str, str], name: str) -> bool:
    """A checkbox: ticked when the form carries it as on/1/true."""
    return form.get(name) in TRUE_VALUES


def top_count(form: dict[str, str]) -> int:
    """The search form's ``top``: a whole number, clamped to 1..100 (5 when left empty)."""
    try:
        return min(max(int(form.get("top", "5") or 5), 1), 100)
    except ValueError:
        raise WebError("top: give a whole number", 400) from None


def compare_picks(request: Request, **given: str) -> dict[str, str]:
    """The compare form's A and B: as ``given`` (the query), else as last picked."""
    return {
        side: given.get(side) or unquote(request.cookies.get(cookie, ""))[:MAX_PATH_CHARS]
        for side, cookie in PICK_COOKIES.items()
    }


def remember_picks(response: Response, **given: str) -> None:
    """Remember the A and B ``given`` (the non-empty ones) for the next page."""
    for side, cookie in PICK_COOKIES.items():
        value = quote(given.get(side) or "", safe="")
        if value and len(value) <= PICK_COOKIE_CHARS:
            response.set_cookie(cookie, value, path="/", httponly=True, samesite="strict")
