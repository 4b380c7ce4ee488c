"""`Checkpoint.read_columns`: the values of ``read(name)[:, columns]`` however the tensor is stored
(bf16 and float16 gathered before they are widened, float32, GGML blocks a block of rows at a
time, a PyTorch checkpoint's strided views), on real files and copies of them made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unshell.formats import open_checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage.sketch import sampled_rows


def _columns(count: int) -> np.ndarray:
    ids = sampled_rows(count, max(1, count // 3))  # the sketches' own sample: sorted, spread
    assert ids is not None
    return ids


def _check_every_matrix(path: Path) -> int:
    checked = 0
    with open_checkpoint(path) as checkpoint:
        for name in checkpoint.tensors:
            info = checkpoint.info(name)
            if len(info.shape) != 2 or info.shape[1] < 4:
                continue
            columns = _columns(info.shape[1])
            expected = np.asarray(checkpoint.read(name))[:, columns]
            got = checkpoint.read_columns(name, columns)
            assert got.shape == expected.shape and got.dtype == expected.dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
            checked += 1
    return checked


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_plain_dtypes_of_a_real_model(fixtures_dir: Path, tmp_path: Path, dtype: str) -> None:
    """stories260K's weights (llama2.c float32), stored again here as ``dtype`` safetensors."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as source:
        tensors = {n: np.asarray(source.read(n), dtype=np.float32) for n in source.tensors}
    target = tmp_path / f"stories-{dtype}.safetensors"
    write_safetensors(target, tensors, dtypes=dict.fromkeys(tensors, dtype))
    assert _check_every_matrix(target) >= 30


def test_a_real_gguf_and_a_real_pytorch_checkpoint(fixtures_dir: Path) -> None:
    assert _check_every_matrix(fixtures_dir / "llama-2-tiny-random.gguf") >= 7
    assert _check_every_matrix(fixtures_dir / "llama2xs.ckpt.pt") >= 7
    assert _check_every_matrix(fixtures_dir / "stories260K.bin") >= 30


@pytest.mark.slow
def test_ggml_blocks_of_a_real_model() -> None:
    """SmolLM2-135M-Instruct as published (Q4_1 and Q8_0 blocks: decoded a block of rows at a time)."""
    from artifacts import fetch

    assert _check_every_matrix(fetch("smollm2_gguf")) >= 200
