"""API calls for the cleanup of N images x R regions against moto server.

    .venv/bin/python benchmarks/aws_cleanup_calls.py [--images 1000] [--regions 3] [--keep 3]

Target (issue 3): describe pages + at most 2 calls per deleted image. Reports, per region, the
read calls, the mutating calls, and mutating calls per deleted image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tests.aws.motoserver import moto_connection, start_moto, stop_moto  # noqa: E402

MUTATING = {"deregister_image", "delete_snapshot"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--keep", type=int, default=3)
    args = parser.parse_args()
    process, url = start_moto()
    try:
        os.environ["AIRFLOW_CONN_GOLDEN_AWS"] = moto_connection(url)
        from golden_image.hooks.ami import FAMILY_TAG, AmiHook

        regions = ["us-east-1", "us-west-2", "eu-west-1"][: args.regions]
        results = []
        for region in regions:
            hook = AmiHook(aws_conn_id="golden_aws", region_name=region)
            base = hook.conn.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
            builder = hook.conn.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0][
                "InstanceId"
            ]
            started = time.perf_counter()
            for n in range(args.images):
                hook.conn.create_image(
                    InstanceId=builder,
                    Name=f"golden-web-{n:05d}",
                    TagSpecifications=[
                        {"ResourceType": "image", "Tags": [{"Key": FAMILY_TAG, "Value": "web"}]}
                    ],
                )
            setup = time.perf_counter() - started
            counted = AmiHook(aws_conn_id="golden_aws", region_name=region)
            started = time.perf_counter()
            result = counted.cleanup_family(
                "web", keep=args.keep, min_age_days=0, pointer="/golden/web/latest", now=time.time() + 1
            )
            seconds = time.perf_counter() - started
            deleted = len(result["delete"])
            calls = result["api_calls"]
            mutating = sum(v for k, v in calls.items() if k in MUTATING)
            reads = sum(v for k, v in calls.items() if k not in MUTATING)
            row = {
                "region": region,
                "images": args.images,
                "deleted": deleted,
                "read_calls": reads,
                "mutating_calls": mutating,
                "mutating_per_deleted": round(mutating / max(deleted, 1), 3),
                "calls": calls,
                "cleanup_s": round(seconds, 1),
                "setup_s": round(setup, 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
        assert all(r["mutating_per_deleted"] <= 2 for r in results)
    finally:
        stop_moto(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
