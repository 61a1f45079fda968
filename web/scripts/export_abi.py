"""Write web/src/generated/abi.json: the ABIs the web app calls, from the same compile step the
backend deploys with (provenant.chain.compile). Run after changing contracts/src:

    .venv/bin/python web/scripts/export_abi.py

The file is committed so that `npm run build` needs neither Python nor solc; tests/test_web_abi.py
fails when it no longer matches the contracts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "backend"))

from provenant.chain.compile import compile_contracts  # noqa: E402

OUT = ROOT / "web" / "src" / "generated" / "abi.json"


def abis() -> dict[str, list[dict]]:
    return {name: artifact.abi for name, artifact in sorted(compile_contracts().items())}


def render() -> str:
    return json.dumps(abis(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}")
