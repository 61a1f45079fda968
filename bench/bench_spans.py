"""Span attribution benchmark (issue 6): suffix-array index over ~10M tokens, 256-token queries.

Run: nice -n 10 .venv/bin/python bench/bench_spans.py [--tokens 10000000] [--queries 200]

The corpus is generated deterministically (seeded): a 32,000-id vocabulary, a bank of 50,000
phrases (3-12 tokens, Zipf-distributed ids) drawn with Zipf frequencies and mixed with 20% single
random tokens, cut into rows of 64-1,024 tokens, 50 rows per contribution. Queries: half are
256-token windows copied from the corpus with one random substitution per ~32 tokens, half
are novel text from the same generator with another seed and phrase bank (same id distribution).

Baselines, in the same run and on the same data: (1) a naive numpy scan (for each output position,
filter the candidate positions token by token; exact, and used to check our spans), on a few
queries only since it is slow; (2) a sorted table of 64-bit hashes of every k-gram
(k = min_length) with positions, queried with np.searchsorted: fast but fixed-length, and
it neither finds longest spans nor knows row boundaries. Prints a JSON summary; no assertion on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from provenant.attribution.spans import SpanDocument, SpanIndex, build_span_index, find_spans, longest_matches
from provenant.attribution.spans_index import encode_tokens

VOCAB = 32_000
MIN_LENGTH = 8
QUERY_LENGTH = 256


def generate(n_tokens: int, seed: int, bank_seed: int = 12345) -> np.ndarray:
    """A seeded phrase-mixture token stream of exactly n_tokens ids."""
    bank_rng = np.random.default_rng(bank_seed)
    lengths = bank_rng.integers(3, 13, size=50_000)
    flat = (bank_rng.zipf(1.3, size=int(lengths.sum())) - 1) % VOCAB
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(seed)
    picks = (rng.zipf(1.1, size=n_tokens // 5) - 1) % len(lengths)
    singles = rng.random(len(picks)) < 0.2
    piece_len = np.where(singles, 1, lengths[picks])
    piece_start = np.where(singles, -1, starts[picks])
    total = np.cumsum(piece_len)
    keep = int(np.searchsorted(total, n_tokens)) + 1
    piece_len, piece_start, singles = piece_len[:keep], piece_start[:keep], singles[:keep]
    offsets = np.arange(int(piece_len.sum())) - np.repeat(np.cumsum(piece_len) - piece_len, piece_len)
    out = flat[np.repeat(np.maximum(piece_start, 0), piece_len) + offsets]
    single_mask = np.repeat(singles, piece_len)
    out[single_mask] = rng.integers(0, VOCAB, size=int(single_mask.sum()))
    return out[:n_tokens].astype(np.int64)


def documents(stream: np.ndarray, seed: int) -> list[SpanDocument]:
    rng = np.random.default_rng(seed)
    docs: list[SpanDocument] = []
    at = 0
    while at < len(stream):
        length = int(rng.integers(64, 1025))
        docs.append(SpanDocument(len(docs) // 50, len(docs) % 50, stream[at:at + length]))
        at += length
    return docs


def queries(stream: np.ndarray, count: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    novel = generate(QUERY_LENGTH * count, seed=seed + 1, bank_seed=54321)  # another phrase bank
    out: list[tuple[str, np.ndarray]] = []
    for q in range(count):
        if q % 2 == 0:
            start = int(rng.integers(0, len(stream) - QUERY_LENGTH))
            window = stream[start:start + QUERY_LENGTH].copy()
            edits = rng.integers(0, QUERY_LENGTH, size=QUERY_LENGTH // 32)
            window[edits] = rng.integers(0, VOCAB, size=len(edits))
            out.append(("copied", window))
        else:
            out.append(("novel", novel[q * QUERY_LENGTH:(q + 1) * QUERY_LENGTH]))
    return out


def boilerplate_queries(count: int, seed: int) -> list[np.ndarray]:
    """Worst case: outputs made of the corpus's most frequent phrases (>= MIN_LENGTH tokens each, up
    to ~10^5 occurrences), separated by one rare token, so every span is short and very common."""
    bank_rng = np.random.default_rng(12345)
    lengths = bank_rng.integers(3, 13, size=50_000)
    flat = (bank_rng.zipf(1.3, size=int(lengths.sum())) - 1) % VOCAB
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    common = [int(r) for r in np.flatnonzero(lengths >= MIN_LENGTH)[:60]]  # lowest ranks = most frequent
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        parts: list[np.ndarray] = []
        for r in rng.permutation(common):
            parts += [flat[starts[r]:starts[r] + lengths[r]], rng.integers(VOCAB - 1000, VOCAB, size=1)]
        out.append(np.concatenate(parts)[:QUERY_LENGTH].astype(np.int64))
    return out


def naive_longest(corpus: np.ndarray, output: np.ndarray) -> list[int]:
    """Baseline 1: for each start, narrow candidate positions one token at a time (numpy scans)."""
    lengths = []
    for i in range(len(output)):
        candidates = np.flatnonzero(corpus == output[i])
        k = 0
        while len(candidates):
            k += 1
            if i + k == len(output):
                break
            candidates = candidates[corpus[np.minimum(candidates + k, len(corpus) - 1)] == output[i + k]]
        lengths.append(k)
    return lengths


def kgram_hashes(tokens: np.ndarray, k: int) -> np.ndarray:
    h = np.zeros(len(tokens) - k + 1, dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for j in range(k):
        h = (h * mult) ^ tokens[j:len(tokens) - k + 1 + j].astype(np.uint64)
    return h


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--naive-queries", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32_000, help="e.g. 128256 for 3-byte tokens")
    args = parser.parse_args()
    global VOCAB
    VOCAB = args.vocab
    result: dict[str, object] = {"machine": f"{platform.machine()} {os.cpu_count()} cores",
                                 "loadavg_start": os.getloadavg(), "tokens": args.tokens, "vocab": VOCAB}

    t0 = time.perf_counter()
    stream = generate(args.tokens, seed=7)
    docs = documents(stream, seed=8)
    result["generate_s"] = round(time.perf_counter() - t0, 2)
    result["documents"], result["contributions"] = len(docs), docs[-1].contribution_id + 1

    t0 = time.perf_counter()
    index = build_span_index(docs, VOCAB)
    result["build_s"] = round(time.perf_counter() - t0, 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spans.safetensors"
        t0 = time.perf_counter()
        index.save(path)
        result["save_s"] = round(time.perf_counter() - t0, 2)
        size = path.stat().st_size
        result["file_bytes"], result["bytes_per_token"] = size, round(size / args.tokens, 3)
        t0 = time.perf_counter()
        loaded = SpanIndex.load(path)
        result["load_mmap_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        del index

        qs = queries(stream, args.queries, seed=9)
        for _, q in qs[:4]:  # warm the page cache and code paths
            find_spans(loaded, q, min_length=MIN_LENGTH)
        latency: dict[str, list[float]] = {"copied": [], "novel": []}
        coverage: dict[str, list[float]] = {"copied": [], "novel": []}
        cpu: list[float] = []  # this thread's CPU time: the cost without the other sessions' contention
        for kind, q in qs:
            t0, c0 = time.perf_counter(), time.thread_time()
            res = find_spans(loaded, q, min_length=MIN_LENGTH)
            latency[kind].append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.thread_time() - c0) * 1e3)
            coverage[kind].append(float(res.coverage))
        boiler_ms, boiler_cpu, boiler_count = [], [], []
        for q in boilerplate_queries(10, seed=10):
            t0, c0 = time.perf_counter(), time.thread_time()
            res = find_spans(loaded, q, min_length=MIN_LENGTH)
            boiler_ms.append((time.perf_counter() - t0) * 1e3)
            boiler_cpu.append((time.thread_time() - c0) * 1e3)
            boiler_count.append(sum(sp.count for sp in res.spans))
        result["boilerplate_ms"] = {"p50": round(percentile(boiler_ms, 50), 2), "max": round(max(boiler_ms), 2),
                                    "cpu_p50": round(percentile(boiler_cpu, 50), 2), "cpu_max": round(max(boiler_cpu), 2),
                                    "occurrences_per_query_mean": int(np.mean(boiler_count))}
        every = latency["copied"] + latency["novel"]
        result["ours_ms"] = {"p50": round(percentile(every, 50), 2), "p99": round(percentile(every, 99), 2),
                             "max": round(max(every), 2),
                             **{f"{k}_p50": round(percentile(v, 50), 2) for k, v in latency.items()}}
        result["ours_cpu_ms"] = {"p50": round(percentile(cpu, 50), 2), "p99": round(percentile(cpu, 99), 2)}
        result["coverage_mean"] = {k: round(float(np.mean(v)), 3) for k, v in coverage.items()}

        # Baseline 1: naive numpy scan over the same token stream with row sentinels.
        corpus = loaded.token_ids()
        naive_ms, agree = [], True
        for _, q in qs[:args.naive_queries]:
            t0 = time.perf_counter()
            expected = naive_longest(corpus, q)
            naive_ms.append((time.perf_counter() - t0) * 1e3)
            agree &= expected == longest_matches(loaded, encode_tokens(q, loaded.width))
        result["naive_scan_ms"] = {"p50": round(percentile(naive_ms, 50), 1), "queries": len(naive_ms),
                                   "same_longest_matches": agree}

        # Baseline 2: sorted k-gram hash table over the same stream (no row boundaries).
        t0 = time.perf_counter()
        hashes = kgram_hashes(stream, MIN_LENGTH)
        order = np.argsort(hashes, kind="stable").astype(np.uint32)
        table = hashes[order]
        result["kgram_build_s"] = round(time.perf_counter() - t0, 2)
        result["kgram_bytes_per_token"] = round((table.nbytes + order.nbytes) / args.tokens, 3)
        kgram_ms = []
        for _, q in qs:
            t0 = time.perf_counter()
            qh = kgram_hashes(q, MIN_LENGTH)
            lo = np.searchsorted(table, qh, side="left")
            hi = np.searchsorted(table, qh, side="right")
            hits = [order[a:b] for a, b in zip(lo.tolist(), hi.tolist()) if b > a]
            kgram_ms.append((time.perf_counter() - t0) * 1e3)
            del hits
        result["kgram_ms"] = {"p50": round(percentile(kgram_ms, 50), 3), "p99": round(percentile(kgram_ms, 99), 3)}
        ours_p50 = result["ours_ms"]["p50"]  # type: ignore[index]
        result["ratio_naive_over_ours_p50"] = round(result["naive_scan_ms"]["p50"] / ours_p50, 1)  # type: ignore[index]
        result["ratio_ours_over_kgram_p50"] = round(ours_p50 / result["kgram_ms"]["p50"], 1)  # type: ignore[index]
        del loaded
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
