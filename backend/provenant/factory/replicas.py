"""Data-parallel training across processes (torchrun), for builders who outgrow one GPU.

Launch the same command once per GPU, e.g. `torchrun --nproc_per_node 8 -m provenant train ...`
(or across machines with torchrun's `--nnodes`/`--rdzv-endpoint`). torchrun sets RANK, WORLD_SIZE
and LOCAL_RANK; `Replicas.from_env()` joins the process group (NCCL when every process has its own
GPU, else Gloo) and the shared loop (`provenant.factory.loop`) then splits every global mini-batch
across the processes: process r takes rows r, r+W, r+2W, ... of the batch.

Exactness: each process scales its local mean loss by (its weight / the batch's total weight) before
`backward`, and the gradients are summed across processes, so a step equals the single-process step
on the whole batch up to float summation order (the test checks 1e-5). With dropout > 0 each process
draws its own dropout masks, so the runs are equivalent in distribution, not in bits. Every process
holds the same trainable tensors after every step (same seed, same summed gradients), and only the
main process (rank 0) checkpoints, reports progress, stores and registers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Replicas:
    rank: int
    world: int
    comm: torch.device  # where collectives run: the GPU under NCCL, the CPU under Gloo

    @classmethod
    def from_env(cls, device: torch.device) -> "Replicas | None":
        """The process group torchrun describes, joined once per process; None when not distributed."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" and _one_gpu_per_local_process() else "gloo"
            dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
        comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), comm=comm)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Sequence[int]) -> list[int]:
        """This process's rows of a global mini-batch."""
        return list(batch[self.rank::self.world])

    def totals(self, weight: float, weighted_loss: float) -> tuple[float, float]:
        """(total weight, total weighted loss) of the global batch, summed over processes."""
        both = torch.tensor([weight, weighted_loss], dtype=torch.float64, device=self.comm)
        dist.all_reduce(both)
        return float(both[0]), float(both[1])

    def sum_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Sum every trainable gradient across processes, in one flat buffer (one collective per step)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.comm)
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.device, copy=True)
            offset += n

    def barrier(self) -> None:
        dist.barrier()


def _one_gpu_per_local_process() -> bool:
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return torch.cuda.is_available() and local_world <= torch.cuda.device_count()


class ReplicaFinished(Exception):
    """Raised in a non-zero rank of a torchrun job once training is done: rank 0 alone evaluates,
    indexes, stores and registers (the CLI exits quietly on it)."""

    @classmethod
    def raise_unless_main(cls) -> None:
        rank = int(os.environ.get("RANK", "0"))
        if rank != 0:
            raise cls(f"rank {rank} finished training; rank 0 stores and registers the model")
