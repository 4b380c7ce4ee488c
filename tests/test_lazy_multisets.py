"""`compare` counts a tensor's multiset only where a tensor on the other side could share it.

`hashes.settle_multisets` must give `match_hashes` and `exact_twins` exactly what counting every
tensor gives. Each pair is stories260K (the real llama2.c checkpoint, float32) against a
derivative made here and written as safetensors:

- ``cast``: every tensor stored as bfloat16 (a dtype cast: every rounded digest matches);
- ``relaid``: the bf16 cast with the embedding's and the first FFN matrix's rows reversed and
  the second FFN matrix transposed (the same values re-laid out: multisets match, digests do not);
- ``noisy``: every tensor plus Gaussian noise of 1% of its std (a fine-tune stand-in: nothing
  matches but what noise cannot move).

Counting everything is the reference (`hash_tensor` with its default, as before this change).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unshell.formats import open_checkpoint
from unshell.formats.base import Checkpoint
from unshell.formats.safetensors import write_safetensors
from unshell.lineage import hashes
from unshell.lineage.hashes import (
    ContentHashes,
    TensorHashes,
    count_tensor,
    digest_candidates,
    exact_twins,
    hash_tensor,
    match_hashes,
    settle_multisets,
)

EMBEDDING = "tok_embeddings.weight"
W1, W2 = "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight"
MIN_DISTINCT = 256  # compare's TWIN_MIN_DISTINCT: the 64-value norm gains fall short of it


def derivative(source: Checkpoint, kind: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    tensors = {name: np.asarray(source.read(name), dtype=np.float32) for name in source.tensors}
    if kind == "noisy":
        rng = np.random.default_rng(7)
        noisy = {n: v + rng.normal(0, 0.01 * float(v.std()) + 1e-6, v.shape) for n, v in tensors.items()}
        return {n: v.astype(np.float32) for n, v in noisy.items()}, {}
    if kind == "relaid":
        tensors[EMBEDDING] = tensors[EMBEDDING][::-1].copy()
        tensors[W1] = tensors[W1][::-1].copy()
        tensors[W2] = tensors[W2].T.copy()
    return tensors, dict.fromkeys(tensors, "BF16")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> dict[str, Path]:
    made = {}
    with open_checkpoint(fixtures_dir / "stories260K.bin") as source:
        for kind in ("cast", "relaid", "noisy"):
            tensors, dtypes = derivative(source, kind)
            path = tmp_path_factory.mktemp(kind) / "model.safetensors"
            write_safetensors(path, tensors, dtypes=dtypes)
            made[kind] = path
    return made


def settled(
    a: Checkpoint, b: Checkpoint, *, every_digest: bool = False
) -> tuple[ContentHashes, ContentHashes, Counter[str]]:
    """Both sides hashed as `compare` hashes them (digests only where the other side may hold a
    twin: `digest_candidates`; ``every_digest``: every tensor digested, as before session 15),
    settled, and the tensors counted on the way."""
    counted: Counter[str] = Counter()

    def counter(checkpoint: Checkpoint, side: str) -> Callable[[TensorHashes], TensorHashes]:
        def count(tensor: TensorHashes) -> TensorHashes:
            counted[f"{side}:{tensor.name}"] += 1
            return count_tensor(checkpoint, tensor)

        return count

    names_a, names_b = list(a.tensors), list(b.tensors)
    digest_a, digest_b = (
        (set(names_a), set(names_b)) if every_digest else digest_candidates(a, names_a, b, names_b)
    )
    light_a = ContentHashes([hash_tensor(a, n, counted=False, digested=n in digest_a) for n in names_a])
    light_b = ContentHashes([hash_tensor(b, n, counted=False, digested=n in digest_b) for n in names_b])
    settled_a, settled_b = settle_multisets(
        light_a, light_b, counter(a, "a"), counter(b, "b"), min_distinct=MIN_DISTINCT
    )
    return settled_a, settled_b, counted


@pytest.mark.parametrize("every_digest", [False, True])
@pytest.mark.parametrize("kind", ["cast", "relaid", "noisy"])
def test_settled_multisets_match_as_counting_every_tensor_does(
    fixtures_dir: Path, pairs: dict[str, Path], kind: str, every_digest: bool
) -> None:
    with open_checkpoint(fixtures_dir / "stories260K.bin") as a, open_checkpoint(pairs[kind]) as b:
        full_a = ContentHashes([hash_tensor(a, n) for n in a.tensors])
        full_b = ContentHashes([hash_tensor(b, n) for n in b.tensors])
        settled_a, settled_b, counted = settled(a, b, every_digest=every_digest)
    assert match_hashes(settled_a, settled_b) == match_hashes(full_a, full_b)
    assert match_hashes(settled_b, settled_a) == match_hashes(full_b, full_a)
    twins = exact_twins(full_a, full_b, min_elements=1024, min_distinct=MIN_DISTINCT)
    assert exact_twins(settled_a, settled_b, min_elements=1024, min_distinct=MIN_DISTINCT) == twins
    # Where a settled multiset is a counted digest, it is the digest counting gives.
    for settled_side, full_side in ((settled_a, full_a), (settled_b, full_b)):
        for light, full in zip(settled_side.tensors, full_side.tensors, strict=True):
            if light.multiset is not None and not light.multiset.startswith("values:"):
                assert (light.multiset, light.distinct) == (full.multiset, full.distinct)

    forward = match_hashes(full_a, full_b)
    if kind == "cast":
        # Every tensor's values are A's, in A's order: nothing needs counting but the 64-value norm
        # gains, whose distinct values fall short of the twin threshold (one side of each group).
        assert forward.rounded == 1.0 and forward.multiset == 1.0
        assert counted and all(name.endswith("norm.weight") for name in counted)
        assert all(count == 1 for count in counted.values())
    elif kind == "relaid":
        # The re-laid-out matrices: the same values in another order, counted on both sides.
        assert forward.multiset == 1.0 and forward.rounded < 1.0
        for name in (EMBEDDING, W1, W2):
            assert counted[f"a:{name}"] == 1 and counted[f"b:{name}"] == 1
    else:
        # Noise moves every key: nothing is counted, nothing matches.
        assert forward.multiset == 0.0 and not counted


def test_twins_known_only_by_a_lower_bound_of_their_distinct_values_are_counted_once(
    fixtures_dir: Path, pairs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the first chunk at 200 values, an uncounted tensor's distinct count (a lower bound)
    is below the twin threshold for every tensor: each group of twins is counted once, on one
    side, so `exact_twins` reads the exact count (the embedding and the matrices have at least 256
    distinct values: they stay twins)."""
    monkeypatch.setattr(hashes, "_CHUNK_ELEMENTS", 200)
    with open_checkpoint(fixtures_dir / "stories260K.bin") as a, open_checkpoint(pairs["cast"]) as b:
        full_a = ContentHashes([hash_tensor(a, n) for n in a.tensors])
        full_b = ContentHashes([hash_tensor(b, n) for n in b.tensors])
        settled_a, settled_b, counted = settled(a, b)
    twins = exact_twins(full_a, full_b, min_elements=1024, min_distinct=MIN_DISTINCT)
    assert twins.tensors > 0
    assert exact_twins(settled_a, settled_b, min_elements=1024, min_distinct=MIN_DISTINCT) == twins
    assert match_hashes(settled_a, settled_b) == match_hashes(full_a, full_b)
    assert len(counted) == len(a.tensors) and all(count == 1 for count in counted.values())


def test_a_model_hashes_each_tensor_once_and_counts_what_was_left_when_asked(
    fixtures_dir: Path, pairs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compare` hashes without counting, a fingerprint of the same opened model afterwards
    counts: each tensor is hashed once and counted once (no second sha256), and the counted hashes
    are those a fresh count gives. Counted first, an uncounted request is served as it is."""
    from unshell.model import Model

    calls: Counter[str] = Counter()
    for name in ("hash_tensor", "count_tensor"):
        real = getattr(hashes, name)

        def spy(
            *args: object, _real: Callable[..., TensorHashes] = real, _name: str = name, **kw: object
        ) -> TensorHashes:
            calls[_name] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(hashes, name, spy)
    with open_checkpoint(pairs["cast"]) as checkpoint:
        names = list(checkpoint.tensors)
        fresh = [hashes.hash_tensor(checkpoint, n) for n in names]
        calls.clear()
        model = Model.of(checkpoint)
        light = [model.tensor_hashes(n, counted=False) for n in names]
        assert all(t.multiset is None for t in light)
        full = model.content_hashes(names)
        assert full.tensors == fresh
        assert calls == {"hash_tensor": len(names), "count_tensor": len(names)}
        assert [model.tensor_hashes(n, counted=False) for n in names] == full.tensors
        assert calls == {"hash_tensor": len(names), "count_tensor": len(names)}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("cast", True),
        ("renamed", True),
        ("shuffled", False),
        ("shifted", False),
        ("relaid", False),
        ("noisy", False),
    ],
)
def test_probe_of_leading_values_guesses_identity_as_the_hashes_prove_it(
    fixtures_dir: Path, pairs: dict[str, Path], tmp_path: Path, kind: str, expected: bool
) -> None:
    """`probably_identical` (read before `compare`'s pass, to spare an identical pair its sketches)
    says True where the rounded digests prove every tensor a twin: the bf16 cast, and the cast with
    every tensor renamed (as Yi renamed Llama's norms); False where a tensor has no twin: the cast
    with one norm gain's first value moved by a bf16 step, and the re-laid-out and noisy copies.
    It gives up on the renamed cast stored in reversed order (its tensors of one size are twins of
    A's last first: more than `_PROBE_MISSES` of A's probed in vain), which is then hashed and
    sketched in one pass, as a pair that differs."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as source:
        tensors, _ = derivative(source, "cast")  # in A's order
    path = pairs.get(kind)
    if kind in ("renamed", "shuffled"):
        order = list(tensors) if kind == "renamed" else list(tensors)[::-1]
        made = {f"blk.{i:03d}": tensors[n] for i, n in enumerate(order)}  # names that sort in order
    elif kind == "shifted":
        norm = "layers.0.attention_norm.weight"
        made = dict(tensors, **{norm: tensors[norm].copy()})
        made[norm][0] += 2**-6 * abs(made[norm][0])  # past the next bf16 value
    if path is None:
        path = tmp_path / f"{kind}.safetensors"
        write_safetensors(path, made, dtypes=dict.fromkeys(made, "BF16"))
    with open_checkpoint(fixtures_dir / "stories260K.bin") as a, open_checkpoint(path) as b:
        guess = hashes.probably_identical(a, list(a.tensors), b, list(b.tensors))
        proof = match_hashes(
            ContentHashes([hash_tensor(a, n) for n in a.tensors]),
            ContentHashes([hash_tensor(b, n) for n in b.tensors]),
        ).rounded
    assert guess is expected
    assert (proof == 1.0) is (expected or kind == "shuffled")


@pytest.mark.parametrize("kind", ["cast", "original"])
def test_a_tensor_left_undigested_is_digested_when_a_fingerprint_asks(
    fixtures_dir: Path, pairs: dict[str, Path], kind: str
) -> None:
    """A tensor hashed for a comparison whose other side holds no tensor it may equal is left
    without digests (its key and distinct lower bound kept), whether its stored bytes are its bf16
    values (``cast``) or are decoded (``original``: llama2.c float32); a later request for digests
    (a fingerprint of the same opened model, in a fleet scan) hashes it in full, as `hash_tensor`
    alone does, and a fingerprint refuses the undigested record."""
    from unshell.model import Model

    path = pairs["cast"] if kind == "cast" else fixtures_dir / "stories260K.bin"
    with open_checkpoint(path) as checkpoint:
        model = Model.of(checkpoint)
        light = model.tensor_hashes(W1, counted=False, digested=False)
        assert light.exact is None and light.rounded is None and light.key is not None
        with pytest.raises(ValueError, match="not digested"):
            _ = light.digests
        assert model.tensor_hashes(W1, counted=False, digested=False) is light  # kept
        full = model.tensor_hashes(W1)
        assert full == hash_tensor(checkpoint, W1)
        digested = hash_tensor(checkpoint, W1, counted=False)
        assert digested.digests == full.digests and digested.key == light.key == full.key
        assert light.distinct == digested.distinct


def test_digests_are_left_out_only_where_no_twin_may_be(fixtures_dir: Path, pairs: dict[str, Path]) -> None:
    """`digest_candidates` on real pairs: every tensor whose digest (exact or rounded) equals one
    on the other side is a candidate on both sides, and a tensor with new leading values is not.
    stories260K (llama2.c float32) against its bf16 cast (every tensor a rounded twin), its
    re-laid-out cast (the embedding and W1 with their rows reversed, W2 transposed: the same
    values in another order, no digest twin) and its noisy copy (no twin at all)."""
    with open_checkpoint(fixtures_dir / "stories260K.bin") as a:
        names_a = list(a.tensors)
        full_a = {n: hash_tensor(a, n) for n in names_a}
        for kind in ("cast", "relaid", "noisy"):
            with open_checkpoint(pairs[kind]) as b:
                names_b = list(b.tensors)
                full_b = {n: hash_tensor(b, n) for n in names_b}
                digest_a, digest_b = digest_candidates(a, names_a, b, names_b)
            for mine, theirs, candidates in ((full_a, full_b, digest_a), (full_b, full_a, digest_b)):
                exact = {t.exact for t in theirs.values()}
                rounded = {t.rounded for t in theirs.values()}
                twinned = {n for n, t in mine.items() if t.exact in exact or t.rounded in rounded}
                assert twinned <= candidates, kind
            if kind == "cast":
                assert digest_a == set(names_a) and digest_b == set(names_b)
            elif kind == "relaid":
                moved = {EMBEDDING, W1, W2}
                assert not moved & digest_a and not moved & digest_b
                assert digest_a == set(names_a) - moved and digest_b == set(names_b) - moved
            else:
                # Noise moves every value; the norm gains keep no leading values either.
                assert not digest_a and not digest_b
