"""Attribution methods that need no peer library: ours, grad-dot, DataInf, TF-IDF, embeddings.

Every method returns a `MethodOutput` in one convention: scores[q, i] > 0 means training row i
helped test row q (lowered its loss at its label); `self_scores[i]` is higher for rows the method
finds suspicious (mislabel detection). Gradient methods share one set of full (unprojected)
per-example gradients per model, computed once and timed once (`GradientFeatures`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


@dataclass
class MethodOutput:
    name: str
    scores: np.ndarray  # (Q, N) float64
    self_scores: np.ndarray | None  # (N,) higher = more suspicious; None when not computed
    self_kind: str  # how self_scores were made (self-influence, kNN label disagreement, ...)
    build_seconds: float  # index / cache / factor time, excluding model training
    query_seconds: float  # per test query, scoring against this task's N rows
    bytes_per_example: float  # what must be stored per training row to answer queries
    notes: list[str] = field(default_factory=list)


@dataclass
class GradientFeatures:
    """Full flattened per-example gradients of the trainable tensors at the final model."""

    train: np.ndarray  # (N, P) float32
    test: np.ndarray  # (Q, P) float32
    groups: list[tuple[str, int, int]]  # DataInf layers: (name, start, stop) in P
    train_seconds: float
    test_seconds: float


def grad_dot(features: GradientFeatures, need_self: bool = True) -> MethodOutput:
    """TracIn at the final checkpoint (grad-dot) on the full gradients; self = ||g||^2."""
    started = time.perf_counter()
    scores = features.test.astype(np.float64) @ features.train.astype(np.float64).T
    query = (time.perf_counter() - started + features.test_seconds) / len(features.test)
    self_scores = np.einsum("ij,ij->i", features.train, features.train).astype(np.float64) if need_self else None
    return MethodOutput("grad-dot", scores, self_scores, "self-influence ||g||^2", features.train_seconds, query,
                        features.train.shape[1] * 4.0)


def datainf(features: GradientFeatures, need_self: bool = True, lambda_scale: float = 0.1) -> MethodOutput:
    """DataInf (Kwon et al., ICLR 2024), layer-wise closed form.

    Per layer l, the damped Fisher inverse is approximated by averaging rank-one Sherman-Morrison
    inverses: (H_l + lam I)^-1 v ~ 1/(n lam) sum_j [v - (g_j.v)/(lam + |g_j|^2) g_j], with
    lam_l = 0.1 * mean_j |g_jl|^2 as in the paper. Influence on q is sum_l (H_l^-1 v_ql) . g_il;
    we report its helpful sign (the paper's influence is its negative)."""
    started = time.perf_counter()
    n = features.train.shape[0]
    scores = np.zeros((features.test.shape[0], n))
    self_scores = np.zeros(n)
    for _, lo, hi in features.groups:
        g = features.train[:, lo:hi].astype(np.float64)
        v = features.test[:, lo:hi].astype(np.float64)
        gram = g @ g.T  # (n, n)
        norms = np.diag(gram).copy()
        lam = lambda_scale * float(norms.mean()) + 1e-30
        weight = 1.0 / (lam + norms)  # (n,)
        vg = v @ g.T  # (Q, n)
        scores += (n * vg - (vg * weight) @ gram) / (n * lam)
        if need_self:
            self_scores += (n * norms - (gram ** 2 * weight[:, None]).sum(axis=0)) / (n * lam)
    elapsed = time.perf_counter() - started
    return MethodOutput("DataInf", scores, self_scores if need_self else None, "self-influence (DataInf inverse)",
                        features.train_seconds + elapsed * 0.5, elapsed * 0.5 / len(features.test) +
                        features.test_seconds / len(features.test), features.train.shape[1] * 4.0,
                        ["build/query split of the closed form counted half/half (one fused pass)"])


def _signed_similarity(sim: np.ndarray, train_labels: Sequence[str], test_labels: Sequence[str] | None) -> np.ndarray:
    """Similarity, signed by label agreement when labels are classes (a similar row with the other
    label argues against the answer)."""
    if test_labels is None:
        return sim
    agree = np.equal.outer(np.asarray(test_labels), np.asarray(train_labels))
    return np.where(agree, sim, -sim)


def knn_label_disagreement(sim_train: np.ndarray, labels: Sequence[str], k: int = 10) -> np.ndarray:
    """Per row: similarity-weighted share of its k nearest other rows with a different label."""
    sim = sim_train.copy()
    np.fill_diagonal(sim, -np.inf)
    labels_arr = np.asarray(labels)
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    weights = np.clip(np.take_along_axis(sim, nearest, axis=1), 1e-9, None)
    differ = labels_arr[nearest] != labels_arr[:, None]
    return (weights * differ).sum(axis=1) / weights.sum(axis=1)


def similarity_method(name: str, embed: Callable[[Sequence[str]], np.ndarray], train_texts: Sequence[str],
                      train_labels: Sequence[str], test_texts: Sequence[str], test_labels: Sequence[str],
                      classes: bool, need_self: bool, self_pairs: tuple[list[str], list[str]] | None = None,
                      bytes_per_row: Callable[[np.ndarray], float] | None = None) -> MethodOutput:
    """Cosine similarity in `embed`'s space. classes=True: signed by label agreement; self score is
    kNN label disagreement. classes=False (causal LM): unsigned; self score is 1 - cos(prompt,
    completion) over `self_pairs`, i.e. 'the completion does not resemble its prompt'."""
    started = time.perf_counter()
    train = _normalise(embed(train_texts))
    build = time.perf_counter() - started
    started = time.perf_counter()
    test = _normalise(embed(test_texts))
    scores = _signed_similarity(test @ train.T, train_labels, test_labels if classes else None)
    query = (time.perf_counter() - started) / len(test_texts)
    self_scores, kind = None, ""
    if need_self and classes:
        self_scores, kind = knn_label_disagreement(train @ train.T, train_labels), "kNN label disagreement (k=10)"
    elif need_self and self_pairs is not None:
        prompts, completions = _normalise(embed(self_pairs[0])), _normalise(embed(self_pairs[1]))
        self_scores, kind = 1.0 - np.einsum("ij,ij->i", prompts, completions), "1 - cos(prompt, completion)"
    stored = bytes_per_row(train) if bytes_per_row else train.shape[1] * 4.0
    return MethodOutput(name, scores, self_scores, kind, build, query, stored)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


class TfidfEmbedder:
    """TF-IDF fitted on the training texts only (word 1-2-grams; character 1-3-grams for the LM task)."""

    def __init__(self, train_texts: Sequence[str], char: bool):
        kwargs = {"analyzer": "char_wb", "ngram_range": (1, 3)} if char else {"ngram_range": (1, 2)}
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, lowercase=not char, **kwargs).fit(list(train_texts))
        self.nnz_per_row = 0.0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        matrix = self.vectorizer.transform(list(texts))
        if not self.nnz_per_row:  # the first call embeds the training rows: what an index stores
            self.nnz_per_row = matrix.nnz / max(1, matrix.shape[0])
        return matrix.toarray()

    def bytes_per_row(self, _: np.ndarray) -> float:
        return self.nnz_per_row * 8.0  # sparse: int32 column + float32 value per non-zero
