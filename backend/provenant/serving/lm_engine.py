"""Many LoRA adapters over one shared causal-LM base, batched together in one forward pass.

Every linear layer of the base's decoder blocks is wrapped in a `GroupedLoraLinear` that adds, per
request row, that row's own adapter: `y = x W^T + b + ((x A_r^T) B_r^T) * scale_r` as two batched
matmuls over per-row gathered A and B (rows without an adapter, and adapters without that module,
get zeros, which add exactly nothing). So one forward pass serves a batch that mixes any adapters of
one base (the Punica/S-LoRA idea, without custom kernels). The base weight tensors are shared with
the process-wide base model, never copied or modified.

`LmEngine` adds dynamic (continuous) batching: a worker thread keeps one running batch; between
decode steps, queued requests are prefilled together (left padding) and merged into it (their KV
caches left-padded to one length, the padding masked out), and finished rows leave it. Decoding is
greedy with a KV cache; each token goes to its request's handle as it is produced (streaming, TTFT).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from provenant.factory.base_models import CausalBaseModel
from provenant.serving.lora import LoraWeights


class _LoraContext:
    """The adapters of the batch being run: module path -> (A^T (B, in, r), B^T (B, r, out)), and
    each row's LoRA scale (B, 1, 1)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.scales: torch.Tensor | None = None
        self.scale: float | None = None  # set when every row has the same scale (rows without an adapter have zeros)


class GroupedLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, path: str, ctx: _LoraContext) -> None:
        super().__init__()
        self.base, self.path, self.ctx = base, path, ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.base.weight, self.base.bias)
        lora = self.ctx.rows.get(self.path)
        if lora is not None:
            if self.ctx.scale is not None:  # one scale for all rows (the usual case): fused add
                return torch.baddbmm(y, torch.bmm(x, lora[0]), lora[1], alpha=self.ctx.scale)
            y = y + torch.bmm(torch.bmm(x, lora[0]), lora[1]) * self.ctx.scales
        return y


def _vocab_size(tokenizer: object) -> int:
    return int(getattr(tokenizer, "vocab_size", 0) or len(tokenizer))  # type: ignore[arg-type]


class MultiLoraModel:
    """A view of the shared base whose decoder linears take per-row adapters; one batch at a time."""

    def __init__(self, base: CausalBaseModel) -> None:
        shared = {id(t): t for t in itertools.chain(base.model.parameters(), base.model.buffers())}
        self.model = copy.deepcopy(base.model, memo=shared)  # new module tree, same tensors
        self.base = base
        self.ctx = _LoraContext()
        self.vocab = _vocab_size(base.tokenizer)
        self.device = next(base.model.parameters()).device
        self.shapes: dict[str, tuple[int, int]] = {}
        for path, module in list(self.model.named_modules()):
            if isinstance(module, nn.Linear) and ".layers." in f".{path}":
                parent_path, _, leaf = path.rpartition(".")
                setattr(self.model.get_submodule(parent_path), leaf, GroupedLoraLinear(module, path, self.ctx))
                self.shapes[path] = (module.in_features, module.out_features)

    def use_adapters(self, adapters: Sequence[LoraWeights | None]) -> None:
        """The rows' adapters for direct calls of `self.model` (tests, benchmarks); the engine's
        running batches carry their own."""
        gathered = self._gather(adapters)
        self.ctx.rows, self.ctx.scales, self.ctx.scale = gathered.rows, gathered.scales, gathered.scale

    def _gather(self, adapters: Sequence[LoraWeights | None]) -> "_Gathered":
        """Gather each row's A^T and B^T for every module any row adapts: one stack of the batch's
        distinct adapters per module, indexed by row (a zero slot for rows without that module).
        A running batch keeps its gathered tensors until rows leave or join it (`RunningBatch.lora`):
        re-gathering at every decode step cost 2 small copies per adapted linear per token."""
        rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        distinct: list[LoraWeights] = []
        slots: dict[int, int] = {}
        for a in adapters:
            if a is not None and id(a) not in slots:
                slots[id(a)] = len(distinct) + 1  # slot 0: zeros
                distinct.append(a)
        if not distinct:
            return _Gathered(rows, None, None)
        r = max(a.rank for a in distinct)
        index = torch.tensor([0 if a is None else slots[id(a)] for a in adapters], device=self.device)
        scales = torch.tensor([0.0 if a is None else a.scale for a in adapters], device=self.device).view(-1, 1, 1)
        distinct_scales = {a.scale for a in distinct}
        scale = distinct_scales.pop() if len(distinct_scales) == 1 else None
        for path in sorted({p for a in distinct for p in a.modules}):
            if path not in self.shapes:
                raise ValueError(f"adapter module {path} is not a linear layer of the served base")
            n_in, n_out = self.shapes[path]
            zero_a = torch.zeros(n_in, r, device=self.device)
            zero_b = torch.zeros(r, n_out, device=self.device)
            a_stack = torch.stack([zero_a] + [a.transposed(path, r)[0] if path in a.modules else zero_a
                                              for a in distinct])
            b_stack = torch.stack([zero_b] + [a.transposed(path, r)[1] if path in a.modules else zero_b
                                              for a in distinct])
            rows[path] = (a_stack[index], b_stack[index])
        return _Gathered(rows, scales, scale)

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]], adapters: Sequence[LoraWeights | None]) -> "RunningBatch":
        """Run the prompts (left-padded, so every row's last prompt token is at -1) into a fresh KV cache."""
        from transformers import DynamicCache

        n, length = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros((n, length), dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, length - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, length - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        batch = RunningBatch(adapters=list(adapters), cache=DynamicCache(), mask=mask, positions=positions[:, -1:],
                             tokens=torch.empty(0))
        self._forward(batch, ids, positions)
        return batch

    def _forward(self, batch: "RunningBatch", ids: torch.Tensor, positions: torch.Tensor) -> None:
        if batch.lora is None:
            batch.lora = self._gather(batch.adapters)
        self.ctx.rows, self.ctx.scales, self.ctx.scale = batch.lora.rows, batch.lora.scales, batch.lora.scale
        try:
            out = self.model(input_ids=ids, attention_mask=batch.mask, position_ids=positions, cache=batch.cache,
                             use_cache=True, logits_to_keep=1)
        finally:
            self.ctx.rows, self.ctx.scales, self.ctx.scale = {}, None, None
        batch.tokens = out.logits[:, -1, : self.vocab].argmax(dim=-1)

    @torch.inference_mode()
    def decode(self, batch: "RunningBatch") -> None:
        """One greedy step: feed each row's last token, get its next one."""
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.adapters), 1), dtype=torch.long,
                                                       device=self.device)], dim=1)
        batch.positions = batch.positions + 1
        self._forward(batch, batch.tokens[:, None], batch.positions)

    @staticmethod
    def select(batch: "RunningBatch", keep: list[int]) -> "RunningBatch":
        """Only the rows `keep` (finished rows leave the batch, so they cost nothing more)."""
        index = torch.tensor(keep, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        return RunningBatch(adapters=[batch.adapters[i] for i in keep], cache=batch.cache, mask=batch.mask[index],
                            positions=batch.positions[index], tokens=batch.tokens[index])

    @staticmethod
    def merge(a: "RunningBatch", b: "RunningBatch") -> "RunningBatch":
        """Rows of b join a running batch: caches and masks left-padded to one length (the padding is
        masked out), concatenated along the batch; each row keeps its own positions."""
        from transformers import DynamicCache

        length = max(a.mask.shape[1], b.mask.shape[1])

        def pad(t: torch.Tensor, dim_from_end: int) -> torch.Tensor:
            missing = length - t.shape[-dim_from_end]
            return t if missing == 0 else F.pad(t, (0, 0) * (dim_from_end - 1) + (missing, 0))

        layers = [(torch.cat([pad(la.keys, 2), pad(lb.keys, 2)]), torch.cat([pad(la.values, 2), pad(lb.values, 2)]))
                  for la, lb in zip(a.cache.layers, b.cache.layers)]
        return RunningBatch(adapters=a.adapters + b.adapters, cache=DynamicCache(ddp_cache_data=layers),
                            mask=torch.cat([pad(a.mask, 1), pad(b.mask, 1)]),
                            positions=torch.cat([a.positions, b.positions]), tokens=torch.cat([a.tokens, b.tokens]))

    def generate(self, prompts: Sequence[Sequence[int]], adapters: Sequence[LoraWeights | None],
                 max_new_tokens: Sequence[int], emit: Callable[[int, int], None],
                 stop_tokens: Sequence[int | None] | None = None) -> None:
        """Greedy decoding of one mixed batch; `emit(row, token)` per token. A row ends after its
        max_new_tokens or on its stop token (which is emitted; None: no stop token)."""
        stops = list(stop_tokens) if stop_tokens is not None else [None] * len(prompts)
        remaining = list(max_new_tokens)
        rows = [i for i in range(len(prompts)) if remaining[i] > 0]
        if not rows:
            return
        batch = self.prefill([prompts[i] for i in rows], [adapters[i] for i in rows])
        while True:
            keep = []
            for j, token in enumerate(batch.tokens.tolist()):
                i = rows[j]
                emit(i, token)
                remaining[i] -= 1
                if remaining[i] > 0 and token != stops[i]:
                    keep.append(j)
            if not keep:
                return
            if len(keep) < len(rows):
                batch, rows = self.select(batch, keep), [rows[j] for j in keep]
            self.decode(batch)


@dataclass
class RunningBatch:
    """Rows being decoded together: their adapters, KV cache, attention mask, last positions, and
    the next token of each row (from the last forward pass)."""

    adapters: list[LoraWeights | None]
    cache: object  # transformers DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    tokens: torch.Tensor
    lora: "_Gathered | None" = None  # the rows' gathered adapters, kept while the rows stay the same


@dataclass(frozen=True)
class _Gathered:
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module path -> (A^T (B, in, r), B^T (B, r, out))
    scales: torch.Tensor | None  # (B, 1, 1)
    scale: float | None  # one scale shared by every adapted row


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    adapter: LoraWeights | None
    max_new_tokens: int
    ignore_eos: bool = False


_DONE = object()


@dataclass
class Generation:
    """A submitted request's tokens as they come; iterate synchronously or with `async for`."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop | None = None
    tokens: list[int] = field(default_factory=list)
    error: BaseException | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    _sync: "queue.Queue[object]" = field(default_factory=queue.Queue)
    _async: "asyncio.Queue[object] | None" = None

    def __post_init__(self) -> None:
        if self.loop is not None:
            self._async = asyncio.Queue()

    def _put(self, item: object) -> None:
        if self._async is not None and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._async.put_nowait, item)
            except RuntimeError:  # its event loop is closed (server shutting down): nobody listens
                pass
        else:
            self._sync.put(item)

    def _token(self, token: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.tokens.append(token)
        self._put(token)

    def _finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.finished_at = time.perf_counter()
        self._put(_DONE)

    def __iter__(self):  # type: ignore[no-untyped-def]
        while (item := self._sync.get()) is not _DONE:
            yield item
        if self.error is not None:
            raise self.error

    async def stream(self):  # type: ignore[no-untyped-def]
        assert self._async is not None, "submit(..., loop=...) for async consumption"
        while (item := await self._async.get()) is not _DONE:
            yield item
        if self.error is not None:
            raise self.error

    def result(self) -> list[int]:
        for _ in self:
            pass
        return self.tokens


class LmEngine:
    """Dynamic batching over a MultiLoraModel: one worker thread, FIFO, up to max_batch per pass."""

    def __init__(self, base: CausalBaseModel, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        self.base = base
        self.model = MultiLoraModel(base)
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        # Joining a running batch costs a prefill pass and a copy of the KV cache, so under steady
        # arrivals requests join in groups: once join_min are waiting or the oldest waited join_wait_s.
        self.join_min = max(1, max_batch // 8)
        self.join_wait_s = 10 * max_wait_s
        self._waiting_since: float | None = None
        self._queue: "queue.Queue[Generation]" = queue.Queue()
        self._stop = threading.Event()
        self.batches: list[int] = []  # size of every batch run (for tests and benchmarks)
        self._worker = threading.Thread(target=self._run, name="lm-engine", daemon=True)
        self._worker.start()

    def submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> Generation:
        generation = Generation(request=request, loop=loop)
        self._queue.put(generation)
        return generation

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=30)

    def _take_batch(self) -> list[Generation]:
        """Block for one request, then keep taking requests while they keep arriving less than
        max_wait_s apart (a burst joins one batch), up to max_batch or 20 gaps."""
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        hard_deadline = time.perf_counter() + 20 * self.max_wait_s
        while len(batch) < self.max_batch:
            wait = min(self.max_wait_s, hard_deadline - time.perf_counter())
            try:
                batch.append(self._queue.get(timeout=max(0.0, wait)))
            except queue.Empty:
                break
        return batch

    def _join(self, running: int) -> list[Generation]:
        """Requests to merge into a running batch of `running` rows (possibly none yet)."""
        room = self.max_batch - running
        if room <= 0 or self._queue.empty():
            self._waiting_since = None
            return []
        now = time.perf_counter()
        self._waiting_since = self._waiting_since or now
        if self._queue.qsize() < min(self.join_min, room) and now - self._waiting_since < self.join_wait_s:
            return []
        self._waiting_since = None
        return self._drain(room)

    def _drain(self, room: int) -> list[Generation]:
        taken: list[Generation] = []
        while len(taken) < room:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _run(self) -> None:
        """Continuous batching: between decode steps, queued requests are prefilled and join the
        running batch; rows leave it as soon as they finish."""
        rows: list[Generation] = []
        batch: RunningBatch | None = None
        while not self._stop.is_set():
            try:
                new = self._take_batch() if not rows else self._join(len(rows))
                if new:
                    self.batches.append(len(new))
                    fresh = self.model.prefill([g.request.prompt_ids for g in new], [g.request.adapter for g in new])
                    batch = fresh if batch is None else self.model.merge(batch, fresh)
                    rows = rows + new
                if batch is None:
                    continue
                keep = []
                for j, token in enumerate(batch.tokens.tolist()):
                    g = rows[j]
                    g._token(token)
                    stop = None if g.request.ignore_eos else self.base.eos_token_id
                    if len(g.tokens) < g.request.max_new_tokens and token != stop:
                        keep.append(j)
                    else:
                        g._finish()
                if not keep:
                    rows, batch = [], None
                    continue
                if len(keep) < len(rows):
                    batch, rows = self.model.select(batch, keep), [rows[j] for j in keep]
                self.model.decode(batch)
            except BaseException as exc:  # noqa: BLE001 - fail these requests, keep serving others
                for g in rows:
                    if g.finished_at is None:
                        g._finish(exc)
                rows, batch = [], None
