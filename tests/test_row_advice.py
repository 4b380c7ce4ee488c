"""`Checkpoint.rows_apart`: while far-apart rows are read (`compare --quick`'s every 20th row,
a sketch's sample, the probes' leading rows), the kernel is told to read exactly those rows'
pages, all at once, and the tensor's readahead is back once they are read. Advice changes no
value; the spans asked for are page-aligned, stay inside the tensor's pages, cover every chosen
row and no other row's pages beyond the pages they share. On real files."""

from __future__ import annotations

import contextlib
import itertools
import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unshell.formats import open_checkpoint
from unshell.formats.base import Checkpoint


class RecordingMap:
    """The file's map, with every ``madvise`` call kept (mmap's own method cannot be patched)."""

    def __init__(self, mapped: mmap.mmap) -> None:
        self.mapped = mapped
        self.calls: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self.mapped)

    def madvise(self, option: int, start: int, length: int) -> None:
        self.calls.append((option, start, length))
        self.mapped.madvise(option, start, length)


def _advised(checkpoint: Checkpoint, name: str, rows: Any, monkeypatch: pytest.MonkeyPatch) -> RecordingMap:
    info = checkpoint.info(name)
    recording = RecordingMap(checkpoint._map(info.file))
    with monkeypatch.context() as patched:
        patched.setattr(checkpoint, "_map", lambda path: recording)
        with checkpoint.rows_apart(info, rows):
            recording.calls.append((-1, 0, 0))  # the rows are read here
    return recording


def _pages(first: int, length: int, page: int) -> range:
    return range(first // page, -(-(first + length) // page))


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        ("stories260K.bin", "layers.0.feed_forward.w1.weight"),  # llama2.c float32, 768 x 64
        ("llama-2-tiny-random.gguf", "token_embd.weight"),  # GGUF
    ],
)
def test_advice_covers_the_chosen_rows_pages_only(
    fixtures_dir: Path, fixture: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = mmap.PAGESIZE
    with open_checkpoint(fixtures_dir / fixture) as checkpoint:
        info = checkpoint.info(name)
        size = checkpoint.row_bytes(info)
        assert size is not None
        rows = info.shape[0]
        for chosen in (slice(None, None, 20), np.array([0, 5, rows // 2, rows - 1])):
            recording = _advised(checkpoint, name, chosen, monkeypatch)
            random = [call for call in recording.calls if call[0] == mmap.MADV_RANDOM]
            spans = [
                (start, start + length)
                for option, start, length in recording.calls[: recording.calls.index((-1, 0, 0))]
                if option == mmap.MADV_WILLNEED
            ]
            assert len(random) == 1 and random[0][1] <= info.offset < random[0][1] + random[0][2]
            # readahead is back, over the very span it was turned off for, once the rows are read
            assert recording.calls[-2:] == [(-1, 0, 0), (mmap.MADV_NORMAL, *random[0][1:])]
            ids = np.arange(rows)[chosen] if isinstance(chosen, slice) else chosen
            assert spans and len(spans) <= len(ids)
            first_page = info.offset - info.offset % page
            for start, end in spans:
                assert start % page == 0 and start >= first_page and end <= len(recording)
            for (_, end), (next_start, _) in itertools.pairwise(spans):
                assert next_start > end  # merged where they touch
            for row in ids.tolist():  # every chosen row's bytes lie in one span
                low, high = info.offset + row * size, info.offset + (row + 1) * size
                assert any(start <= low and high <= end for start, end in spans), row
            # no span reaches a page holding none of the chosen rows
            wanted = {p for row in ids.tolist() for p in _pages(info.offset + row * size, size, page)}
            asked = {p for start, end in spans for p in _pages(start, end - start, page)}
            assert asked == wanted
            values = checkpoint.read_rows(name, chosen)
            np.testing.assert_array_equal(values, np.asarray(checkpoint.read(name))[chosen])


def test_a_tensor_whose_rows_do_not_decode_alone_gets_no_row_advice(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A norm gain (one row): only readahead is turned off, and back on after; nothing is asked for."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as checkpoint:
        name = next(n for n in checkpoint.tensors if len(checkpoint.info(n).shape) == 1)
        assert checkpoint.row_bytes(checkpoint.info(name)) is None
        recording = _advised(checkpoint, name, np.array([0]), monkeypatch)
        assert [call[0] for call in recording.calls] == [mmap.MADV_RANDOM, -1, mmap.MADV_NORMAL]


def test_readahead_is_back_after_a_comparison_reads_every_nth_row(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift and `--quick` read every n-th row of a matrix (`compare.read_rows`); a pass over
    the whole matrix comes after (the value-added account). Readahead left off made that pass fault
    its pages in one at a time: from the disk, 3.7 s against 0.17 s for a 262 MB embedding
    (RESULTS.md, session 15). The rows are read inside `Checkpoint.rows_apart`, which has turned
    readahead back on (the test above) before `read_rows` returns."""
    from unshell.lineage.compare import read_rows
    from unshell.model import Model

    events: list[str] = []
    real_apart = Checkpoint.rows_apart

    @contextlib.contextmanager
    def apart(self: Checkpoint, info: Any, rows: Any) -> Iterator[None]:
        events.append("advised")
        with real_apart(self, info, rows):
            yield
        events.append("readahead back")

    with open_checkpoint(fixtures_dir / "stories260K.bin") as checkpoint:
        model = Model.of(checkpoint).canonical
        name = "layers.0.feed_forward.w1.weight"  # 768 x 64 float32
        real_read = checkpoint.read_rows
        monkeypatch.setattr(Checkpoint, "rows_apart", apart)
        monkeypatch.setattr(checkpoint, "read_rows", lambda *args: events.append("read") or real_read(*args))
        monkeypatch.setattr(
            "unshell.lineage.compare.SPARSE_ROWS_GAP", 0
        )  # rows this small count as far apart
        values = read_rows(model, name, 20)
        assert events == ["advised", "read", "readahead back"]
        np.testing.assert_array_equal(values, np.asarray(checkpoint.read(name), dtype=np.float32)[::20])


def test_a_few_leading_rows_of_a_tall_tensor_are_advised_without_an_index_of_every_row(
    tmp_path: Path,
) -> None:
    """A probe reads the first 4,096 rows of a 4M x 1 float32 tensor: the advice for them
    allocates an index of those rows, not of all 4M (32 MB)."""
    import tracemalloc

    from unshell.formats.safetensors import write_safetensors

    path = tmp_path / "tall.safetensors"
    write_safetensors(path, {"tall": np.zeros((1 << 22, 1), dtype=np.float32)})
    with open_checkpoint(path) as checkpoint:
        info = checkpoint.info("tall")
        assert checkpoint.row_bytes(info) == 4
        tracemalloc.start()
        try:
            with checkpoint.rows_apart(info, slice(0, 4096)):
                pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20
