"""Real machines behind moto's instances: moto runs nothing, so each EC2 instance is served by a
real local instance (LocalPlatform) of the image its AMI stands for.

``LocalBackedResolver`` is an ``AddressResolver`` named in the test connection's extras
(``extra.golden_image.address_resolver``), so Airflow tasks in any process find it. It is the
cloud's side: its local instances live under ``$GOLDEN_STANDIN_HOME`` (default: GOLDEN_HOME), so
workers with GOLDEN_HOMEs of their own share one "cloud". Like cloud-init, it authorizes the
public key the launch's user data names (a test instance: only that key), so the pipeline logs in
with the launch key it keeps in Parameter Store, as on EC2. It keeps no state of its own: the
local catalog maps AMI -> local image (run_id = AMI id) and EC2 instance ->
local instance (run_id = instance id). The pipeline tells it nothing about captures: an AMI made
from a builder is mirrored (the builder's local instance captured) the first time something
needs it, when an instance is launched from it or when its builder is released, whichever comes
first. A base AMI nobody captured stands for the Debian base, laid out as Debian's own AMIs lay
out apt (``as_debian_ami``): their deb822 ``debian.sources`` naming ``mirror+file:`` lists, and
the lists in ``/etc/apt/mirrors``, with one difference: the AMI's lists name
``https://cdn-aws.deb.debian.org``, which does not resolve on the test machines (and their HTTPS
egress is re-signed by a CA the instances do not trust), so the stand-in's name
``http://deb.debian.org`` instead. Everything baked from it, and every image captured, carries
that layout, as an AMI baked from Debian's does.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from golden_image import paths
from golden_image.hooks.ami import AmiHook, image_created_at, tag_value
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.local import LOGIN_USER, LocalPlatform
from golden_image.values import Target
from tests.specs import family_spec

MIRROR = "aws-mirror"
AMI_APT = Path(__file__).resolve().parents[1] / "data" / "debian12-ami" / "etc" / "apt"
AMI_MIRROR = "https://cdn-aws.deb.debian.org/"
REACHABLE_MIRROR = "http://deb.debian.org/"
CLOUD_CREDENTIALS = "GOLDEN_STANDIN_CREDENTIALS"
"""The cloud side's own access key ("id:secret"), for what only the cloud reads (user data),
where IAM is enforced; unset: the pipeline's connection."""


def standin_home() -> Path:
    """Where the fake cloud's machines live (one for all workers)."""
    return Path(os.environ.get("GOLDEN_STANDIN_HOME") or paths.golden_home())


def debian_ami_apt() -> dict[str, str]:
    """The Debian 12 AMI's apt files (tests/data/debian12-ami) by their path on the instance,
    the mirror lists naming deb.debian.org over http instead of cdn-aws.deb.debian.org."""
    files = {}
    for path in sorted(AMI_APT.rglob("*")):
        if path.is_file():
            text = path.read_text()
            if path.parent.name == "mirrors":
                assert text.startswith(AMI_MIRROR), text
                text = text.replace(AMI_MIRROR, REACHABLE_MIRROR)
            files[f"/etc/apt/{path.relative_to(AMI_APT)}"] = text
    return files


def as_debian_ami(target: Target) -> None:
    """Give a stand-in of the Debian base the apt layout of Debian's AMIs (the base's one-line
    /etc/apt/sources.list goes: apt reads only the AMI's files)."""
    script = ["set -eu", "rm -f /etc/apt/sources.list", "mkdir -p /etc/apt/mirrors /etc/apt/sources.list.d"]
    for path, text in debian_ami_apt().items():
        assert "GOLDEN_EOF" not in text and text.endswith("\n")
        script.append(f"cat > {path} <<'GOLDEN_EOF'\n{text}GOLDEN_EOF")
    run_ssh(target, "sh -s", stdin="\n".join(script) + "\n", root=True)


class LocalBackedResolver:
    def __init__(
        self, *, user: str = "admin", aws_conn_id: str = "aws_default", region: str | None = None
    ) -> None:
        self.user = user
        self.local = LocalPlatform(standin_home())
        self.aws_conn_id = aws_conn_id
        self.region = region

    def _ec2(self) -> Any:
        return AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region).conn

    def _cloud_ec2(self) -> Any:
        """EC2 with the cloud side's own credentials where the test set them (IAM enforced)."""
        if not os.environ.get(CLOUD_CREDENTIALS):
            return self._ec2()
        import boto3

        key_id, secret = os.environ[CLOUD_CREDENTIALS].split(":", 1)
        endpoint = self._ec2().meta.endpoint_url
        return boto3.client("ec2", endpoint_url=endpoint, region_name=self.region or "us-east-1",
                            aws_access_key_id=key_id, aws_secret_access_key=secret)  # fmt: skip

    def _authorize_launch_key(self, instance_id: str, local: Target, role: str) -> None:
        """What cloud-init does with the user data's ``ssh_authorized_keys`` (a test instance:
        only those; a builder keeps the stand-in's own key too, to mirror it later)."""
        attribute = self._cloud_ec2().describe_instance_attribute(
            InstanceId=instance_id, Attribute="userData"
        )
        user_data = base64.b64decode(attribute.get("UserData", {}).get("Value", "")).decode()
        keys = list((yaml.safe_load(user_data) or {}).get("ssh_authorized_keys") or [])
        assert keys, f"{instance_id}'s user data names no ssh_authorized_keys: {user_data[:200]!r}"
        write = ">" if role != "builder" else ">>"
        lines = "".join(f"{key}\n" for key in keys)
        assert "GOLDEN_EOF" not in lines
        script = f"cat {write} /home/{LOGIN_USER}/.ssh/authorized_keys <<'GOLDEN_EOF'\n{lines}GOLDEN_EOF\n"
        run_ssh(local, "sh -s", stdin=script, root=True)

    def _local_instance(self, instance_id: str) -> Any:
        return next((r for r in self.local.catalog.instances() if r.run_id == instance_id), None)

    def _local_image(self, ami: str) -> tuple[str, bool]:
        """The local image standing for ``ami``, and whether it is the Debian base (Debian's AMI)."""
        captured = self.local.find_captured(MIRROR, ami)
        if captured is not None:
            return captured.image_id, False
        image = self._ec2().describe_images(ImageIds=[ami])["Images"][0]
        run_id = tag_value(image, "golden:run-id")
        builders = self._builders(run_id) if run_id else []
        if builders:
            return self._mirror(ami, builders[0]), False
        return self.local.resolve_source(family_spec(MIRROR)).image_id, True

    def _builders(self, run_id: str) -> list[Any]:
        """The live local stand-ins of the run's EC2 builders."""
        filters = [
            {"Name": "tag:golden:run-id", "Values": [run_id]},
            {"Name": "tag:golden:role", "Values": ["builder"]},
        ]
        reservations = self._ec2().describe_instances(Filters=filters)["Reservations"]
        ids = [i["InstanceId"] for r in reservations for i in r["Instances"]]
        return [row for row in map(self._local_instance, ids) if row is not None]

    def _mirror(self, ami: str, builder: Any) -> str:
        """Capture the builder's stand-in as the local image that stands for ``ami`` (once)."""
        with self.local.store.lock("stand-in-mirror"):
            captured = self.local.find_captured(MIRROR, ami)
            if captured is None:
                key = str(Path(builder.dir) / "ssh" / "id_ed25519")
                target = Target(builder.instance_id, "127.0.0.1", builder.port, LOGIN_USER, key, "builder")
                captured = self.local.capture_image(
                    target, spec=family_spec(MIRROR), run_id=ami, version="mirror", manifest={}
                )
            return captured.image_id

    def target_for(self, instance: dict[str, Any], *, role: str, port: int = 22) -> Target:
        row = self._local_instance(instance["InstanceId"])
        if row is None:
            image_id, debian_base = self._local_image(instance["ImageId"])
            local = self.local.launch_instance(
                image_id, role=role, family=MIRROR, run_id=instance["InstanceId"], region="local"
            )
            if debian_base:
                as_debian_ami(local)
            self._authorize_launch_key(instance["InstanceId"], local, role)
            local_port = local.port
        else:
            local_port = row.port
        return Target(instance["InstanceId"], "127.0.0.1", local_port, LOGIN_USER, "", role)

    def released(self, instance_id: str) -> None:
        """Terminate the stand-in; a builder's AMIs are mirrored first (nothing could later)."""
        row = self._local_instance(instance_id)
        if row is None:
            return
        if row.role == "builder":
            run_ids = [
                tag_value(i, "golden:run-id")
                for r in self._ec2().describe_instances(InstanceIds=[instance_id])["Reservations"]
                for i in r["Instances"]
            ]
            for run_id in filter(None, run_ids):
                images = self._ec2().describe_images(
                    Owners=["self"], Filters=[{"Name": "tag:golden:run-id", "Values": [run_id]}]
                )["Images"]
                for image in images:
                    self._mirror(image["ImageId"], row)
        self.local.terminate_instance(row.instance_id)


class SlowEc2:
    """EC2's latencies, injected (moto's instances run and its AMIs are available at once).

    ``looks={"instance": 2, "image": 3}``: a resource reads ``pending`` for its first N looks
    (``AmiHook.states`` calls that EC2 answers with running / available), counted per resource
    id in a SQLite file under GOLDEN_HOME that every process installing it shares (workers,
    triggerer). Deterministic: the first look, the worker's check before deferring, always sees
    ``pending``, so every wait defers exactly once, and its trigger fires on its (N-1)-th poll,
    however loaded the machine is.

    ``seconds={"instance": 5.0, "image": 10.0}``: a resource reads ``pending`` until that long
    after EC2 created it (LaunchTime / CreationDate), for the deferral benchmark, which measures
    wait *time*; how many polls that takes depends on the machine.
    """

    def __init__(
        self, *, looks: dict[str, int] | None = None, seconds: dict[str, float] | None = None
    ) -> None:
        if (looks is None) == (seconds is None):
            raise ValueError("SlowEc2 takes looks= or seconds=")
        self.looks = looks or {}
        self.seconds = seconds or {}

    @staticmethod
    def counter_path() -> Path:
        """EC2's side (how often each resource was looked at): one for every worker, like the
        stand-ins' machines."""
        return standin_home() / "slow-ec2" / "looks.sqlite"

    @classmethod
    def looked(cls, resource_ids: list[str]) -> dict[str, int]:
        """Count one more look at each resource; returns how many each has had, this one included."""
        path = cls.counter_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS looks (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            db.execute("BEGIN IMMEDIATE")
            counts = {}
            for resource_id in resource_ids:
                db.execute(
                    "INSERT INTO looks VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1", (resource_id,)
                )
                counts[resource_id] = db.execute(
                    "SELECT n FROM looks WHERE id = ?", (resource_id,)
                ).fetchone()[0]
            db.execute("COMMIT")
            return counts
        finally:
            db.close()

    def _created(self, hook: AmiHook, kind: str, ids: list[str]) -> dict[str, float]:
        if kind == "image":
            return {
                i["ImageId"]: image_created_at(i) for i in hook.conn.describe_images(ImageIds=ids)["Images"]
            }
        reservations = hook.conn.describe_instances(InstanceIds=ids)["Reservations"]
        return {i["InstanceId"]: i["LaunchTime"].timestamp() for r in reservations for i in r["Instances"]}

    def install(self, monkeypatch: Any) -> None:
        real = AmiHook.states

        def states(hook: AmiHook, kind: str, ids: list[str]) -> dict[str, str]:
            found = real(hook, kind, ids)
            ready = [i for i, state in found.items() if state in {"running", "available"}]
            if not ready:
                return found
            if self.looks.get(kind):
                for resource_id, n in self.looked(ready).items():
                    if n <= self.looks[kind]:
                        found[resource_id] = "pending"
            elif self.seconds.get(kind):
                for resource_id, at in self._created(hook, kind, ready).items():
                    if time.time() - at < self.seconds[kind]:
                        found[resource_id] = "pending"
            return found

        monkeypatch.setattr(AmiHook, "states", states)


def record_trigger_events(monkeypatch: Any) -> list[dict[str, Any]]:
    """Every event an Ec2StateTrigger fires from now on (tests and the deferral benchmark)."""
    from golden_image.triggers.ec2 import Ec2StateTrigger

    events: list[dict[str, Any]] = []
    real = Ec2StateTrigger.run

    async def run(self: Ec2StateTrigger) -> Any:
        async for event in real(self):
            events.append(dict(event.payload))
            yield event

    monkeypatch.setattr(Ec2StateTrigger, "run", run)
    return events
