"""Compact, transformation-invariant sketches of weight matrices, and the residual alignment.

Every matrix that touches the residual stream is a set of vectors in residual space: the rows of a
matrix that reads it (q, k, v, gate, up), the columns of one that writes it (o, down). The set's
second moment ``G = XᵀX`` (H x H) forgets everything a disguiser can do on the other side of the
matrix: permuting MLP neurons or attention heads, flipping signs, rotating inside a head, scaling
one matrix against the next. What is left is how the matrix uses residual space, and a derived
model keeps that (rotated, if the residual stream was rotated).

The residual rotation is undone first, by orthogonal Procrustes between the two models' embedding
rows for shared tokens. ``G`` is then compared in a random ``r``-dimensional projection of the
aligned space (``r`` = 256 by default), so that a 7B model costs n x H x r per matrix, not H².
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

SKETCH_DIM = 256


@dataclass(frozen=True)
class Alignment:
    """Maps B's residual coordinates onto A's: ``x_A ≈ x_B @ transform``."""

    transform: np.ndarray  # H_B x H_A, orthonormal columns or rows
    residual: float  # relative Procrustes residual on the anchor rows (0 = exact rotation)
    anchors: int  # anchor rows used
    method: str
    # The same fit with the anchor rows paired at random (NaN when not measured): what the residual
    # is when the anchors pair unrelated rows. An alignment no better than this has failed.
    chance: float = float("nan")
    anchored_by: str = ""  # "token ids" or "token strings" for an embedding alignment
    # The residual of "no transform" on the same anchors (NaN when not measured or not square):
    # a stream that was really transformed fits far worse untransformed than fitted.
    untransformed: float = float("nan")
    # False when no transform was fitted because the anchors already agree untransformed
    # (`IDENTITY_KEPT_RESIDUAL`): the transform is then the identity and the residual its own.
    fitted: bool = True

    @functools.cached_property
    def identity(self) -> bool:
        """Whether the transform is exactly the square identity (`is_identity`), told once: the
        expert map asks for every block it aligns."""
        return is_identity(self.transform)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """B's ``rows`` (n x H_B) in A's coordinates: ``rows @ transform``, except that the
        identity kept unfitted returns finite rows as they are (no n x H x H product; a
        non-finite row keeps the product's NaN)."""
        if self.identity and all_finite(rows):
            return rows
        return rows @ self.transform


ANCHOR_BYTES = 1 << 26  # float32 bytes of anchor rows per model: 64 MiB


def anchor_stride(rows: int, hidden: int, *, most: int | None = None) -> int:
    """Read every n-th embedding row as an anchor: all rows while they fit in `ANCHOR_BYTES` and
    there are not more than 32,768 (a small model's whole vocabulary), else an even stride.
    A rotation of H dimensions is fixed by well-spread rows numbering a few H; more only average
    noise, and a 128k-token, 8k-wide embedding would cost gigabytes for nothing. ``most``: keep at
    most this many (a fingerprint stores its anchors)."""
    keep = min(max(4 * hidden, 32768), max(ANCHOR_BYTES // (4 * hidden), 2 * hidden))
    if most is not None:
        keep = max(1, min(keep, most))
    return max(1, -(-rows // keep))


CHANCE_SEED = 20_018

# Anchor rows that already agree untransformed within this relative residual keep the identity,
# unfitted: the fit is an H x H eigendecomposition (about 21 CPU s at H = 4096, most of a
# `compare --quick` of a 7B pair), and what it would find here is the identity up to noise.
# Calibration is untouched: the identity is a fixed transform, so B's sketches under it are a
# function of B alone, the independence the null needs (a fitted transform is the one that leans
# on both models). Power is kept: a transform the identity already fits this well moves each
# direction by little; unrotated derivatives sit near their fine-tuning noise (the zoo's under
# 0.13, the 7B-shaped pair with 10 % noise at 0.10) and independently trained models near 1
# (unrelated bases). On anchors spread over every direction the identity's residual is about the
# transform's RMS distance from the identity, below the 0.5 from which `compare._transformed`
# calls a stream rotated: keeping the identity does not hide an obfuscation it would report.
IDENTITY_KEPT_RESIDUAL = 0.3


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities as zero, in place when writable.

    A diverged or damaged weight holds them, and products of huge finite float32 values overflow
    to them; the sketches and alignments built from a matrix would all become NaN (and LAPACK
    refuses to decompose them), so one bad value would hide the evidence of every other value of
    the matrix, or stop the comparison.
    """
    if all_finite(values):
        return values
    if not values.flags.writeable:
        values = values.copy()
    return np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, for float arrays by their sum first: a NaN or an infinity
    makes the sum NaN or infinite, so a finite sum proves them all finite in one read of the values
    (no boolean temporary as large as the array). Only a non-finite sum, which huge finite values
    also give, takes the element-wise test."""
    if values.dtype.kind == "f" and values.size:
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(float(np.sum(values))):
                return True
    return bool(np.isfinite(values).all())


def align_embeddings(embed_a: np.ndarray, embed_b: np.ndarray, *, chance: bool = False) -> Alignment:
    """Residual alignment from embedding rows of tokens both vocabularies hold (row i of each).

    Vocabulary extension keeps the original ids, so the shared prefix is the anchor; callers that
    know the token strings pass the rows of shared strings instead. Rows are centered first (in
    place: callers pass arrays they own): the mean embedding is a direction every model has and
    says nothing about lineage. ``chance``: also fit B's rows in a fixed random order (`Alignment.chance`).
    Rows that agree untransformed (`IDENTITY_KEPT_RESIDUAL`) keep the identity without a fit.
    """
    rows = min(embed_a.shape[0], embed_b.shape[0])
    a = np.asarray(embed_a[:rows], dtype=np.float32)
    b = np.asarray(embed_b[:rows], dtype=np.float32)
    a = a if a.flags.writeable else a.copy()
    b = b if b.flags.writeable else b.copy()
    a -= a.mean(axis=0, keepdims=True)
    b -= b.mean(axis=0, keepdims=True)
    untransformed = float("nan")
    if a.shape[1] == b.shape[1]:
        untransformed = untransformed_residual(a, b)
    fitted = not untransformed <= IDENTITY_KEPT_RESIDUAL  # NaN (not square): fitted
    if fitted:
        transform, residual = _procrustes(a, b)
    else:
        transform, residual = np.eye(a.shape[1], dtype=np.float32), untransformed
    shuffled = float("nan")
    if chance:
        order = np.random.default_rng(CHANCE_SEED).permutation(rows)
        shuffled = procrustes_residual(a, b[order])
    return Alignment(
        transform=transform,
        residual=residual,
        anchors=rows,
        method="procrustes-embeddings",
        chance=shuffled,
        untransformed=untransformed,
        fitted=fitted,
    )


def _procrustes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """(orthogonal transform fitting ``b @ transform`` to ``a``, relative residual after scaling)."""
    cross = finite((b.T @ a).astype(np.float64))
    transform = polar_factor(cross)
    # The residual in closed form: ``sum((b T) * a) = tr(Tᵀ bᵀ a) = sum(T * cross)`` and, where T
    # keeps lengths (square, or rows orthonormal: H_B <= H_A), ``|b T|² = |b|²``. No n x H x H pass.
    dot = float(np.sum(transform * cross))
    fitted_norm = _fitted_norm(b, transform)
    return transform.astype(np.float32), _scaled_residual(dot, fitted_norm, _squared_norm(a))


def procrustes_residual(a: np.ndarray, b: np.ndarray) -> float:
    """`_procrustes`'s residual without its transform: ``tr(Tᵀ bᵀ a)`` is the sum of the singular
    values of ``bᵀ a`` (the square roots of its Gram's eigenvalues), and ``|b T|² = |b|²`` when T
    keeps lengths; no polar factor is formed. Used for the chance fit (rows paired at random)."""
    cross = finite((b.T @ a).astype(np.float64))
    if cross.shape[0] > cross.shape[1]:  # T has orthonormal columns only: |b T|² needs T
        transform = polar_factor(cross)
        return _scaled_residual(
            float(np.sum(transform * cross)), _fitted_norm(b, transform), _squared_norm(a)
        )
    eigenvalues = np.linalg.eigvalsh(cross @ cross.T)  # the smaller Gram: H_B <= H_A here
    dot = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    return _scaled_residual(dot, _squared_norm(b), _squared_norm(a))


def untransformed_residual(target: np.ndarray, rows: np.ndarray) -> float:
    """The relative residual of ``rows`` against ``target`` (same shape, both centered) with no
    transform, at the best free scale, as `_procrustes` measures a fitted one."""
    return _scaled_residual(_dot(target, rows), _squared_norm(rows), _squared_norm(target))


def _squared_norm(values: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", values, values, dtype=np.float64))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.einsum("ij,ij->", a, b, dtype=np.float64))


def _fitted_norm(b: np.ndarray, transform: np.ndarray) -> float:
    """``|b @ transform|²``: ``|b|²`` when the transform keeps lengths, else in blocks of rows."""
    if transform.shape[0] <= transform.shape[1]:
        return _squared_norm(b)
    single = transform.astype(np.float32)
    total = 0.0
    for start in range(0, b.shape[0], 4096):
        fitted = b[start : start + 4096] @ single
        total += _squared_norm(fitted)
    return total


def _scaled_residual(dot: float, fitted_norm: float, target_norm: float) -> float:
    """Relative residual of ``scale * fitted`` against the target, at the best free ``scale``:
    shapes of point clouds are compared, not scales (fine-tuning can rescale embeddings)."""
    scale = dot / max(fitted_norm, 1e-30)
    residual_sq = scale * scale * fitted_norm - 2 * scale * dot + target_norm
    return float(np.sqrt(max(residual_sq, 0.0) / max(target_norm, 1e-30)))


# Condition number of the Gram (the square of the matrix's) up to which `polar_factor` takes its
# eigenvectors: float64 eigenvectors of ``MᵀM`` carry an error of about eps * cond(MᵀM) in the
# weakest direction, 1e-16 * 1e8 = 1e-8 here, below the float32 rounding of the cross products fed
# to it (about 1e-7). Worse-conditioned (or rank-deficient) matrices take the SVD.
POLAR_GRAM_CONDITION = 1e8


def polar_factor(matrix: np.ndarray) -> np.ndarray:
    """The orthogonal polar factor ``U Vᵀ`` of ``matrix = U S Vᵀ`` (p x q; orthonormal columns
    when p >= q, rows otherwise), in float64: the nearest matrix with orthonormal columns or rows.

    Taken from ``eigh`` of the smaller Gram ``MᵀM = V S² Vᵀ`` as ``M V S⁻¹ Vᵀ``: two matrix products
    and a symmetric eigensolver cost about half of the divide-and-conquer SVD at q = 4096 (the
    alignment of a 7B model), and give the same factor to about 1e-8 while the Gram is
    well-conditioned (`POLAR_GRAM_CONDITION`). The factor is unique for a full-rank matrix, so
    every caller's transform, and so every sketch and p-value built on it, is the one the SVD
    gave, to well within the float32 precision the sketches are computed in: the null stays
    calibrated because the statistic did not change. A rank-deficient or ill-conditioned matrix,
    where the factor is not unique or the Gram loses its weak directions, takes the SVD as before.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] < m.shape[1]:
        return polar_factor(m.T).T
    if m.size and np.isfinite(m).all():
        eigenvalues, vectors = np.linalg.eigh(m.T @ m)
        if eigenvalues[-1] > 0 and eigenvalues[0] > eigenvalues[-1] / POLAR_GRAM_CONDITION:
            result: np.ndarray = ((m @ vectors) / np.sqrt(eigenvalues)) @ vectors.T
            return result
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    svd_result: np.ndarray = u @ vt
    return svd_result


def is_identity(transform: np.ndarray) -> bool:
    """Whether ``transform`` is exactly the square identity (an alignment that kept it, unfitted):
    its diagonal all ones and nothing else non-zero, in two reads and no H x H temporary."""
    if transform.ndim != 2 or transform.shape[0] != transform.shape[1]:
        return False
    return int(np.count_nonzero(transform)) == transform.shape[0] and bool(
        (np.diagonal(transform) == 1).all()
    )


def off_identity(transform: np.ndarray) -> float:
    """How far a square alignment is from "no change": the RMS distance from the identity, per
    dimension (0 for none; a random rotation gives about 1.4; fine-tuning noise stays near 0).
    The identity itself, which most pairs keep (`IDENTITY_KEPT_RESIDUAL`), is 0 without the H x H
    float64 difference (at H 4096, 0.2 CPU s a call, several calls a comparison)."""
    size = transform.shape[0]
    if is_identity(transform):
        return 0.0
    difference = transform.astype(np.float64)  # ``transform - np.eye(size)``, value for value
    difference.flat[:: size + 1] -= 1.0
    return float(np.linalg.norm(difference)) / math.sqrt(size)


def identity_alignment(hidden_a: int, hidden_b: int) -> Alignment:
    transform = np.eye(hidden_b, hidden_a, dtype=np.float32)
    return Alignment(transform=transform, residual=float("nan"), anchors=0, method="identity")


def projection(hidden: int, dim: int = SKETCH_DIM, seed: int = 0) -> np.ndarray:
    """A fixed random orthonormal H x r projection (the identity when H <= r). A fresh copy each
    call; the QR behind it (2 s at H 4096) is made once per process."""
    if hidden <= dim:
        return np.eye(hidden, dtype=np.float32)
    return _projection(hidden, dim, seed).copy()


@functools.lru_cache(maxsize=8)
def _projection(hidden: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((hidden, dim)))
    return q.astype(np.float32)


# --- row sampling ----------------------------------------------------------------------------
# A matrix with more vectors in residual space than `row_sample_size` (8 per sketch dimension: 2,048
# at r = 256) is sketched from a fixed sample of that many of them, not from all. The sketch is a
# second moment in r dimensions; its cost is n x H x r, and 8 r vectors estimate it well enough that
# a derivative whose rows sit where its parent's do (fine-tunes, quantized or converted copies,
# rotated residual streams) keeps nearly its whole similarity, since both sides sample the same
# rows. Where rows were moved (neurons permuted, width pruned), the two samples are different
# vectors and the similarity falls to about the sampled fraction K/n of the unsampled one (0.19 of
# it for a 7B FFN: z still about 30 per matrix); benchmarks/RESULTS.md has the measurements.
#
# Why the p-values stay calibrated: which vectors are kept is a function of the vector count,
# ``keep`` and `ROW_SAMPLE_SEED` only, never of any value. Under H0 (B trained independently of A)
# B's sampled sketch is then a function of B's weights alone, exactly as its full sketch was, so it
# is still independent of every sketch of A, and the test's null (a B sketch against A's other
# sketches, floored at the exact spread of randomly rotated sketches, then Sidak and Bonferroni
# corrections that hold whatever the sketches are) is valid for it unchanged. Sampling adds
# estimation noise to both sides; under H0 that noise is independent of the other side too, so it
# widens no tail, it only makes matches weaker. A matrix of at most ``keep`` vectors (every matrix
# of every model up to hidden 256 with FFN <= 2,048, which is every null population and zoo model
# the tests calibrate on) is sketched from all of them, bit for bit as before.
ROW_SAMPLE_PER_DIM = 8
ROW_SAMPLE_SEED = 0x5EED_0F_2026


def row_sample_size(dim: int) -> int:
    """How many of a matrix's vectors a sketch in ``dim`` dimensions takes (see the comment above)."""
    return ROW_SAMPLE_PER_DIM * dim


def sampled_rows(count: int, keep: int) -> np.ndarray | None:
    """The sorted indices of the ``keep`` of ``count`` vectors a sketch takes, or None when
    ``count <= keep`` (or ``keep`` is 0: no sampling) and every vector is taken.

    A fixed function of ``(count, keep)`` and `ROW_SAMPLE_SEED`, the same on every machine and numpy
    version (splitmix64 keys, smallest ``keep`` by stable sort; numpy's generators do not promise
    their streams across versions, and a fingerprint written today must sample as a checkpoint read
    tomorrow). Random rather than an even stride: a stride aliases with a layout's period (rotary
    pairs inside a head, interleaved against half-split), so two layouts of one matrix would sample
    different kinds of rows; a random set of rows is as likely in every layout.
    """
    if keep <= 0 or count <= keep:
        return None
    return _sampled_rows(count, keep)


@functools.lru_cache(maxsize=64)
def _sampled_rows(count: int, keep: int) -> np.ndarray:
    keys = _splitmix64(
        np.arange(count, dtype=np.uint64) + np.uint64(_splitmix_scalar(ROW_SAMPLE_SEED ^ count))
    )
    chosen = np.sort(np.argsort(keys, kind="stable")[:keep]).astype(np.int64)
    chosen.flags.writeable = False
    return chosen


_MASK64 = (1 << 64) - 1


def _splitmix_scalar(value: int) -> int:
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's output function on each uint64 (wrapping arithmetic, as the scalar version)."""
    with np.errstate(over="ignore"):
        z = values * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shared_directions(dim: int) -> int:
    """How many leading principal directions to drop from a sketch: an eighth of its dimension.

    Models trained on similar data converge on a few dominant directions of residual space; the
    bulk of the spectrum is set by the random initialization and survives only in derivatives.
    Measured on same-data, same-recipe models from different seeds (benchmarks/RESULTS.md): with
    the top eighth removed their matched sketches sit on the random-rotation null, while a
    fine-tune keeps cosines above 0.9 and heavy continued pretraining above 0.5.
    """
    return max(1, dim // 8)


def finite_unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero), NaN and infinities counting as
    zero (`finite`): a row whose squares overflow float32 (hostile or diverged weights) has an
    infinite length and becomes zero, not NaN. `unit_sketch`'s element-wise path, and the layer
    moments' rows (`compare.layer_grams`), so both scale a row alike."""
    vectors = finite(vectors)
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def gram_sketch(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Traceless, unit-norm sketch of the bulk second moment of ``vectors`` (n x H) in ``basis`` (H x r).

    The isotropic part and the leading principal directions are removed: every matrix has the
    first, and independently trained models share the second.
    """
    return projected_sketch(np.asarray(vectors, dtype=np.float32) @ basis)  # no copy of a float32 matrix


def projected_sketch(projected: np.ndarray) -> np.ndarray:
    """`gram_sketch` of vectors already projected on the basis (n x r)."""
    gram = finite((projected.T @ projected).astype(np.float64))
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    top = shared_directions(gram.shape[0])
    gram -= (eigenvectors[:, -top:] * eigenvalues[-top:]) @ eigenvectors[:, -top:].T
    gram -= np.eye(gram.shape[0]) * (np.trace(gram) / gram.shape[0])
    norm = np.linalg.norm(gram)
    return (gram / norm if norm > 0 else gram).astype(np.float32)


def unit_sketch(
    vectors: np.ndarray, basis: np.ndarray, *, gain: np.ndarray | None = None, overwrite: bool = False
) -> tuple[np.ndarray, float]:
    """(`gram_sketch` of ``vectors`` (n x H, times ``gain`` per column) each scaled to unit length,
    the std of their values), NaN and infinities counting as zero (`finite`): `unit_sketches`
    in one basis."""
    return unit_sketches(vectors, [basis], gain=gain, overwrite=overwrite)[0]


def unit_sketches(
    vectors: np.ndarray, bases: list[np.ndarray], *, gain: np.ndarray | None = None, overwrite: bool = False
) -> list[tuple[np.ndarray, float]]:
    """`unit_sketch` of ``vectors`` in each of ``bases``: the gain, the row lengths and the std
    once, a projection per basis (a search sketches its suspect under each candidate's basis).

    Unit length per vector: scaling a neuron's input against its output (or a query row against its
    key row) preserves the function, so it must not change the sketch. The row lengths and the
    std come from one pass of row moments (sums by BLAS, squares by ``einsum``; the std from their
    float64 totals), which also proves the values finite (a NaN or an infinity makes its row's
    moments non-finite); the rows are scaled after the projection (n x r), not before (n x H).
    Values whose squares overflow float32 take the element-wise path (`finite`, ``std``, norms).
    ``overwrite``: the gain may be applied in place (the caller owns ``vectors`` and reads it no more).
    """
    if gain is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # a huge gain: handled below
            if overwrite and vectors.flags.writeable and vectors.dtype == np.result_type(vectors, gain):
                vectors = np.multiply(vectors, gain[None, :], out=vectors)
            else:
                vectors = vectors * gain[None, :]
    with np.errstate(over="ignore"):  # float64 values past float32's range: infinities, handled below
        vectors = np.asarray(vectors, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", vectors, vectors)
        sums = vectors @ np.ones(vectors.shape[1], dtype=np.float32)
        total_squares = float(np.sum(squares, dtype=np.float64))
        total = float(np.sum(sums, dtype=np.float64))
    count = vectors.size
    if not (math.isfinite(total_squares) and math.isfinite(total)) or count == 0:
        # A huge gain times a huge weight overflows. The definition's float32 arithmetic holds
        # here too (tests/test_sketch_speed.py): a row whose squares overflow has an infinite
        # length and sketches as zero, and the std may be infinite.
        vectors = finite(vectors)
        with np.errstate(over="ignore", invalid="ignore"):
            std = float(vectors.std())
        unit_rows = finite_unit_rows(vectors)
        return [(gram_sketch(unit_rows, basis), std) for basis in bases]
    mean = total / count
    std = math.sqrt(max(total_squares / count - mean * mean, 0.0))
    lengths = np.maximum(np.sqrt(squares), 1e-12)[:, None]
    sketches = []
    for basis in bases:
        projected = vectors @ basis
        projected /= lengths
        sketches.append((projected_sketch(projected), std))
    return sketches


def fit_rotation(grams_a: list[np.ndarray], grams_b: list[np.ndarray], iterations: int = 25) -> np.ndarray:
    """An orthogonal H x H transform T with ``Tᵀ G_B T ≈ G_A`` for every pair of second moments.

    A rotated residual stream rotates every matrix's second moment alike (``G_B = Qᵀ G_A Q``), so
    the rotation can be read off the matrices themselves, without any token: the eigenvectors of
    the summed moments give it up to one sign per direction, the pairs' cross terms fix the signs
    (the leading eigenvector of their sign-agreement matrix), and a monotone ascent on
    ``Σ tr(Tᵀ G_B T G_A)`` (T <- polar factor of the gradient; the objective is convex in T for
    positive semi-definite moments, so each step can only raise it) settles directions that the
    sum alone leaves nearly degenerate. Returns T as an `Alignment.transform` (``x_A ≈ x_B @ T``).
    """
    a = [np.asarray(g, dtype=np.float64) / max(float(np.linalg.norm(g)), 1e-30) for g in grams_a]
    b = [np.asarray(g, dtype=np.float64) / max(float(np.linalg.norm(g)), 1e-30) for g in grams_b]
    _, vectors_a = np.linalg.eigh(sum(a))
    _, vectors_b = np.linalg.eigh(sum(b))
    agreement = sum(
        (vectors_a.T @ ga @ vectors_a) * (vectors_b.T @ gb @ vectors_b) for ga, gb in zip(a, b, strict=True)
    )
    assert isinstance(agreement, np.ndarray)
    np.fill_diagonal(agreement, 0.0)
    signs = np.sign(np.linalg.eigh(agreement)[1][:, -1])
    signs[signs == 0] = 1.0
    for _ in range(4):  # single flips that still raise the agreement
        for j in range(signs.size):
            if signs[j] * float(agreement[j] @ signs) < 0:
                signs[j] = -signs[j]
    transform = (vectors_b * signs) @ vectors_a.T
    for _ in range(iterations):
        gradient = sum(gb @ transform @ ga for ga, gb in zip(a, b, strict=True))
        step = polar_factor(gradient)
        moved = float(np.linalg.norm(step - transform))
        transform = step
        if moved < 1e-4:
            break
    return transform.astype(np.float32)
