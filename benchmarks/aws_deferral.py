"""Share of wait time spent deferred in an aws family run with slow EC2 (issue 3).

    .venv/bin/python benchmarks/aws_deferral.py [--instance-s 5] [--image-s 10]

Runs the example family aws-debian12-base end to end through Airflow (dag.test, triggers run
inline) against moto server, with real Packer/Ansible/Testinfra on local stand-in instances and
injected EC2 latencies in seconds (an instance reads `pending` until --instance-s after EC2
launched it, an AMI or a region copy until --image-s after EC2 created it; tests/aws/standins.py
SlowEc2's seconds mode: this measures wait time; the DAG test counts looks instead). Twice: with
deferrable waits (the default) and, as the baseline, with `aws.deferrable: false` (waits block the worker).

Wait time held by a worker = time inside AwsPlatform.wait (blocking sleeps, or the one check
before deferring); wait time deferred = the triggers' own measured waits. Target: >= 90 %.
Needs root, packer, mmdebstrap (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
SOURCE = "/platform/sources/debian-12-bench"


def run_once(work: Path, url: str, *, deferrable: bool, delays: dict[str, float]) -> dict[str, Any]:
    import pytest
    import yaml

    from golden_image.cli import run_family_dag
    from golden_image.platforms.aws import AwsPlatform
    from golden_image.spec import family_mapping, load_families
    from tests.aws.standins import SlowEc2, record_trigger_events

    family = family_mapping(PROJECT / "include" / "images" / "aws-debian12-base.yaml", PROJECT / "include")
    family["source"] = {"aws": {"ssm_parameter": SOURCE}}
    family["aws"].update(aws_conn_id="bench_aws", poll_interval_s=0.5, kms_keys={}, deferrable=deferrable)
    family["distribution"] = {"regions": ["us-east-1", "us-west-2"], "accounts": ["111122223333"]}
    images = work / f"images-{deferrable}"
    images.mkdir(exist_ok=True)
    (images / "aws-debian12-base.yaml").write_text(yaml.safe_dump(family))
    os.environ["GOLDEN_IMAGES_DIR"] = str(images)
    spec = load_families(images, PROJECT / "include").families["aws-debian12-base"]

    held: list[float] = []
    real_wait = AwsPlatform.wait

    def wait(self: AwsPlatform, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            real_wait(self, *args, **kwargs)
        finally:
            held.append(time.perf_counter() - started)

    with pytest.MonkeyPatch.context() as patch:  # undone after the run
        patch.setattr(AwsPlatform, "wait", wait)
        events = record_trigger_events(patch)
        SlowEc2(seconds=delays).install(patch)
        started = time.perf_counter()
        result = run_family_dag(spec, {"force": True, "reason": "benchmark"})
        total = time.perf_counter() - started
    assert result["state"] == "success", result
    deferred = [float(event["waited_s"]) for event in events]
    in_worker, in_trigger = sum(held), sum(deferred)
    return {
        "deferrable": deferrable,
        "run_s": round(total, 1),
        "wait_in_worker_s": round(in_worker, 2),
        "wait_deferred_s": round(in_trigger, 2),
        "deferred_share": round(in_trigger / (in_trigger + in_worker), 4),
        "deferrals": len(deferred),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instance-s", type=float, default=5.0)
    parser.add_argument("--image-s", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="golden-bench-aws-"))
    os.environ.update(
        {"GOLDEN_HOME": str(work / "home"), "AIRFLOW_HOME": str(work / "airflow"), "PYTHONPATH": str(PROJECT)}
    )
    from golden_image.cli import airflow_environment, prepare_airflow

    for key, value in airflow_environment().items():  # before anything imports Airflow's settings
        os.environ.setdefault(key, value)
    from tests.aws.motoserver import STAND_INS, create_manifest_bucket, moto_connection, start_moto, stop_moto

    process, url = start_moto()
    try:
        os.environ["AIRFLOW_CONN_BENCH_AWS"] = moto_connection(url, **STAND_INS)
        create_manifest_bucket(url)
        from golden_image.hooks.ami import AmiHook

        hook = AmiHook(aws_conn_id="bench_aws")
        base = hook.conn.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
        hook.ssm.put_parameter(Name=SOURCE, Value=base, Type="String", DataType="aws:ec2:image")
        prepare_airflow()
        delays = {"instance": args.instance_s, "image": args.image_s}
        run_once(work, url, deferrable=True, delays={"instance": 0, "image": 0})  # warm-up: base + Airflow
        results = {
            "injected": delays,
            "deferrable": run_once(work, url, deferrable=True, delays=delays),
            "blocking_baseline": run_once(work, url, deferrable=False, delays=delays),
        }
        print(json.dumps(results, indent=2))
        (PROJECT / "benchmarks" / "aws_deferral.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        stop_moto(process)
        from golden_image.platforms.local import LocalPlatform

        LocalPlatform(work / "home").janitor(older_than_s=0)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
