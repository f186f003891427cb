"""``python -I session_guard.py <task pid> <command...>``: runs an SSM session command
(``aws ssm start-session``) as the guard of its process group.

The AWS CLI starts session-manager-plugin, which does the forwarding, and neither passes on a
signal nor dies with the other: a parent-death signal on the CLI alone leaves the plugin serving
the tunnel after its task was SIGKILLed. The guard leads the group (a session of its own), gets
the parent-death signal itself, and on it (or on the task's own SIGTERM of the group), or when the
command ends by itself, stops the whole group: SIGTERM, and SIGKILL for whatever is left after a
grace period. Standard library only, run by path: it starts with every tunnel.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

PR_SET_PDEATHSIG = 1
GRACE_S = 5.0


def others_in_group() -> bool:
    """Whether a process other than the guard is still in its group (zombies do not count)."""
    me, group = os.getpid(), os.getpgid(0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) != me and fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def end_group() -> None:
    """SIGTERM the rest of the group, SIGKILL what is left after the grace period."""
    os.killpg(0, signal.SIGTERM)  # the guard's own handler only records it
    deadline = time.monotonic() + GRACE_S
    while others_in_group() and time.monotonic() < deadline:
        time.sleep(0.05)
    if others_in_group():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.killpg(0, signal.SIGKILL)  # the guard goes last, with them


def main(argv: list[str]) -> int:
    task, command = int(argv[0]), argv[1:]
    if os.getpgid(0) != os.getpid():  # never stop the caller's group: lead one of our own
        os.setsid()
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)  # acted on by the loop below (also when it comes before the start)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != task:  # the task died before the signal was armed
        return 1
    child = subprocess.Popen(command)  # in the guard's group: the CLI, and the plugin it starts
    code: int | None = None
    while code is None and not stopping:
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = child.wait(timeout=1.0)
    end_group()  # stopped, or the CLI ended by itself: nothing of the session outlives the guard
    with contextlib.suppress(subprocess.TimeoutExpired):
        code = child.wait(timeout=GRACE_S)
    return code if code is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
