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


def procrustes(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Orthogonal (or semi-orthogonal) T minimizing ||source @ T - target||_F."""
    u, _, vt = np.linalg.svd(source.T.astype(np.float64) @ target.astype(np.float64), full_matrices=False)
    return (u @ vt).astype(np.float32)


def align_embeddings(embed_a: np.ndarray, embed_b: np.ndarray, *, max_rows: int = 50_000) -> Alignment:
    """Residual alignment from the embedding rows of tokens both vocabularies hold (same ids).

    Vocabulary extension keeps the original ids, so the shared prefix is the anchor. Rows are
    centered first: the mean embedding is a direction every model has and says nothing about lineage.
    """
    rows = min(embed_a.shape[0], embed_b.shape[0], max_rows)
    a = embed_a[:rows].astype(np.float32)
    b = embed_b[:rows].astype(np.float32)
    a = a - a.mean(axis=0, keepdims=True)
    b = b - b.mean(axis=0, keepdims=True)
    transform = procrustes(b, a)
    fitted = b @ transform
    # Compare shapes of point clouds, not scales: fine-tuning can rescale embeddings.
    scale = float(np.sum(fitted * a)) / max(float(np.sum(fitted * fitted)), 1e-30)
    residual = float(np.linalg.norm(scale * fitted - a)) / max(float(np.linalg.norm(a)), 1e-30)
    return Alignment(transform=transform, residual=residual, anchors=rows, method="procrustes-embeddings")


def identity_alignment(hidden_a: int, hidden_b: int) -> Alignment:
    transform = np.eye(hidden_b, hidden_a, dtype=np.float32)
    return Alignment(transform=transform, residual=float("nan"), anchors=0, method="identity")


def projection(hidden: int, dim: int = SKETCH_DIM, seed: int = 0) -> np.ndarray:
    """A fixed random orthonormal H x r projection (the identity when H <= r)."""
    if hidden <= dim:
        return np.eye(hidden, dtype=np.float32)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((hidden, dim)))
    return q.astype(np.float32)


def shared_directions(dim: int) -> int:
    """How many leading principal directions to drop from a sketch: an eighth of its dimension.

    Models trained on similar data converge on a few dominant directions of residual space; the
    bulk of the spectrum is set by the random initialization and survives only in derivatives.
    Measured on same-data, same-recipe models from different seeds (benchmarks/RESULTS.md): with
    the top eighth removed their matched sketches sit on the random-rotation null, while a
    fine-tune keeps cosines above 0.9 and heavy continued pretraining above 0.5.
    """
    return max(1, dim // 8)


def gram_sketch(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Traceless, unit-norm sketch of the bulk second moment of ``vectors`` (n x H) in ``basis`` (H x r).

    The isotropic part and the leading principal directions are removed: every matrix has the
    first, and independently trained models share the second.
    """
    projected = vectors.astype(np.float32) @ basis
    gram = (projected.T @ projected).astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    top = shared_directions(gram.shape[0])
    gram -= (eigenvectors[:, -top:] * eigenvalues[-top:]) @ eigenvectors[:, -top:].T
    gram -= np.eye(gram.shape[0]) * (np.trace(gram) / gram.shape[0])
    norm = np.linalg.norm(gram)
    return (gram / norm if norm > 0 else gram).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine between two sketches (both already unit norm)."""
    return float(np.sum(a * b))
