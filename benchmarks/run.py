"""Benchmarks, reported as ratios against a baseline measured in the same run.

    .venv/bin/python benchmarks/run.py [--parse-only] [--rounds N]

(a) parse: 200 generated families loaded by dags/golden_images.py in a cold process, as a ratio
    to a cold `import airflow.sdk` (the floor every DAG file pays). Target <= 1.3x.
(a') task parse: the DAG file parsed for one task of one of those 200 families (what each task
    process pays) as a ratio to the DAG processor's parse of all 200, both after `import
    airflow.sdk`.
(b) overhead: a forced local bake of debian12-base through Airflow (dag.test, in a process that
    has already run one DAG) as a ratio to the same steps called as a plain script, alternating,
    same cached base. Target <= 1.15x.
(c) rebake: wall time of that forced bake from the cached base. Target <= 60 s.

Needs root, packer and mmdebstrap for (b) and (c) (run `make setup` first). Results are printed
and written to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
PY = sys.executable


def cold(code: str, env: dict[str, str], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True, env=env, cwd=PROJECT)
        times.append(time.perf_counter() - started)
    return times


def bench_parse(work: Path, rounds: int) -> dict[str, float]:
    include = work / "include"
    shutil.copytree(PROJECT / "include", include)
    images = include / "images"
    template = (images / "debian12-base.yaml").read_text()
    for example in images.glob("*.yaml"):  # only the generated families are parsed
        example.unlink()
    for n in range(200):
        name = f"family-{n:03d}"
        text = template.replace("name: debian12-base", f"name: {name}").replace(
            "/golden/debian12-base/latest", f"/golden/{name}/latest"
        )
        (images / f"{name}.yaml").write_text(text)
    env = {**os.environ, "GOLDEN_IMAGES_DIR": str(images), "AIRFLOW_HOME": str(work / "airflow")}
    loader = (
        "import runpy; g = runpy.run_path('dags/golden_images.py'); "
        "n = sum(1 for k in g if k.startswith('golden_image__')); assert n == 200, n"
    )
    cold("import airflow.sdk", env, 1)  # warm the page cache for both sides
    base, parse = [], []
    for _ in range(rounds):  # alternate so machine noise hits both sides alike
        base += cold("import airflow.sdk", env, 1)
        parse += cold(loader, env, 1)
    b, p = statistics.median(base), statistics.median(parse)
    return {
        "import_airflow_sdk_s": round(b, 3),
        "load_200_families_s": round(p, 3),
        "ratio": round(p / b, 3),
        **bench_task_parse(env, rounds),
    }


def bench_task_parse(env: dict[str, str], rounds: int) -> dict[str, float]:
    """(a') what a worker's task process pays for the DAG file, after `import airflow.sdk` (the
    task runner has it): one family's DAG, reading only its files, as a ratio to the DAG
    processor's parse of all 200 in the same kind of process."""
    timed = (
        "import time, runpy, airflow.sdk; t = time.perf_counter(); "
        "g = runpy.run_path('dags/golden_images.py'); print(time.perf_counter() - t); "
        "n = sum(1 for k in g if k.startswith('golden_image__')); assert n == {n}, n"
    )
    task_env = {
        **env,
        "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "golden_image__family_100",
        "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "bake_packer",
    }

    def parse_s(code: str, run_env: dict[str, str]) -> float:
        done = subprocess.run([PY, "-c", code], check=True, env=run_env, cwd=PROJECT, capture_output=True)
        return float(done.stdout.decode().strip())

    full, task = [], []
    for _ in range(rounds):
        full.append(parse_s(timed.replace("{n}", "200"), env))
        task.append(parse_s(timed.replace("{n}", "1"), task_env))
    f, t = statistics.median(full), statistics.median(task)
    return {
        "processor_parse_200_s": round(f, 3),
        "task_parse_1_of_200_s": round(t, 3),
        "task_ratio": round(t / f, 3),
    }


def plain_bake(spec: Any, platform: Any, run_id: str) -> None:
    """A forced bake of ``spec`` as a plain script: the DAG's steps called in order, no Airflow
    (the baseline of (b) here and of benchmarks/cluster.py)."""
    from golden_image import steps
    from golden_image.hooks.ansible import AnsibleHook
    from golden_image.hooks.packer import PackerHook
    from golden_image.hooks.testinfra import TestinfraHook
    from golden_image.values import Target

    decision = steps.check_patches(spec, platform, run_id=run_id, force=True, reason="benchmark")
    builder = Target.from_dict(
        steps.launch(platform, spec, decision["source"]["image_id"], role="builder", run_id=run_id)
    )
    try:
        packer = steps.bake_packer(spec, builder, PackerHook(), lambda _: None)
        ansible = steps.provision_ansible(spec, builder, AnsibleHook(), lambda _: None)
        image = steps.capture_image(
            spec,
            platform,
            builder,
            run_id=run_id,
            version=steps.version_for(time.time()),
            decision=decision,
            packer=packer,
            ansible=ansible,
        )
    finally:
        platform.terminate_instance(builder.instance_id)
    steps.scan_vulnerabilities(spec, platform, image["image_id"], run_id=run_id)
    tester = Target.from_dict(steps.launch(platform, spec, image["image_id"], role="test", run_id=run_id))
    try:
        steps.validate_image(spec, platform, tester, image["image_id"], TestinfraHook(), lambda _: None)
    finally:
        platform.terminate_instance(tester.instance_id)
    for region in spec.distribution.regions:
        steps.share_image(spec, platform, image["image_id"], region)
    steps.publish_image(spec, platform, image["image_id"], run_id)
    steps.cleanup_images(spec, platform)


def bench_bake(work: Path, rounds: int) -> dict[str, float]:
    os.environ["GOLDEN_HOME"] = str(work / "home")
    os.environ["AIRFLOW_HOME"] = str(work / "airflow")
    # the vulnerability gate's data (`make bench` sets it too): the sample, unless told otherwise
    sample = PROJECT / "tests" / "data" / "debian-security-tracker.json"
    os.environ.setdefault("GOLDEN_VULNERABILITY_DATA", str(sample))
    sys.path.insert(0, str(PROJECT / "plugins"))
    from golden_image.cli import prepare_airflow, run_family_dag
    from golden_image.spec import load_families

    spec = load_families(PROJECT / "include" / "images", PROJECT / "include").families["debian12-base"]
    from golden_image.platforms import get_platform

    platform = get_platform(spec)
    platform.resolve_source(spec)  # build the cached base once, outside the timings
    prepare_airflow()

    # The first dag.test() in a process pays Airflow's one-time start (its in-process execution API,
    # about 8 s): that first bake is reported on its own, not in the ratio.
    started = time.perf_counter()
    warm_up = run_family_dag(spec, {})
    first = time.perf_counter() - started
    assert warm_up["state"] == "success", warm_up
    script, airflow = [], []
    for n in range(rounds):
        started = time.perf_counter()
        plain_bake(spec, platform, f"bench-script-{n}")
        script.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = run_family_dag(spec, {"force": True, "reason": "benchmark"})
        airflow.append(time.perf_counter() - started)
        assert result["state"] == "success", result
    s, a = statistics.median(script), statistics.median(airflow)
    return {
        "plain_script_s": round(s, 1),
        "through_airflow_s": round(a, 1),
        "ratio": round(a / s, 3),
        "rebake_from_cached_base_s": round(a, 1),
        "first_bake_in_cold_process_s": round(first, 1),
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parse-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="golden-bench-"))
    results: dict[str, object] = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}
    try:
        results["parse"] = bench_parse(work, args.rounds)
        print(json.dumps(results["parse"]), flush=True)
        if not args.parse_only:
            results["bake"] = bench_bake(work, max(1, args.rounds // 2))
            print(json.dumps(results["bake"]), flush=True)
    finally:
        if (work / "home").exists():
            from golden_image.platforms.local import LocalPlatform

            LocalPlatform(work / "home").janitor(older_than_s=0)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    (PROJECT / "benchmarks" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
