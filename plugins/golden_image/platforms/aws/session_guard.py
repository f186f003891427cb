"""``python -I session_guard.py <task pid> <command...>``: runs an SSM session command
(``aws ssm start-session``) as the guard of its process group.

The AWS CLI starts session-manager-plugin, which does the forwarding, and neither passes on a
signal nor dies with the other: a parent-death signal on the CLI alone leaves the plugin serving
the tunnel after its task was SIGKILLed. The guard leads the group (a new session), gets the
parent-death signal itself, and on it (or on the task's own SIGTERM of the group) stops the whole
group: SIGTERM, and SIGKILL for whatever is left after a grace period. Standard library only, run
by path: it starts with every tunnel.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> int:
    task, command = int(argv[0]), argv[1:]
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's signal reaches the guard too
        stopping.append(signum)
        os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != task:  # the task died before the signal was armed
        return 1
    code = subprocess.Popen(command).wait()  # in the guard's group: the CLI, and the plugin it starts
    if stopping:
        deadline = time.monotonic() + GRACE_S
        while others_in_group() and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.killpg(0, signal.SIGKILL)  # what ignored SIGTERM, and the guard last
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
