"""The backend starts without torch (issue 10's crash test restarts it 50 times; each torch import
costs ~4 s on the CI machine). Torch, transformers and peft load with the first training job,
model load or attribution, never at start."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "peft")


def test_backend_modules_import_without_torch() -> None:
    code = ("import sys\n"
            "import provenant.api.app, provenant.settlement.api, provenant.settlement.claims_index\n"
            "import provenant.cli, provenant_indexer.api\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"importing the backend loaded {loaded}: import it inside the function that needs it"
