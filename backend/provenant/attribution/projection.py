"""Seeded random projections of per-example gradients: P floats -> `dim` floats, the same map for every
row an index stores and every answer scored against it.

Two sketches, each a Johnson-Lindenstrauss map (E[<Rx, Ry>] = <x, y>), named in the index settings:
- "sparse" (the default since index format /4): every gradient coordinate goes to `SPARSE_NONZEROS`
  output coordinates, one in each of that many equal slices of its block, with a random sign, scaled
  by 1 / sqrt(SPARSE_NONZEROS) (Kane and Nelson's block construction). The map is a sparse matrix of
  P x SPARSE_NONZEROS entries (7.6 MB for the causal benchmark's Llama), built once per layout and kept;
  one answer's projection is a sparse product (2.2 ms against 26 ms for the Gaussian map, which reads
  P x dim floats: 306 MB on that model; measured, bench/RESULTS.md session 11).
- "gaussian" (indexes of formats /1 to /3): R ~ N(0, 1)^(P x dim) / sqrt(dim) in float32, regenerated
  chunk by chunk from per-chunk generators (optionally cached, `set_projection_cache`).
Either way each tensor's part of the map comes from its own seed (seed, tensor name, chunk), so the
projection of one tensor does not depend on the others, and sums run in float64 in a fixed order:
the same gradients give the same bits every time.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from provenant.factory.model import trainable_parameters
from provenant.serving.engine import Classifier

SKETCHES = ("sparse", "gaussian")
SPARSE_NONZEROS = 8  # output coordinates per gradient coordinate (at most the block's width)
CHUNK_ROWS = 8192  # Gaussian rows generated at once: 8192 x 1024 x 4 B = 32 MiB
THREAD_ROWS = 64  # a sparse projection uses another thread per this many rows (up to torch's thread count)


def module_of(tensor_name: str) -> str:
    """The module a trainable tensor belongs to: a LoRA pair (A, B) is one module, the head another."""
    return tensor_name.split(".lora_")[0] if ".lora_" in tensor_name else tensor_name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Projector:
    """x -> R^T x for one of the `SKETCHES`, seeded by `seed`.

    per_module=False: one projection of the whole gradient.
    per_module=True: the output is split into one block per module (a LoRA module's A and B, or the
    head), `dim // modules` coordinates each (the first `dim % modules` get one more), and each block
    is a projection of that module's gradient alone. The curvature is then fitted per block
    (block-diagonal, as EK-FAC and LoGra do per layer).
    """

    layout: tuple[tuple[str, int], ...]  # (tensor name, numel) in flattening order
    dim: int
    seed: int
    per_module: bool = False
    sketch: str = "sparse"

    def __post_init__(self) -> None:
        if self.sketch not in SKETCHES:
            raise ValueError(f"unknown projection sketch {self.sketch!r}; choose from {SKETCHES}")

    @classmethod
    def for_classifier(cls, classifier: Classifier, dim: int, seed: int, per_module: bool = False,
                       sketch: str = "sparse") -> "Projector":
        layout = tuple((name, p.numel()) for name, p in trainable_parameters(classifier.model))
        return cls(layout=layout, dim=dim, seed=seed, per_module=per_module, sketch=sketch)

    @property
    def layout_sha256(self) -> str:
        """Names the map's domain and kind: an index built with one map never answers another's query."""
        tag = ("/module-blocks" if self.per_module else "") + ("/sparse" if self.sketch == "sparse" else "")
        return hashlib.sha256((repr(self.layout) + tag).encode()).hexdigest()

    @property
    def modules(self) -> tuple[str, ...]:
        names: list[str] = []
        for name, _ in self.layout:
            if not names or names[-1] != module_of(name):
                names.append(module_of(name))
        return tuple(names)

    @property
    def block_slices(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each module's coordinates in the output; one block when not per_module."""
        if not self.per_module:
            return ((0, self.dim),)
        count = len(self.modules)
        if count > self.dim:
            raise ValueError(f"projection dim {self.dim} is below the number of modules ({count})")
        sizes = [self.dim // count + (1 if k < self.dim % count else 0) for k in range(count)]
        starts = [sum(sizes[:k]) for k in range(count)]
        return tuple((start, start + size) for start, size in zip(starts, sizes, strict=True))

    def _tensor_blocks(self) -> list[tuple[str, int, int, int]]:
        """(tensor name, numel, first output column, last output column + 1) in flattening order."""
        blocks = dict(zip(self.modules, self.block_slices, strict=True)) if self.per_module else None
        return [(name, numel, *(blocks[module_of(name)] if blocks is not None else (0, self.dim)))
                for name, numel in self.layout]

    def _chunk_seed(self, name: str, chunk: int) -> int:
        digest = hashlib.sha256(f"provenant-jl/{self.seed}/{name}/{chunk}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """(B, P) float32 -> (B, dim) float32; products are summed in float64."""
        total = sum(numel for _, numel in self.layout)
        if grads.ndim != 2 or grads.shape[1] != total:
            raise ValueError(f"expected (B, {total}) gradients, got {tuple(grads.shape)}")
        if self.sketch == "sparse":
            return self._project_sparse(grads)
        return self._project_gaussian(grads.to(torch.float32))

    def _project_sparse(self, grads: torch.Tensor) -> torch.Tensor:
        # scipy sums each output in ascending coordinate order, whatever the batch: a row projects to
        # the same bits alone or in any batch, so the batch can be split across threads (scipy's sparse
        # kernels release the GIL; 768 MiniLM rows: 202 ms on one thread, 105 ms on two)
        sparse_map = _sparse_map(self.layout, self.dim, self.seed, self.per_module)
        rows = grads.to(torch.float64).numpy()
        threads = max(1, min(torch.get_num_threads(), len(rows) // THREAD_ROWS))
        if threads == 1:
            return torch.from_numpy(rows @ sparse_map).to(torch.float32)
        parts = np.array_split(rows, threads)
        with ThreadPoolExecutor(threads) as pool:
            out = np.concatenate(list(pool.map(lambda part: part @ sparse_map, parts)))
        return torch.from_numpy(out).to(torch.float32)

    def _project_gaussian(self, grads: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(grads.shape[0], self.dim, dtype=torch.float64)
        offset = 0
        for name, numel, start_col, stop_col in self._tensor_blocks():
            for chunk, start in enumerate(range(0, numel, CHUNK_ROWS)):
                rows = min(CHUNK_ROWS, numel - start)
                matrix = _projection_chunk(self._chunk_seed(name, chunk), rows, stop_col - start_col)
                out[:, start_col:stop_col] += (grads[:, offset + start:offset + start + rows] @ matrix).to(torch.float64)
            offset += numel
        for start_col, stop_col in self.block_slices:  # each block is a JL map of its own module
            out[:, start_col:stop_col] /= (stop_col - start_col) ** 0.5
        return out.to(torch.float32)

    def sparse_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sparse map's entries, (output column, gradient coordinate, value) each of length
        P x nonzeros: per tensor, from one generator seeded by (seed, tensor name)."""
        columns, coordinates, values = [], [], []
        offset = 0
        for name, numel, start_col, stop_col in self._tensor_blocks():
            width = stop_col - start_col
            nonzeros = min(SPARSE_NONZEROS, width)
            generator = torch.Generator().manual_seed(self._chunk_seed("sparse/" + name, 0))
            edges = [start_col + j * width // nonzeros for j in range(nonzeros + 1)]
            for j in range(nonzeros):  # one column in each slice: no two land on the same output
                columns.append(torch.randint(edges[j], edges[j + 1], (numel,), generator=generator).numpy())
                signs = torch.randint(0, 2, (numel,), generator=generator).numpy() * 2.0 - 1.0
                values.append(signs / nonzeros ** 0.5)
                coordinates.append(np.arange(offset, offset + numel))
            offset += numel
        return np.concatenate(columns), np.concatenate(coordinates), np.concatenate(values)


@functools.lru_cache(maxsize=8)
def _sparse_map(layout: tuple[tuple[str, int], ...], dim: int, seed: int, per_module: bool) -> scipy.sparse.csr_matrix:
    """The sparse map (P x dim) as CSR; a few MB, kept for the last 8 layouts."""
    columns, coordinates, values = Projector(layout, dim, seed, per_module).sparse_entries()
    total = sum(numel for _, numel in layout)
    matrix = scipy.sparse.csr_matrix((values, (coordinates, columns)), shape=(total, dim))
    matrix.sort_indices()
    return matrix


class _BlockCache:
    """Least-recently-used Gaussian blocks under a byte budget; thread-safe; off (0 bytes) by default."""

    def __init__(self) -> None:
        self.max_bytes, self.bytes = 0, 0
        self.blocks: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None:
        with self.lock:
            block = self.blocks.get(key)
            if block is not None:
                self.blocks.move_to_end(key)
            return block

    def put(self, key: tuple[int, int, int], block: torch.Tensor) -> None:
        with self.lock:
            if key not in self.blocks and block.numel() * 4 <= self.max_bytes:
                self.blocks[key] = block
                self.bytes += block.numel() * 4
            self._shrink()

    def resize(self, max_bytes: int) -> None:
        with self.lock:
            self.max_bytes = max_bytes
            self._shrink()

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes:
            _, block = self.blocks.popitem(last=False)
            self.bytes -= block.numel() * 4


_BLOCKS = _BlockCache()


def _projection_chunk(chunk_seed: int, rows: int, dim: int) -> torch.Tensor:
    """A (rows, dim) N(0, 1) float32 block from its own generator (or the cache, when enabled)."""
    block = _BLOCKS.get((chunk_seed, rows, dim))
    if block is None:
        block = torch.randn(rows, dim, generator=torch.Generator().manual_seed(chunk_seed), dtype=torch.float32)
        _BLOCKS.put((chunk_seed, rows, dim), block)
    return block


def set_projection_cache(max_bytes: int) -> None:
    """Keep up to `max_bytes` of generated Gaussian projection blocks in memory, least recently used out.

    Off by default. Generating the blocks dominates a single query (~0.5 s for MiniLM r=8 at
    dim 1024 on 2 cores, ~0.1 s with the blocks cached); a server attributing every call should
    enable it: ~300 MB covers every adapter sharing one layout (base, rank, targets, seed, dim).
    Scores are identical with or without it: a cached block is exactly what its generator makes.
    Only the Gaussian sketch reads these blocks; the sparse map is always kept (`_sparse_map`).
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    _BLOCKS.resize(int(max_bytes))
