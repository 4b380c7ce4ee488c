"""Real llama.cpp servers for `unshell probe`'s acceptance tests, and derivatives to serve.

`LlamaServer` starts llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
on a free loopback port, waits until it answers, and stops it; it counts the completion requests
the server handled from its own access log, so a test can tell what was really sent.
`requantized_smollm2` re-quantizes the real SmolLM2-135M-Instruct Q4_1 GGUF with llama.cpp's own
quantizer (``llama_model_quantize``) and caches the result beside the fetched artifacts.
`finetuned_smollm2` is a real fine-tune of it (``tools/smollm2_finetune.py``, cached by recipe).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from artifacts import cache_root, fetch
from file_modules import file_module

START_TIMEOUT_S = 300
_ACCESS = re.compile(r'"POST /v1/(chat/)?completions HTTP/1\.[01]" 200')
_FINETUNE_TOOL = Path(__file__).resolve().parent.parent / "tools" / "smollm2_finetune.py"
# llama.cpp's file types (enum llama_ftype).
LLAMA_FTYPE = {"Q4_0": 2, "Q8_0": 7, "Q5_0": 8}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


class LlamaServer:
    def __init__(self, model: Path, name: str, log: Path, threads: int = 1) -> None:
        self.model = model
        self.name = name
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.spec = f"{self.url}#{name}"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            "--n_ctx",
            "512",
            "--verbose",
            "False",
        ]
        self._log_stream = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log_stream, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server for {self.name} exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/models", timeout=5) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama.cpp server for {self.name} did not answer in {START_TIMEOUT_S} s")

    def completions_served(self) -> int:
        """Completion requests this server answered (from its access log)."""
        self._log_stream.flush()
        return len(_ACCESS.findall(self.log.read_text(errors="replace")))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_stream.close()


def requantized_smollm2(quant: str = "Q8_0") -> Path:
    """SmolLM2-135M-Instruct re-quantized from its published Q4_1 by llama.cpp's quantizer."""
    import llama_cpp

    source = fetch("smollm2_gguf")
    # The fetched file sits in a folder named by its sha256.
    target = cache_root() / "derived" / f"smollm2-135m-instruct-{source.parent.name[:16]}.{quant}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE[quant]
    params.allow_requantize = True  # the source is already quantized (Q4_1)
    params.nthread = 2
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with {status}")
    partial.replace(target)
    return target


def finetuned_smollm2() -> Path:
    """SmolLM2-135M-Instruct with its last blocks briefly fine-tuned (``tools/smollm2_finetune.py``:
    about 33 CPU-seconds to build cold, then cached), as an F16 GGUF."""
    module = file_module(_FINETUNE_TOOL, "unshell_tools_smollm2_finetune")
    path: Path = module.load_or_build(fetch("smollm2_gguf")).path
    return path
