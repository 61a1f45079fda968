"""Make the two in-repo packages importable without installing the distribution."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch is imported anywhere: nothing may download, and OpenMP must not busy-wait on 2 shared
# cores (with the default policy 2 threads ran up to 12x slower while another process used the CPU).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
TORCH_THREADS = int(os.environ.get("PROVENANT_TORCH_THREADS", str(min(2, os.cpu_count() or 1))))

_ROOT = Path(__file__).resolve().parent.parent
for _p in (_ROOT / "backend", _ROOT / "indexer"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

pytest_plugins = ["chain_fixtures"]


def pytest_runtest_setup(item) -> None:
    """Pin torch's intra-op threads explicitly for every test that runs with torch loaded (torch is
    not imported here, so suites without it do not pay for the import)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)
