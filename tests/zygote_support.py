"""The fork-per-command loop shared by the test zygotes (claim_crash_zygote.py, app_zygote.py).

A zygote imports what its command needs once, says "ready", then for each `go [args...]` line on
stdin forks a child that runs the command and reports the child's pid (for the test's SIGKILL) and,
once it is gone, its exit status. It starts no threads before forking.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


def say(line: str) -> None:
    """One write(2) per line, so the parent's and a child's lines never interleave mid-line."""
    os.write(1, (line + "\n").encode())


def serve_forks(run_child: Callable[[Sequence[str]], int]) -> None:
    """Until stdin ends or a line is not `go ...`: fork, run `run_child(args)` in the child, report."""
    say("ready")
    for line in sys.stdin:
        command, *args = line.split() or [""]
        if command != "go":
            break
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_child(args)
            finally:
                sys.stdout.flush()  # a killed child loses what it has not flushed
                os._exit(code)
        say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"exit {os.waitstatus_to_exitcode(status)}")
