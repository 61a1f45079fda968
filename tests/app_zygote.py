"""A pre-forked `provenant app` runner for tests/test_api_crash.py.

Importing the backend costs ~1 s, and the crash test starts it 51 times. So this process imports
once, then for each `go <port> <log>` line on stdin forks a child that runs the real command,
`provenant app --port <port>`, with its output appended to <log>, and reports the child's pid
(for the test's SIGKILL) and, once it is gone, its exit status. It starts no threads before forking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasketch  # noqa: F401 - the upload path's lazy imports, done once here so that kills
import uvicorn  # noqa: F401 - land on uploads rather than on imports
from provenant.api.app import create_app  # noqa: F401
from provenant.cli import app
from zygote_support import serve_forks


def _run_app(args: Sequence[str]) -> int:
    port, log = args
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    app(["app", "--port", port], standalone_mode=False)
    return 0


if __name__ == "__main__":
    serve_forks(_run_app)
