"""The team stack as processes (tests/cluster/stack.py): what a run costs there (issue 11 part 3).

    .venv/bin/python benchmarks/cluster.py [--families 20] [--rounds 2] [--concurrency 2]

Postgres and Redis (Debian's, private instances), scheduler, dag-processor, triggerer, api-server
and two Celery workers (A: `default,local-bake`, B: `default`, --concurrency slots each) on
127.0.0.1, runs triggered and read through the REST API only. In one store and one stack:

  first bake:     debian12-base baked once through the stack (publishes an image), then that
                  image published under --families generated family names (each its own family
                  file, pointer and catalogue row on the same archive, its manifest naming that
                  family's definition digest: the name and pointer are part of it)
  weekly no-op:   one run of every generated family, all triggered at once: wall time from the
                  first trigger to the last run's end, and worker slot-seconds held (per task, the
                  supervisor's workload duration in the worker's log: from taking the slot to
                  reaping the task process; the task instances' own running time beside it)
  forced bake:    debian12-base with force=true through the stack, alternating --rounds times
                  with the same steps as a plain script in this process (benchmarks/run.py
                  plain_bake, same store and cached base): the ratio stack / script
  start cost:     per task instance of the forced bakes, from the REST API and its logs: queued
                  until started (scheduler to Celery to the worker's task process), the worker's
                  DAG file parse (Airflow's own "Worker startup parse complete" line), and the gap
                  between a task's end and its downstream's start

Needs root, packer, mmdebstrap, Debian's postgresql and redis-server (`make setup-dev`). Results
are printed and written to benchmarks/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "plugins"), str(PROJECT / "benchmarks")]
BAKE_DAG = "golden_image__debian12_base"


def when(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else float("nan")


def run_through(stack: Any, dag_id: str, conf: dict[str, Any]) -> tuple[str, float]:
    started = time.perf_counter()
    run_id = stack.trigger(dag_id, conf)
    state = stack.wait_for_run(dag_id, run_id, 1800)
    assert state == "success", (dag_id, run_id, state)
    return run_id, time.perf_counter() - started


def workload_seconds(stack: Any) -> dict[str, float]:
    """Task instance id -> how long its Celery worker slot was held (the supervisor's "Workload
    finished ... duration=" line: from the slot's start to the task process's reaping)."""
    held: dict[str, float] = {}
    for log in stack.logs.glob("worker-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            found = re.search(r"Workload finished .*duration=([0-9.]+).*workload_id=([0-9a-f-]+)", line)
            if found:
                held[found.group(2)] = float(found.group(1))
    return held


def start_costs(stack: Any, run_id: str) -> dict[str, Any]:
    """Where a forced bake's time goes between its steps."""
    tis = stack.task_instances(BAKE_DAG, run_id)
    queued = [when(t["start_date"]) - when(t["queued_when"]) for t in tis if t["queued_when"]]
    parse_ms = []
    for ti in tis:
        for event in stack.task_log(ti):
            if event.get("event") == "Worker startup parse complete":
                parse_ms.append(float(event["dag_file_parse_ms"]))
    ends = sorted(when(t["end_date"]) for t in tis)
    starts = sorted(when(t["start_date"]) for t in tis)
    busy = sum(float(t["duration"] or 0) for t in tis)
    slots = workload_seconds(stack)
    held = sum(slots.get(t["id"], float("nan")) for t in tis)
    return {
        "tasks": len(tis),
        "queued_to_start_median_s": round(statistics.median(queued), 2),
        "queued_to_start_sum_s": round(sum(queued), 1),
        "worker_dag_parse_median_ms": round(statistics.median(parse_ms), 1) if parse_ms else None,
        "first_start_to_last_end_s": round(ends[-1] - starts[0], 1),
        "task_running_sum_s": round(busy, 1),
        "slot_seconds_held": round(held, 1),
    }


def publish_as(platform: Any, image_id: str, spec: Any) -> None:
    """Publish a copy of the catalogue row of ``image_id`` (same archive) as ``spec``'s image, its
    manifest naming ``spec``'s own definition digest: an unchanged image of that family."""
    import dataclasses
    import uuid

    from golden_image import paths
    from golden_image.definition import definition_digest

    row = platform.catalog.image(image_id)
    manifest = {
        **row.manifest,
        "family": spec.name,
        "definition": definition_digest(spec, paths.include_dir()),
    }
    copy = dataclasses.replace(
        row, image_id=f"img-{uuid.uuid4().hex[:16]}", family=spec.name, run_id=f"published-as-{spec.name}",
        manifest=manifest, regions=[],
    )  # fmt: skip
    copy = platform.catalog.add_image(copy, "local", platform.catalog.locations(image_id)["local"])
    platform.catalog.set_pointer(spec.pointer, "local", copy.image_id, "cluster-benchmark")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="slots per worker")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="an Airflow setting to try",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="golden-bc-", dir="/tmp"))  # short: instance sockets live here
    home, images = work / "home", work / "images"
    images.mkdir()
    os.environ.update(
        GOLDEN_HOME=str(home),
        GOLDEN_IMAGES_DIR=str(images),
        AIRFLOW_HOME=str(work / "local-airflow"),
        GOLDEN_VULNERABILITY_DATA=os.environ.get(
            "GOLDEN_VULNERABILITY_DATA", str(PROJECT / "tests" / "data" / "debian-security-tracker.json")
        ),
    )
    from run import plain_bake  # benchmarks/run.py
    from weekly_noop import write_families

    from golden_image.pipeline import DECISION_TASK, SUMMARY_TASK

    names = write_families(images, args.families)

    from golden_image.platforms import get_platform
    from golden_image.spec import load_families
    from tests.cluster.stack import Stack, Worker

    families = load_families(images, PROJECT / "include").families
    spec = families["debian12-base"]
    platform = get_platform(spec)
    platform.resolve_source(spec)  # the cached base, outside the timings
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"  # runs come from the REST API only
    env.update(setting.split("=", 1) for setting in args.set)
    workers = [
        Worker("worker-a", ("default", "local-bake"), args.concurrency),
        Worker("worker-b", ("default",), args.concurrency),
    ]
    stack = Stack(work / "stack", env=env, workers=workers)
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "slots": {w.name: w.concurrency for w in workers},
        "settings": args.set,
    }
    try:
        started = time.perf_counter()
        stack.start()
        results["stack_start_s"] = round(time.perf_counter() - started, 1)
        _, first = run_through(stack, BAKE_DAG, {"reason": "cluster benchmark"})
        results["first_bake_s"] = round(first, 1)
        image = platform.published_image(spec)
        assert image is not None
        for name in names:
            publish_as(platform, image.image_id, families[name])

        for name in names:  # parsed, unpaused: the weekly run below measures runs, not the DAG processor
            stack.wait_for_dag(families[name].dag_id)
            stack.request("PATCH", f"/api/v2/dags/{families[name].dag_id}", {"is_paused": False})
        started = time.perf_counter()
        runs = {n: stack.trigger(families[n].dag_id, {}) for n in names}
        states = {n: stack.wait_for_run(families[n].dag_id, r, 1800) for n, r in runs.items()}
        weekly = time.perf_counter() - started
        assert set(states.values()) == {"success"}, states
        held, running, ran = 0.0, 0.0, 0
        time.sleep(10)  # the last slots' "Workload finished" lines
        slots = workload_seconds(stack)
        for name, run_id in runs.items():
            for ti in stack.task_instances(families[name].dag_id, run_id):
                if ti["state"] == "success":
                    # a no-op run checks and writes its one-screen note; everything else skips
                    assert ti["task_id"] in (DECISION_TASK, SUMMARY_TASK), ("not a no-op", ti["task_id"])
                    running += float(ti["duration"] or 0)
                    held += slots[ti["id"]]
                    ran += 1
                else:
                    assert ti["state"] == "skipped", ti
        results["weekly_noop"] = {
            "families": len(names),
            "wall_s": round(weekly, 1),
            "task_instances_run": ran,
            "task_running_s": round(running, 1),
            "slot_seconds_held": round(held, 1),
            "slots": sum(w.concurrency for w in workers),
        }

        script, through, costs = [], [], []
        for n in range(args.rounds):  # alternate so machine noise hits both sides alike
            started = time.perf_counter()
            plain_bake(spec, platform, f"cluster-script-{n}")
            script.append(time.perf_counter() - started)
            run_id, took = run_through(stack, BAKE_DAG, {"force": True, "reason": "cluster benchmark"})
            through.append(took)
            time.sleep(10)  # the last slots' "Workload finished" lines (outside the timing)
            costs.append(start_costs(stack, run_id))
        s, a = statistics.median(script), statistics.median(through)
        results["forced_bake"] = {
            "plain_script_s": round(s, 1),
            "through_stack_s": round(a, 1),
            "ratio": round(a / s, 3),
            "rounds": args.rounds,
            "script_s": [round(x, 1) for x in script],
            "stack_s": [round(x, 1) for x in through],
        }
        results["start_cost"] = costs
    except BaseException:
        print(stack.tails(), file=sys.stderr)
        kept = Path(tempfile.mkdtemp(prefix="golden-bc-logs-", dir="/tmp"))
        for logs in (stack.logs, stack.work / "airflow" / "logs"):
            if logs.exists():
                shutil.copytree(logs, kept / logs.parent.name / logs.name)
        print(f"the stack's logs and the tasks' logs are kept in {kept}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        platform.janitor(older_than_s=0)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    print(json.dumps(results, indent=2))
    (PROJECT / "benchmarks" / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
