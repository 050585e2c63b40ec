"""Exec a program so that it dies with its parent: `python -m clarion.gateway.launcher <parent pid> <program> [args]`.

PR_SET_PDEATHSIG is set here, in a fresh single-threaded process that then becomes the program (same pid), rather
than in a subprocess `preexec_fn`: that would make clarion fork() while gRPC's threads run, which is unsafe (gRPC
says so on stderr). Elsewhere than Linux it only execs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    """Arrange SIGTERM on the parent's death, then replace this process with the program."""
    if len(argv) < 3:
        sys.stderr.write("usage: python -m clarion.gateway.launcher <parent pid> <program> [args...]\n")
        return 2
    parent_pid, program, args = int(argv[1]), argv[2], argv[3:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            sys.stderr.write(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}\n")
            return 1
        # The parent may have died before the prctl, and then nobody would ever signal us.
        if os.getppid() != parent_pid:
            return 1
    os.execv(program, [program, *args])  # noqa: S606  # replacing this process is the point; no shell is involved


if __name__ == "__main__":
    sys.exit(main(sys.argv))
