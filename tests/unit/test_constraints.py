"""constraints.txt must install on Debian 12's Python 3.11.2, or `make demo` stops in setup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def test_constraints_resolve_on_the_oldest_supported_python() -> None:
    # pip for Python 3.11.2 (wheels only, nothing installed), with network to PyPI; about 45 s
    pip = Path(sys.executable).with_name("pip")
    env = {**os.environ, "PIP": str(pip)} if pip.exists() else None
    done = subprocess.run(
        [str(PROJECT / "scripts" / "check-constraints.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
