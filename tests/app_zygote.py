"""A pre-forked `provenant app` runner for tests/test_api_crash.py.

Importing the backend costs ~1 s, and the crash test starts it 51 times. So this process imports
once, then for each `go <port> <log>` line on stdin forks a child that runs the real command,
`provenant app --port <port>`, with its output appended to <log>, and reports the child's pid
(for the test's SIGKILL) and, once it is gone, its exit status. It starts no threads before forking.
"""

from __future__ import annotations

import os
import sys

import datasketch  # noqa: F401 - the upload path's lazy imports, done once here so that kills
import uvicorn  # noqa: F401 - land on uploads rather than on imports
from provenant.api.app import create_app  # noqa: F401
from provenant.cli import app


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> None:
    _say("ready")
    for line in sys.stdin:
        command, *args = line.split()
        if command != "go":
            break
        port, log = args
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                app(["app", "--port", port], standalone_mode=False)
                code = 0
            finally:
                os._exit(code)
        _say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    main()
