"""Where responses come from: an OpenAI-compatible endpoint, or a local GGUF run by llama.cpp.

Both give the same thing for a prompt: the greedy continuation's text and, where the backend can
say, the top log-probabilities of its first token. A local GGUF goes through
llama-cpp-python's ``create_completion``, the same call its server makes, so a file probed
locally and the same file served answer alike (the local backend applies the sampling defaults
the server applies to a request that names only the OpenAI fields).

Endpoints: ``/v1/completions`` with ``logprobs`` first; a server without it (404/405) is asked
``/v1/chat/completions`` instead, text only. The API key comes from an environment variable and
appears in no message, log or cache entry.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import (
    EndpointError,
    MissingDependencyError,
    PathNotFoundError,
    UnsupportedFormatError,
    UsageError,
)
from ..threads import budget

COMPLETION = "completion"
CHAT = "chat"
TOP_LOGPROBS = 5
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT_S = 60.0  # per request, before a retry
# What llama-cpp-python's server applies when a request gives only the OpenAI fields (its
# CreateCompletionRequest defaults); the local backend copies it so both paths agree.
SERVER_REPEAT_PENALTY = 1.1


@dataclass(frozen=True)
class Reply:
    """One response: the continuation, the first token's top log-probabilities (empty when the
    backend gives none), and the tokens it cost."""

    text: str
    first_top_logprobs: dict[str, float] = field(default_factory=dict)
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "first_top_logprobs": self.first_top_logprobs, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        return cls(
            str(data.get("text", "")), dict(data.get("first_top_logprobs") or {}), int(data.get("tokens", 0))
        )


class Backend(Protocol):
    label: str
    identity: str  # what the response cache keys on

    def complete(self, prompt: str, max_tokens: int, mode: str) -> Reply: ...

    def supports(self, mode: str) -> bool: ...

    def close(self) -> None: ...


def _reply_from_choice(body: dict[str, Any], mode: str) -> Reply:
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] if mode == CHAT else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError("the endpoint's response has no choices[0] text") from None
    top: dict[str, float] = {}
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    if mode == COMPLETION and isinstance(logprobs, dict):
        positions = logprobs.get("top_logprobs") or []
        if positions and isinstance(positions[0], dict):
            top = {str(k): float(v) for k, v in positions[0].items()}
    usage = body.get("usage") or {}
    tokens = int(usage.get("total_tokens") or 0) if isinstance(usage, dict) else 0
    return Reply(str(text or ""), top, tokens)


class EndpointBackend:
    """An OpenAI-compatible server. ``url`` is its root or its ``/v1``."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 4,
        backoff_s: float = 0.5,
        rate_per_s: float | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EndpointError(f"not an http(s) endpoint URL: {url}")
        root = url.rstrip("/")
        self.base = root if root.endswith("/v1") else root + "/v1"
        self.model = model
        self.label = f"{model} @ {self.base}"
        self.identity = f"endpoint:{self.base}#{model}"
        self._api_key = os.environ.get(api_key_env) or None
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._interval_s = 1.0 / rate_per_s if rate_per_s else 0.0
        self._last_request = 0.0
        self._no_completions = False

    def supports(self, mode: str) -> bool:
        return not (mode == COMPLETION and self._no_completions)

    def close(self) -> None:
        pass

    def complete(self, prompt: str, max_tokens: int, mode: str) -> Reply:
        if mode == COMPLETION:
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "logprobs": TOP_LOGPROBS,
                "seed": 0,
            }
            try:
                return _reply_from_choice(self._post("/completions", body), COMPLETION)
            except _NotServed:
                self._no_completions = True
                raise ModeUnavailableError(f"{self.base} does not serve /v1/completions") from None
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": 0,
        }
        try:
            return _reply_from_choice(self._post("/chat/completions", body), CHAT)
        except _NotServed:
            raise EndpointError(
                f"{self.base} serves neither /v1/completions nor /v1/chat/completions"
            ) from None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last = "no attempt"
        for attempt in range(self._retries + 1):
            self._pace()
            request = urllib.request.Request(self.base + path, data=data, headers=headers, method="POST")
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    raw = response.read()
                try:
                    parsed = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise EndpointError(f"{self.base}{path} answered something that is not JSON") from None
                if not isinstance(parsed, dict):
                    raise EndpointError(f"{self.base}{path} answered JSON that is not an object")
                return parsed
            except urllib.error.HTTPError as error:
                if error.code in (404, 405):
                    raise _NotServed() from None
                if error.code not in (408, 409, 425, 429) and error.code < 500:
                    raise EndpointError(f"{self.base}{path} refused the request: HTTP {error.code}") from None
                last = f"HTTP {error.code}"
                header = error.headers.get("Retry-After") if error.headers else None
                if header and header.strip().isdigit():
                    retry_after = float(header.strip())
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                last = str(reason) or type(error).__name__
            if attempt < self._retries:
                delay = retry_after if retry_after is not None else self._backoff_s * 2**attempt
                time.sleep(delay * (1.0 + 0.1 * random.random()))
        raise EndpointError(f"endpoint {self.base} unreachable after {self._retries + 1} tries: {last}")

    def _pace(self) -> None:
        """At most ``rate_per_s`` requests a second."""
        wait = self._last_request + self._interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()


class _NotServed(Exception):
    """The server has no such route (404/405)."""


class ModeUnavailableError(EndpointError):
    """The endpoint has no ``/v1/completions``: the probe asks every model in chat mode instead."""


class LlamaCppBackend:
    """A local GGUF file, run on CPU by llama-cpp-python (the `probe` extra)."""

    def __init__(self, path: str | Path, *, threads: int | None = None, context: int = 512) -> None:
        file = Path(path)
        if not file.exists():
            raise PathNotFoundError(f"no such file: {file}")
        if file.is_dir() or file.suffix.lower() != ".gguf":
            raise UnsupportedFormatError(
                f"{file}: probe runs local checkpoints as GGUF files through llama.cpp; "
                "serve other formats behind an OpenAI-compatible endpoint and pass its URL"
            )
        try:
            from llama_cpp import Llama
        except ImportError:
            raise MissingDependencyError(
                "probing a local GGUF needs llama-cpp-python: pip install 'unshell[probe]'"
            ) from None
        stat = file.stat()
        self.label = file.name
        self.identity = f"gguf:{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        workers = threads or min(2, budget())
        self._llama = Llama(
            model_path=str(file),
            n_ctx=context,
            n_threads=workers,
            n_threads_batch=workers,  # llama.cpp's default is every core, even when told fewer
            logits_all=True,
            verbose=False,
            seed=0,
        )

    def supports(self, mode: str) -> bool:
        return True

    def close(self) -> None:
        close = getattr(self._llama, "close", None)
        if close is not None:
            close()

    def complete(self, prompt: str, max_tokens: int, mode: str) -> Reply:
        if mode == CHAT:
            chat = self._llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0.0,
                repeat_penalty=SERVER_REPEAT_PENALTY,
                seed=0,
            )
            return _reply_from_choice(dict(chat), CHAT)  # type: ignore[arg-type]
        body = self._llama.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            logprobs=TOP_LOGPROBS,
            repeat_penalty=SERVER_REPEAT_PENALTY,
            seed=0,
        )
        return _reply_from_choice(dict(body), COMPLETION)  # type: ignore[arg-type]


# llama.cpp's repeat penalty looks back this many tokens (its penalty_last_n default).
SERVER_REPEAT_LAST_N = 64


class TransformersBackend:
    """A local Hugging Face checkpoint folder, run on CPU by transformers (the `transformers`
    extra): greedy, float32, never ``trust_remote_code``. Decodes as llama.cpp's server does for
    a request naming only the OpenAI fields (repeat penalty 1.1 over the last 64 generated tokens;
    the first token's top log-probabilities from the raw logits), so a model answers alike both ways."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise UnsupportedFormatError(
                f"{folder}: probe runs a folder as a Hugging Face checkpoint (config.json and weights); "
                "give a GGUF file or serve the model behind an OpenAI-compatible endpoint"
            )
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingDependencyError(
                "probing a Hugging Face checkpoint needs transformers and torch: pip install 'unshell[transformers]'"
            ) from None
        self._torch = torch
        torch.set_num_threads(threads or min(2, budget()))
        files = sorted(p for p in folder.iterdir() if p.is_file())
        stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        self.label = folder.name
        self.identity = f"hf:{folder.resolve()}:{stamp}"
        self._tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=False, local_files_only=True
        )
        self._model = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=False, local_files_only=True, dtype=torch.float32
        )
        self._model.eval()

    def supports(self, mode: str) -> bool:
        return mode == COMPLETION or bool(getattr(self._tokenizer, "chat_template", None))

    def close(self) -> None:
        pass

    def complete(self, prompt: str, max_tokens: int, mode: str) -> Reply:
        torch = self._torch
        if mode == CHAT:
            if not self.supports(CHAT):
                raise EndpointError(f"{self.label} has no chat template: it cannot answer in chat mode")
            ids = list(
                self._tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
                )
            )
        else:
            ids = list(self._tokenizer(prompt)["input_ids"])
        prompt_length = len(ids)
        stop = self._tokenizer.eos_token_id
        first_top: dict[str, float] = {}
        generated: list[int] = []
        past = None
        feed = torch.tensor([ids])
        with torch.no_grad():
            for step in range(max_tokens):
                out = self._model(input_ids=feed, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].double()
                if step == 0 and mode == COMPLETION:
                    logprobs = torch.log_softmax(logits, -1)
                    values, indices = torch.topk(logprobs, TOP_LOGPROBS)
                    first_top = {
                        str(self._tokenizer.decode([int(i)])): float(v)
                        for v, i in zip(values, indices, strict=True)
                    }
                # llama.cpp's penalty sampler sees only the tokens it accepted, not the prompt.
                for token in set(generated[-SERVER_REPEAT_LAST_N:]):
                    value = logits[token]
                    logits[token] = (
                        value / SERVER_REPEAT_PENALTY if value > 0 else value * SERVER_REPEAT_PENALTY
                    )
                token = int(torch.argmax(logits))
                if token == stop:
                    break
                generated.append(token)
                ids.append(token)
                feed = torch.tensor([[token]])
        text = str(self._tokenizer.decode(generated))
        return Reply(text, first_top if mode == COMPLETION else {}, prompt_length + len(generated))


LIBRARY_PREFIX = "library:"


class ProfileBackend:
    """A model's answers recorded in the fingerprint library (`unshell library profile`): a
    candidate or control without weights or endpoint. Sends nothing, costs nothing."""

    offline = True

    def __init__(self, name: str, library: str | Path | None, prompt_set: str) -> None:
        from ..library import existing_library
        from ..library.profiles import profiles_of

        with existing_library(library) as opened:
            self._profiles = {
                (p.max_tokens, p.mode): p for p in profiles_of(opened, name) if p.prompt_set == prompt_set
            }
            where = str(opened.path)
        if not self._profiles:
            raise UsageError(
                f"the library {where} holds no {prompt_set} profile of {name!r}: "
                f"record one with `unshell library profile {name} MODEL`"
            )
        self.name = name
        self.prompt_set = prompt_set
        self.label = f"library:{name}"
        self.identity = f"library:{where}#{name}"

    def supports(self, mode: str) -> bool:
        return any(m == mode for _, m in self._profiles)

    def close(self) -> None:
        pass

    def complete(self, prompt: str, max_tokens: int, mode: str) -> Reply:
        profile = self._profiles.get((max_tokens, mode))
        if profile is None:
            if mode == COMPLETION and self.supports(CHAT) and not self.supports(COMPLETION):
                raise ModeUnavailableError(f"{self.label} was profiled in chat mode only")
            held = ", ".join(f"{m} at {t} tokens" for t, m in sorted(self._profiles))
            raise UsageError(
                f"{self.label} has no profile in {mode} mode at {max_tokens} tokens (it holds {held}): "
                "probe with the profile's --max-tokens, or record another"
            )
        answer = profile.answers.get(prompt)
        if answer is None:
            raise UsageError(
                f"{self.label}'s profile lacks a prompt this probe asks ({len(profile.answers)} held): "
                "probe with the --prompts and --seed it was recorded with, or record more"
            )
        return Reply.from_dict(answer)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``URL#MODEL`` names an endpoint (the fragment is never sent); anything else is a path."""
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return url, model or None
    return spec, None


def open_backend(
    spec: str,
    *,
    model: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    rate_per_s: float | None = None,
    threads: int | None = None,
    library: str | Path | None = None,
    prompt_set: str = "general-v1",
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Backend:
    """``spec``: a GGUF path, ``URL#MODEL`` (or a URL with ``model``), or ``library:NAME`` (a
    profile in the fingerprint library at ``library``, recorded for ``prompt_set``)."""
    if spec.startswith(LIBRARY_PREFIX):
        return ProfileBackend(spec.removeprefix(LIBRARY_PREFIX), library, prompt_set)
    target, named = parse_spec(spec)
    if target.startswith(("http://", "https://")):
        name = model or named
        if not name:
            raise EndpointError(f"{target}: name the served model (URL#MODEL, or --model for the suspect)")
        return EndpointBackend(
            target, name, api_key_env=api_key_env, rate_per_s=rate_per_s, timeout_s=timeout_s
        )
    if Path(target).is_dir():
        return TransformersBackend(target, threads=threads)
    return LlamaCppBackend(target, threads=threads)
