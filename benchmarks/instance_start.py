"""Local instance start and stop, from a cached base (the cost every builder, test instance and
patch check pays), as medians over N rounds in one run.

    .venv/bin/python benchmarks/instance_start.py [--rounds 5] [--home DIR]

launch = launch_instance() until SSH answers (first round unpacks the base into the cache: reported
apart); ready = the first SSH command that succeeds; terminate = terminate_instance(). The same
script runs against an older checkout (PYTHONPATH=<checkout>/plugins) for a before/after: the
Platform API it uses has not changed. Needs root, mmdebstrap, systemd-nspawn and slirp4netns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--home", default="", help="store to use (default: a new temporary one)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="golden-bench-"))
    os.environ["GOLDEN_HOME"] = str(home)

    from golden_image.hooks.ssh import run_ssh
    from golden_image.platforms.local import LocalPlatform
    from golden_image.spec import LocalBootstrap

    platform = LocalPlatform(home)
    started = time.monotonic()
    base = platform.ensure_bootstrap(LocalBootstrap())
    build_s = time.monotonic() - started
    launches, ready, terminates = [], [], []
    for n in range(args.rounds + 1):
        started = time.monotonic()
        target = platform.launch_instance(
            base.image_id, role="test", family="bench", run_id=str(n), region="local"
        )
        launched = time.monotonic()
        run_ssh(target, "true")
        answered = time.monotonic()
        platform.terminate_instance(target.instance_id)
        ended = time.monotonic()
        if n == 0:
            first = launched - started  # includes unpacking the base into the cache
            continue
        launches.append(launched - started)
        ready.append(answered - started)
        terminates.append(ended - answered)
    result = {
        "code": str(Path(sys.modules["golden_image"].__file__ or "").parent),
        "base_build_s": round(build_s, 1),
        "first_launch_s": round(first, 2),
        "launch_s": round(statistics.median(launches), 2),
        "ready_s": round(statistics.median(ready), 2),
        "terminate_s": round(statistics.median(terminates), 2),
        "rounds": args.rounds,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
