"""A no-op weekly run of N unchanged families: what the patch check costs, against the old way.

    .venv/bin/python benchmarks/weekly_noop.py [--families 20] [--baseline 3]

One real image is baked (debian12-base through Airflow, from a base built with mmdebstrap), then
published under N generated family names: each gets its own family file (debian12-base's, with
its name and pointer) in a temporary GOLDEN_IMAGES_DIR and its own pointer row
(`/golden/<family>/latest`) naming that image, so every family has an unchanged published image
whose manifest is a real one. Then, in the same process and store:

  archive-index, cold:     check_patches for every family with empty HTTP and index caches
                           (the first run ever: bookworm main's Packages is downloaded and parsed)
  archive-index, warm:     the same with the caches on disk and the per-process memos cleared
                           before each family (as if every task were its own process)
  archive-index, one run:  the same, memos kept (one process for the whole run)
  through Airflow:         one `dag.test()` per family DAG, as `golden bake` runs them; every
                           run must end with only check_patches not skipped
  baseline (instance):     check_patches on a few families with the index reader switched off:
                           a throwaway instance of the image and apt-get -s dist-upgrade

Instances are counted from the catalog's instance rows (every launch adds one). Needs root,
mmdebstrap and the Debian mirror (run `make setup` first). Results are printed and written to
benchmarks/weekly_noop.json.
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", type=int, default=20)
    parser.add_argument("--baseline", type=int, default=3, help="families checked the old way")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="golden-weekly-"))
    images = work / "images"
    images.mkdir()
    os.environ.update(
        GOLDEN_HOME=str(work / "home"), AIRFLOW_HOME=str(work / "airflow"), GOLDEN_IMAGES_DIR=str(images)
    )
    sys.path.insert(0, str(PROJECT / "plugins"))
    names = write_families(images, args.families)
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "families": args.families,
    }
    try:
        results.update(run(names, args.baseline))
    finally:
        from golden_image.platforms.local import LocalPlatform

        if (work / "home").exists():
            LocalPlatform(work / "home").janitor(older_than_s=0)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    print(json.dumps(results, indent=2))
    (PROJECT / "benchmarks" / "weekly_noop.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def write_families(images: Path, count: int) -> list[str]:
    """debian12-base and ``count`` copies of it under their own names and pointers."""
    template = (PROJECT / "include" / "images" / "debian12-base.yaml").read_text()
    (images / "debian12-base.yaml").write_text(template)
    names = [f"weekly-{n:02d}" for n in range(count)]
    for name in names:
        text = template.replace("name: debian12-base", f"name: {name}").replace(
            "/golden/debian12-base/latest", f"/golden/{name}/latest"
        )
        (images / f"{name}.yaml").write_text(text)
    return names


def run(names: list[str], baseline: int) -> dict[str, Any]:
    from golden_image import archive, steps
    from golden_image.cli import prepare_airflow, run_family_dag
    from golden_image.hooks.apt_archive import AptArchiveHook
    from golden_image.hooks.fetch import FetchHook
    from golden_image.platforms.local import LocalPlatform
    from golden_image.spec import load_families

    families = load_families(Path(os.environ["GOLDEN_IMAGES_DIR"]), PROJECT / "include").families
    platform = LocalPlatform(Path(os.environ["GOLDEN_HOME"]))
    prepare_airflow()

    started = time.perf_counter()
    baked = run_family_dag(families["debian12-base"], {"reason": "weekly benchmark"})
    bake_s = time.perf_counter() - started
    assert baked["state"] == "success", baked
    image = platform.published_image(families["debian12-base"])
    assert image is not None and image.manifest.get("apt_sources"), "the baked image records its sources"
    for name in names:
        platform.catalog.set_pointer(families[name].pointer, "local", image.image_id, "weekly-benchmark")

    def launches() -> int:
        return len(platform.catalog.instances(live_only=False))

    def check_all(label: str, *, per_process: bool) -> dict[str, Any]:
        before, times, methods = launches(), [], set()
        started = time.perf_counter()
        for name in names:
            if per_process:
                FetchHook.forget()
                AptArchiveHook.forget()
            one = time.perf_counter()
            decision = steps.check_patches(families[name], platform, run_id=f"{label}-{name}")
            times.append(time.perf_counter() - one)
            assert decision["rebuild"] is False, decision["reasons"]
            methods.add(decision["patch_check"]["method"])
        return {
            "total_s": round(time.perf_counter() - started, 2),
            "per_family_median_s": round(statistics.median(times), 3),
            "first_family_s": round(times[0], 2),
            "instances_launched": launches() - before,
            "methods": sorted(methods),
        }

    out: dict[str, Any] = {"bake_s": round(bake_s, 1), "image_id": image.image_id}
    cache = Path(os.environ["GOLDEN_HOME"]) / "cache"
    for directory in ("http", "apt-index"):
        shutil.rmtree(cache / directory, ignore_errors=True)
    FetchHook.forget()
    AptArchiveHook.forget()
    out["archive_index_cold"] = check_all("cold", per_process=False)
    out["archive_index_warm_per_process"] = check_all("warm", per_process=True)
    out["archive_index_one_process"] = check_all("memo", per_process=False)
    out["reduced_index_bytes"] = sum(p.stat().st_size for p in (cache / "apt-index").glob("*.json"))

    before = launches()
    started = time.perf_counter()
    states = []
    for name in names:
        result = run_family_dag(families[name], {})
        ran = {t for t, s in result["tasks"].items() if s != "skipped"}
        assert result["state"] == "success" and ran == {"check_patches"}, result
        assert result["decision"]["patch_check"]["method"] == "archive-index", result["decision"]
        states.append(result["state"])
    airflow_s = time.perf_counter() - started
    out["through_airflow"] = {
        "total_s": round(airflow_s, 1),
        "per_family_s": round(airflow_s / len(names), 2),
        "instances_launched": launches() - before,
        "runs_succeeded": states.count("success"),
    }

    def no_index(self: Any, manifest: Any) -> Any:
        raise archive.ArchiveError("benchmark baseline: the instance check")

    real = AptArchiveHook.pending_updates
    AptArchiveHook.pending_updates = no_index  # type: ignore[method-assign]
    try:
        before, times = launches(), []
        for name in names[:baseline]:
            one = time.perf_counter()
            decision = steps.check_patches(families[name], platform, run_id=f"baseline-{name}")
            times.append(time.perf_counter() - one)
            assert decision["patch_check"]["method"] == "instance" and decision["rebuild"] is False
        out["baseline_instance"] = {
            "families": baseline,
            "per_family_s": [round(t, 1) for t in times],
            "per_family_median_s": round(statistics.median(times), 1),
            "instances_launched": launches() - before,
            "projected_total_s": round(statistics.median(times) * len(names), 1),
        }
    finally:
        AptArchiveHook.pending_updates = real  # type: ignore[method-assign]
    out["ratio_airflow_vs_instance_projected"] = round(
        out["through_airflow"]["total_s"] / out["baseline_instance"]["projected_total_s"], 3
    )
    out["ratio_per_family_warm_vs_instance"] = round(
        out["archive_index_warm_per_process"]["per_family_median_s"]
        / out["baseline_instance"]["per_family_median_s"],
        4,
    )
    out["target"] = {
        "zero_instances": out["through_airflow"]["instances_launched"] == 0,
        "airflow_run_within_60_s": out["through_airflow"]["total_s"] <= 60,
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
