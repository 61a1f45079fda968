"""A pre-forked `provenant claim` runner for tests/test_settlement_claim_crash.py.

Importing the CLI costs ~2 s; the crash test kills a claiming process 50 times. So this process
imports once, then for each `go` line on stdin forks a child that runs the real command,
`provenant claim --key-env CLAIM_KEY_<i>`, for every claimant in turn, and reports the child's pid
(for the test's SIGKILL) and its exit status. It starts no threads before forking.
Keys come only from the environment (CLAIM_KEY_0..N-1); nothing here prints them.
"""

from __future__ import annotations

import sys

import provenant.settlement.claims  # noqa: F401 - the command's lazy imports (torch among them: ~10 s),
import provenant.settlement.claims_index  # noqa: F401 - done once here so that kills land on claiming
from provenant.cli import app
from zygote_support import serve_forks


def _claim_everyone(rpc_url: str, home: str, claimants: int) -> int:
    for i in range(claimants):
        try:
            app(["claim", "--rpc-url", rpc_url, "--home", home, "--key-env", f"CLAIM_KEY_{i}"],
                standalone_mode=False)
            sys.stdout.flush()  # a killed child loses what it has not flushed
        except Exception as exc:  # noqa: BLE001 - report and fail the run, as the CLI would
            print(f"claimant {i} failed: {type(exc).__name__}: {exc}", flush=True)
            return 1
    return 0


def main() -> None:
    rpc_url, home, claimants = sys.argv[1], sys.argv[2], int(sys.argv[3])
    serve_forks(lambda args: _claim_everyone(rpc_url, home, claimants))


if __name__ == "__main__":
    main()
