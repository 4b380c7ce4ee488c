"""``--threads`` and progress: one thread budget (`unshell.threads`) that really bounds BLAS and
unshell's pools, and progress (`unshell.progress`) that the CLI draws on stderr only on a terminal.

The progress tests run the real CLI as a subprocess with its stderr on a pseudo-terminal (the
`pty` module), or on a pipe, on the small real fixtures."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import unshell
from unshell.cli.main import main
from unshell.errors import UsageError
from unshell.progress import BYTES, reporting, stage, track
from unshell.threads import THREAD_ENVIRONMENT, available_cores, blas_ceiling, budget, limited, split

FIXTURES = Path(__file__).resolve().parent / "data" / "fixtures"
STORIES = FIXTURES / "stories260K.bin"
LLAMA2XS = FIXTURES / "llama2xs.model.bin"
SRC = Path(unshell.__file__).resolve().parent.parent


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


class Recorder:
    """A `ProgressReporter` that keeps every stage: label, total, unit, depth, amounts, notes."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def stage(self, label: str, total: float | None, unit: str, depth: int) -> Any:
        record: dict[str, Any] = {
            "label": label,
            "total": total,
            "unit": unit,
            "depth": depth,
            "done": 0.0,
            "closed": False,
            "status": [],
        }
        self.stages.append(record)

        class Shown:
            def advance(self, amount: float = 1) -> None:
                record["done"] += amount

            def status(self, text: str) -> None:
                record["status"].append(text)

            def close(self) -> None:
                record["closed"] = True

        return Shown()

    def labels(self) -> list[str]:
        return [s["label"] for s in self.stages]


def assert_complete(recorder: Recorder) -> None:
    """Every stage ended, each counted exactly its total."""
    assert recorder.stages
    for shown in recorder.stages:
        assert shown["closed"], shown
        assert shown["done"] == shown["total"], shown


# -- the thread budget ---------------------------------------------------------------------------


@pytest.fixture
def uncapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread cap in the environment (the suite sets OPENBLAS_NUM_THREADS=1: conftest.py)."""
    for name in THREAD_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def test_budget_defaults_to_the_cores_this_process_may_use(uncapped: None) -> None:
    assert available_cores() == len(os.sched_getaffinity(0))
    assert budget() == blas_ceiling() == available_cores()
    assert budget() == available_cores()
    with limited(3) as count:
        assert count == 3 and budget() == 3
        with limited(1):
            assert budget() == 1
        assert budget() == 3
    assert budget() == available_cores()


def test_an_environment_cap_holds_for_blas_not_for_workers(
    monkeypatch: pytest.MonkeyPatch, uncapped: None
) -> None:
    """OMP_NUM_THREADS=1 (as Ray gives its workers, or a cluster job) means one BLAS thread per
    process: the default still runs a worker per core, each with one BLAS thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1,1")
    assert budget() == available_cores() and blas_ceiling() == 1
    assert split(8) == (available_cores(), 1)
    with threadpool_limits(limits=2, user_api="blas"), limited(None) as count:
        assert count == available_cores() and blas_threads() == {1}
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert blas_ceiling() == available_cores()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    with limited(2):  # --threads says otherwise: it wins
        assert budget() == blas_ceiling() == 2 and blas_threads() == {2}


def test_split_never_oversubscribes() -> None:
    for total in (1, 2, 3, 8, 64):
        for tasks in (1, 2, 3, 5, 100):
            with limited(64):
                workers, per_worker = split(tasks, total)
            assert 1 <= workers <= min(tasks, total)
            assert workers * per_worker <= total
            assert per_worker == max(1, total // workers)


@pytest.mark.parametrize("count", [0, -1, 1025, True, 2.0, "4"])
def test_bad_thread_counts_are_refused(count: Any) -> None:
    with pytest.raises(UsageError, match="1 to 1024"), limited(count):
        pass


def test_limited_sets_blas_and_restores_it(uncapped: None) -> None:
    with threadpool_limits(limits=2, user_api="blas"):
        with limited(1):
            assert blas_threads() == {1}
        assert blas_threads() == {2}
        with limited(None):
            assert blas_threads() == {available_cores()}
        assert blas_threads() == {2}


@pytest.mark.parametrize("value", ["0", "1025", "abc", "-2", "1.5"])
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_threads_option_is_one_line_and_a_usage_error(
    value: str, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", str(STORIES), str(STORIES), "--threads", value] + (["--json"] if as_json else [])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == UsageError.exit_code == 2
    out, err = capsys.readouterr()
    if as_json:
        assert err == ""
        document = json.loads(out)
        assert "--threads" in document["error"] and document["exit_code"] == 2
    else:
        assert out == ""
        assert err.count("\n") == 1 and err.startswith("error: --threads must be a whole number")


def test_every_computing_command_takes_threads() -> None:
    from unshell.cli.main import cli

    commands = {
        "compare": cli.commands["compare"],
        "convert": cli.commands["convert"],
        "audit": cli.commands["audit"],
        "search": cli.commands["search"],
        "scan": cli.commands["scan"],
        "probe": cli.commands["probe"],
        "serve": cli.commands["serve"],
        "library add": cli.commands["library"].commands["add"],  # type: ignore[attr-defined]
    }
    for name, command in commands.items():
        option = next((p for p in command.params if p.name == "threads"), None)
        assert option is not None and option.help and "1 to 1024" in option.help, name


def test_threads_bound_blas_inside_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], uncapped: None
) -> None:
    """What BLAS runs with while the command works (seen from inside the library call), and that
    it is given back afterwards."""
    import unshell.lineage.compare as compare_module

    real_compare = compare_module.compare
    seen: list[set[int]] = []

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append(blas_threads())
        return real_compare(*args, **kwargs)

    monkeypatch.setattr(compare_module, "compare", observed)
    with threadpool_limits(limits=3, user_api="blas"):
        for extra in (["--threads", "1"], ["--threads", "2"], []):
            with pytest.raises(SystemExit) as exit_info:
                main(["compare", str(STORIES), str(STORIES), "--json", *extra])
            assert exit_info.value.code == 0
            assert json.loads(capsys.readouterr().out)["verdict"] == "identical"
            assert blas_threads() == {3}
    assert seen == [{1}, {2}, {available_cores()}]


def test_scan_refuses_more_workers_than_threads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", str(FIXTURES), "--headers-only", "--threads", "1", "--workers", "2"])
    assert exit_info.value.code == UsageError.exit_code
    assert (
        capsys.readouterr().err == "error: --workers 2 is more than --threads 1: each worker needs a thread\n"
    )


def test_web_jobs_share_the_budget(monkeypatch: pytest.MonkeyPatch, uncapped: None) -> None:
    """Each job's child process runs within its share: max_jobs x threads <= the budget, and BLAS
    within the environment's cap unless --threads said otherwise."""
    from unshell.web.jobs import JobManager, run_isolated

    def shares(max_jobs: int) -> tuple[int, int]:
        jobs = JobManager(max_jobs=max_jobs)
        try:
            return jobs.threads_per_job, jobs.blas_per_job
        finally:
            jobs.shutdown()

    with limited(4):
        assert shares(2) == (2, 2) and shares(3) == (1, 1) and shares(8) == (1, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert shares(1) == (available_cores(), 1)
    info = run_isolated(threadpool_info, timeout_s=120, threads=2, blas=1)
    assert {pool["num_threads"] for pool in info if pool["user_api"] == "blas"} == {1}
    info = run_isolated(threadpool_info, timeout_s=120, threads=2)
    assert {pool["num_threads"] for pool in info if pool["user_api"] == "blas"} == {2}


# -- progress in the library -----------------------------------------------------------------------


def test_without_a_reporter_track_hands_the_items_back() -> None:
    items = [1, 2, 3]
    assert track(items, "nothing") is items
    with stage("nothing", 3) as shown:
        shown.advance()  # a silent stage: no reporter, nothing happens


def test_stages_nest_and_stay_on_the_binding_thread() -> None:
    recorder = Recorder()
    from_other_thread: list[Any] = []
    with reporting(recorder), stage("outer", 2, "checkpoint") as outer:
        for _ in track(["a", "b"], "inner", unit=BYTES, size=lambda name: 10):
            pass
        # Work a pool runs on another thread is the pool's stage to count, not its own.
        worker = threading.Thread(target=lambda: from_other_thread.append(track([1], "lost")))
        worker.start()
        worker.join()
        outer.advance(2)
    assert from_other_thread == [[1]]
    assert [(s["label"], s["depth"], s["unit"], s["total"]) for s in recorder.stages] == [
        ("outer", 0, "checkpoint", 2),
        ("inner", 1, BYTES, 20),
    ]
    assert_complete(recorder)


def test_a_nested_call_reports_to_the_outer_reporter() -> None:
    """`reporting(None)` (a verb called without a reporter by another) keeps the caller's."""
    recorder = Recorder()
    with reporting(recorder), reporting(None):
        list(track([1, 2], "kept"))
    assert recorder.labels() == ["kept"]


def test_compare_reports_bytes_read_per_model() -> None:
    recorder = Recorder()
    result = unshell.compare(STORIES, STORIES, progress=recorder)
    assert result.verdict == "identical"
    assert recorder.labels() == ["hashing stories260K.bin", "hashing stories260K.bin"]
    assert {s["unit"] for s in recorder.stages} == {BYTES}
    from unshell.formats import open_checkpoint
    from unshell.lineage.compare import hashable_names

    with open_checkpoint(STORIES) as checkpoint:
        hashed = sum(checkpoint.info(name).nbytes for name in hashable_names(checkpoint))
    assert all(s["total"] == hashed for s in recorder.stages)
    assert_complete(recorder)


def test_library_add_search_and_audit_report_progress(tmp_path: Path) -> None:
    from unshell.library import Library, add_checkpoints, search

    recorder = Recorder()
    with Library(tmp_path / "known.sqlite") as library:
        add_checkpoints(library, [STORIES, LLAMA2XS], progress=recorder)
        assert recorder.stages[0]["label"] == "library add"
        assert recorder.stages[0]["unit"] == "checkpoint" and recorder.stages[0]["total"] == 2
        fingerprinted = [s for s in recorder.stages if s["label"].startswith("fingerprinting ")]
        assert [s["label"] for s in fingerprinted] == [
            "fingerprinting stories260K.bin",
            "fingerprinting llama2xs.model.bin",
        ]
        assert all(s["depth"] == 1 and s["unit"] == BYTES for s in fingerprinted)
        assert_complete(recorder)

        recorder = Recorder()
        found = search(STORIES, library, progress=recorder)
        assert found.candidates[0].verdict == "identical"
        tested = [s for s in recorder.stages if s["label"] == "testing candidates"]
        assert len(tested) == 1 and tested[0]["unit"] == "candidate" and tested[0]["total"] == found.tested
        assert "hashing stories260K.bin" in recorder.labels()
        assert_complete(recorder)

    recorder = Recorder()
    audited = unshell.audit(STORIES, against=STORIES, progress=recorder)
    assert audited.level
    assert recorder.labels()[:2] == ["hashing stories260K.bin", "hashing stories260K.bin"]
    assert_complete(recorder)


def test_scan_and_convert_report_progress(tmp_path: Path) -> None:
    recorder = Recorder()
    summary = unshell.scan([FIXTURES], fingerprints=False, workers=1, progress=recorder)
    assert [(s["label"], s["unit"], s["total"]) for s in recorder.stages] == [
        ("scan", "checkpoint", len(summary.records))
    ]
    assert recorder.stages[0]["status"][-1].endswith("skipped")
    assert_complete(recorder)

    recorder = Recorder()
    converted = unshell.convert(STORIES, output=tmp_path / "out", verify=False, progress=recorder)
    assert recorder.labels() == ["writing out"]
    assert recorder.stages[0]["unit"] == BYTES
    tensor_bytes = 0  # each shard: 8 bytes of header length, the JSON header, then the tensors
    for shard in converted.output.glob("*.safetensors"):
        header = int.from_bytes(shard.read_bytes()[:8], "little")
        tensor_bytes += shard.stat().st_size - 8 - header
    assert recorder.stages[0]["total"] == tensor_bytes > 0
    assert_complete(recorder)


# -- progress in the CLI: stderr on a terminal only -------------------------------------------------


def run_cli(args: list[str], *, terminal: bool) -> tuple[str, str, int]:
    """``unshell ARGS`` as a subprocess: (stdout, stderr, exit code), stderr on a pseudo-terminal
    (80 x 24, as a person's) or on a pipe."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "", "LINES": ""}
    env.pop("COLUMNS")
    env.pop("LINES")
    command = [sys.executable, "-m", "unshell", *args]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
        return done.stdout, done.stderr, done.returncode
    leader, follower = pty.openpty()
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, leader)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL, env=env
        )
        os.close(follower)
        chunks = list(_read_all(leader))
        stdout, _ = process.communicate(timeout=300)
    return stdout.decode(), b"".join(chunks).decode(errors="replace"), process.returncode


def _read_all(fd: int) -> Iterator[bytes]:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        yield chunk


COMPARE = ["compare", str(STORIES), str(STORIES)]


def test_progress_on_a_terminal_never_in_json_stdout() -> None:
    stdout, stderr, code = run_cli([*COMPARE, "--json"], terminal=True)
    assert code == 0
    assert json.loads(stdout)["verdict"] == "identical"  # stdout is the JSON document alone
    assert "hashing stories260K.bin" in stderr and "%|" in stderr and "B/" in stderr
    assert "\x1b" not in stdout and "\r" not in stdout


def test_no_progress_when_stderr_is_not_a_terminal() -> None:
    stdout, stderr, code = run_cli([*COMPARE, "--json"], terminal=False)
    assert code == 0
    assert json.loads(stdout)["verdict"] == "identical"
    assert stderr == ""


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_quiet_silences_progress_on_a_terminal(flag: str) -> None:
    stdout, stderr, code = run_cli([*COMPARE, flag], terminal=True)
    assert code == 0
    assert "identical" in stdout
    assert stderr == ""


# -- the same answer whatever the thread count ------------------------------------------------------


@pytest.mark.slow
def test_one_thread_and_the_default_give_the_same_verdicts(
    capsys: pytest.CaptureFixture[str], uncapped: None
) -> None:
    """On real pairs: a zoo derivative through a rotated residual stream (alignment SVDs, sketches)
    and two real llama2.c models trained independently. A matrix product's float32 rounding
    depends on how many threads split it, so scores and log10 p agree to rounding, not bit for bit."""
    from zoo_fixture import zoo

    pairs = {pair.name: pair for pair in zoo().derived}
    rotated = pairs["base-s0->finetune-rotated"]
    for a, b, expected in ((rotated.a, rotated.b, "derived"), (STORIES, LLAMA2XS, "independent")):
        documents = []
        for extra in (["--threads", "1"], []):
            with pytest.raises(SystemExit) as exit_info:
                main(["compare", str(a), str(b), "--json", *extra])
            assert exit_info.value.code == 0
            documents.append(json.loads(capsys.readouterr().out))
        one, default = documents
        assert one["verdict"] == default["verdict"] == expected
        assert one["p_value"] == pytest.approx(default["p_value"], rel=1e-6, abs=1e-300)
        assert one["log10_p_value"] == pytest.approx(default["log10_p_value"], rel=1e-5, abs=1e-9)
        assert one["score"] == pytest.approx(default["score"], abs=1e-5)
        assert one["how"] == default["how"]


# -- work side by side within the budget (`map_in_order`) ---------------------------------------------


def test_map_in_order_keeps_the_order_and_runs_side_by_side(uncapped: None) -> None:
    """Two tasks that each wait for the other can only finish on two threads at once; results come
    back in the items' order, ``done`` is told every index, and each task sees its share of the
    budget (one thread each), so a pool inside it cannot oversubscribe."""
    from unshell.threads import map_in_order

    meeting = threading.Barrier(2, timeout=20)
    seen: list[tuple[int, int, int]] = []

    def work(item: int) -> int:
        if item < 2:
            meeting.wait()  # raises BrokenBarrierError when the items run one after the other
        seen.append((item, budget(), threading.get_ident()))
        return item * item

    finished: list[int] = []
    with limited(2):
        assert map_in_order(work, range(6), done=finished.append) == [0, 1, 4, 9, 16, 25]
        assert budget() == 2
    assert sorted(finished) == list(range(6))
    assert {share for _, share, _ in seen} == {1}
    assert len({thread for item, _, thread in seen if item < 2}) == 2


def test_map_in_order_on_one_thread_runs_in_line_and_raises_the_tasks_error() -> None:
    from unshell.threads import map_in_order

    here = threading.get_ident()
    with limited(1):
        assert map_in_order(lambda item: (item, threading.get_ident()), [3, 1]) == [(3, here), (1, here)]

    def fails(item: int) -> int:
        if item == 1:
            raise UsageError("item one")
        return item

    for count in (1, 2):
        with limited(count), pytest.raises(UsageError, match="item one"):
            map_in_order(fails, range(4))


@pytest.mark.slow
def test_the_value_added_account_is_the_same_on_one_thread_and_two() -> None:
    """The account measures B's tensors side by side on the budget's workers: stories260K's LoRA and
    full fine-tune (tests/derivatives.py) give the same document, value by value, on one thread
    and on two, and the pass is reported as one stage of B's bytes."""
    from derivatives import stories_derivatives

    made = stories_derivatives()
    for name in ("lora", "finetune"):
        documents, recorders = [], []
        for count in (1, 2):
            recorder = Recorder()
            with limited(count):
                result = unshell.compare(STORIES, made[name], progress=recorder)
            assert result.value_added is not None
            documents.append(result.value_added.to_dict())
            recorders.append(recorder)
        assert documents[0] == documents[1]
        assert documents[0]["tensors"], name
        for recorder in recorders:
            measured = [s for s in recorder.stages if s["label"].startswith("measuring changes in ")]
            assert len(measured) == 1 and measured[0]["unit"] == BYTES
            assert_complete(recorder)


def test_map_in_order_takes_a_callers_worker_count_as_given(uncapped: None) -> None:
    """Search's explicit ``workers``: three workers on a budget of two still run three at once (each
    waits for the other two), in threads of the caller's name, with one BLAS thread each."""
    from unshell.threads import map_in_order

    meeting = threading.Barrier(3, timeout=20)
    seen: list[tuple[str, int]] = []

    def work(item: int) -> int:
        meeting.wait()
        seen.append((threading.current_thread().name, budget()))
        return -item

    with limited(2):
        assert map_in_order(work, range(3), workers=3, name="unshell-probe") == [0, -1, -2]
    assert len(seen) == 3
    assert all(name.startswith("unshell-probe") and share == 1 for name, share in seen)


# -- a tensor's hashes beside its sketches ------------------------------------------------------------


def _meeting_first_calls(
    monkeypatch: pytest.MonkeyPatch, *targets: tuple[Any, str], calls_each: int = 1
) -> list[int]:
    """Patch each ``(owner, name)`` so that its first ``calls_each`` calls wait for one another and
    for the other targets' (a barrier of them all, which breaks after 20 s when the calls run one
    after the other); returns the threads those calls ran on."""
    meeting = threading.Barrier(len(targets) * calls_each, timeout=20)
    threads: list[int] = []
    lock = threading.Lock()
    for owner, name in targets:
        real = getattr(owner, name)
        left = [calls_each]

        def patched(*args: Any, _real: Any = real, _left: list[int] = left, **kwargs: Any) -> Any:
            with lock:
                waits = _left[0] > 0
                _left[0] -= 1
            if waits:
                meeting.wait()
                with lock:
                    threads.append(threading.get_ident())
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, patched)
    return threads


def test_a_fingerprint_hashes_a_tensor_beside_its_sketch(
    monkeypatch: pytest.MonkeyPatch, uncapped: None
) -> None:
    """On two threads the fingerprint's hash and sketch jobs run at the same time, on two threads
    (the first call of each waits for the other's); on one thread the barrier would break."""
    from unshell.lineage import fingerprint as fingerprint_module
    from unshell.model import Model

    threads = _meeting_first_calls(
        monkeypatch, (Model, "tensor_hashes"), (fingerprint_module, "tensor_units")
    )
    with limited(2):
        fingerprint_module.fingerprint(STORIES)
    assert len(set(threads)) == 2


def test_sketches_run_side_by_side(monkeypatch: pytest.MonkeyPatch, uncapped: None) -> None:
    """`model_units` sketches two tensors at once on two threads (the first two calls meet)."""
    from unshell.lineage import compare as compare_module

    threads = _meeting_first_calls(monkeypatch, (compare_module, "tensor_unit_sets"), calls_each=2)
    with limited(2):
        result = unshell.compare(STORIES, LLAMA2XS)
    assert result.verdict == "independent"
    assert len(set(threads)) == 2


def test_a_fingerprint_is_the_same_on_one_thread_and_two(uncapped: None) -> None:
    """The fingerprint hashes each tensor beside its sketches when it has two threads: the same
    fingerprint, byte for byte, as one thread that does one after the other (real llama2.c models
    and a GGUF), and one progress stage of the model's bytes, advanced to the end."""
    from unshell.lineage.fingerprint import fingerprint

    for path in (STORIES, LLAMA2XS, FIXTURES / "llama-2-tiny-random.gguf"):
        prints, recorders = [], []
        for count in (1, 2):
            recorder = Recorder()
            with limited(count):
                prints.append(fingerprint(path, progress=recorder).to_bytes())
            recorders.append(recorder)
        assert prints[0] == prints[1]
        for recorder in recorders:
            (shown,) = [s for s in recorder.stages if s["label"] == f"fingerprinting {path.name}"]
            assert shown["unit"] == BYTES and shown["done"] == shown["total"] > 0


def test_decoded_tensors_are_hashed_side_by_side(monkeypatch: pytest.MonkeyPatch, uncapped: None) -> None:
    """A GGUF's tensors are decoded to be hashed, on one core each: on two threads two of them are
    hashed at once (the first two calls meet), and the hashes are those of one thread, in order."""
    from unshell.formats import open_checkpoint
    from unshell.lineage import hashes as hashes_module
    from unshell.lineage.compare import hashable_names
    from unshell.model import Model

    gguf = FIXTURES / "llama-2-tiny-random.gguf"
    with limited(1), open_checkpoint(gguf) as checkpoint:
        alone = Model.of(checkpoint).content_hashes(hashable_names(checkpoint))
    threads = _meeting_first_calls(monkeypatch, (hashes_module, "hash_tensor"), calls_each=2)
    with limited(2), open_checkpoint(gguf) as checkpoint:
        names = hashable_names(checkpoint)
        assert all(hashes_module.hashed_on_one_core(checkpoint, name) for name in names)
        side_by_side = Model.of(checkpoint).content_hashes(names)
    assert len(set(threads)) == 2
    assert side_by_side == alone


def test_compare_hashes_bf16_tensors_side_by_side(
    monkeypatch: pytest.MonkeyPatch, uncapped: None, tmp_path: Path
) -> None:
    """Without the multiset count (as `compare` hashes, `read_once`), a stored bf16 tensor's
    sha256 is the whole of its work: on two threads two of them are hashed at once (the first two
    calls meet), and the hashes are those of one thread, in order."""
    from unshell.formats import open_checkpoint
    from unshell.formats.safetensors import write_safetensors
    from unshell.lineage import hashes as hashes_module
    from unshell.lineage.compare import hashable_names, read_once
    from unshell.model import Model

    def hashed(checkpoint: Any) -> Any:  # the hash jobs of compare's pass, without sketches
        model = Model.of(checkpoint)
        return read_once(model, model.canonical, [], 0)[0]

    with open_checkpoint(STORIES) as source:
        tensors = {name: source.read(name) for name in source.tensors}
    copy = tmp_path / "model.safetensors"
    write_safetensors(copy, tensors, dtypes=dict.fromkeys(tensors, "BF16"))
    with limited(1), open_checkpoint(copy) as checkpoint:
        names = hashable_names(checkpoint)
        assert not any(hashes_module.hashed_on_one_core(checkpoint, name) for name in names)
        alone = hashed(checkpoint)
    threads = _meeting_first_calls(monkeypatch, (hashes_module, "hash_tensor"), calls_each=2)
    with limited(2), open_checkpoint(copy) as checkpoint:
        side_by_side = hashed(checkpoint)
    assert len(set(threads)) == 2
    assert side_by_side == alone
