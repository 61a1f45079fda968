"""One process of a 2-process torchrun training (tests/test_factory_replicas.py).

Trains the same causal-LM and classifier adapters the test trains in one process, with the batches
split across the processes; rank 0 writes the adapter bytes to the folder named on the command line.
An optional second argument names the device (default cpu; bench/gpu_checks.sh passes cuda and
"lm" as a third to train the causal LM only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from provenant.factory.train import fit_classifier
from provenant.factory.train_lm import fit_causal_lm

sys.path.insert(0, str(Path(__file__).parent))
from test_factory_replicas import CLS_ROWS, CLS_SETTINGS, LM_ROWS, LM_SETTINGS, without_base_dropout  # noqa: E402

torch.set_num_threads(1)
out = Path(sys.argv[1])
device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
lm, _ = fit_causal_lm(LM_ROWS, LM_SETTINGS, "tiny-llama", device=device)
cls = None
if sys.argv[3:] != ["lm"]:
    with without_base_dropout():
        cls, _ = fit_classifier(CLS_ROWS, CLS_SETTINGS, "tiny-encoder", device=device)
if dist.get_rank() == 0:
    (out / "lm.safetensors").write_bytes(lm.adapter_bytes)
    if cls is not None:
        (out / "cls.safetensors").write_bytes(cls.adapter_bytes)
    (out / "processes").write_text(str(lm.metrics["processes"]))
    (out / "device").write_text(lm.metrics["device"])
dist.destroy_process_group()
