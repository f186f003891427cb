"""The team stack as processes on this machine: a private Postgres and Redis, Airflow's scheduler,
dag-processor, triggerer and api-server, and Celery workers, all on 127.0.0.1 (tests/cluster and
benchmarks/cluster.py; README "Run it for a team" shows the same by hand).

Postgres and Redis are Debian's (`postgresql`, `redis-server`; scripts/setup.sh dev installs
them) run as private instances: a fresh data directory, a free port, no persistence for Redis,
never the system services. Postgres refuses to run as root, so it runs as ``nobody``. Every
process has its own process group and its PID recorded; ``stop`` ends them by process group,
Airflow first, then Redis and Postgres. Logs stay in the stack's directory (``tails`` for a
failure report).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent")
)
"""Debian's Postgres (15 on Debian 12), not whatever else is on PATH."""
REDIS = Path("/usr/bin/redis-server")
VENV_BIN = Path(sys.executable).parent
INJECT = Path(__file__).resolve().parent / "inject"
TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_tools() -> list[str]:
    """What the stack needs that this machine lacks (scripts/setup.sh dev installs it)."""
    missing = [str(p) for p in (PG_BIN / "initdb", PG_BIN / "postgres", REDIS) if not p.exists()]
    for module in ("celery", "psycopg2", "airflow.providers.celery"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"python module {module} (requirements-team.txt)")
    return missing


@dataclass
class Worker:
    """One `airflow celery worker`: its Celery hostname, queues, slots and environment."""

    name: str
    queues: tuple[str, ...]
    concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Stack:
    """Start with ``start()``, stop with ``stop()`` (idempotent; call it in a ``finally``)."""

    def __init__(self, work: Path, *, env: dict[str, str], workers: Iterable[Worker]) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.base_env = env
        self.workers = list(workers)
        self.procs: list[Proc] = []
        self.password = secrets.token_urlsafe(16)
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self._token: str | None = None
        self._stopped = False
        # Postgres needs a directory its unprivileged user owns and can reach: not under TMPDIR, which
        # scripts/run-tests.sh makes private to root
        self.pg_dir = Path(tempfile.mkdtemp(prefix="golden-cluster-pg-", dir="/tmp"))

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], env: dict[str, str], **kwargs: Any) -> Proc:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.work,
                start_new_session=True,
                **kwargs,
            )
        proc = Proc(name, process, log)
        self.procs.append(proc)
        (self.work / "pids").open("a").write(f"{name} {process.pid}\n")
        return proc

    def _wait_for(self, what: str, ready: Any, *, timeout: float, procs: Iterable[Proc] = ()) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for proc in procs:
                if proc.process.poll() is not None:
                    raise RuntimeError(
                        f"{proc.name} exited ({proc.process.returncode}) before {what}:\n{self.tail(proc)}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not within {timeout:.0f} s; logs in {self.logs}")
            time.sleep(0.3)

    def _postgres(self) -> str:
        user = pwd.getpwnam("nobody")
        data = self.pg_dir / "data"
        pwfile = self.pg_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.pg_dir)}
        subprocess.run(
            [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "airflow", f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "-E", "UTF8"],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        port = free_port()
        proc = self._spawn(
            "postgres",
            [*as_user, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(self.pg_dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            env,
        )  # fmt: skip
        ready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        self._wait_for("postgres", lambda: subprocess.run(ready).returncode == 0, timeout=60, procs=[proc])
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", "airflow"],
            check=True, env={**env, "PGPASSWORD": self.password},
        )  # fmt: skip
        return f"airflow:{self.password}@127.0.0.1:{port}/airflow"

    def _redis(self) -> str:
        port = free_port()
        proc = self._spawn(
            "redis",
            [str(REDIS), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--requirepass", self.password, "--dir", str(self.work)],
            {"PATH": "/usr/bin:/bin"},
        )  # fmt: skip

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    return b"PONG" in sock.recv(64) or b"PONG" in sock.recv(64)
            except OSError:
                return False

        self._wait_for("redis", answers, timeout=30, procs=[proc])
        return f"redis://:{self.password}@127.0.0.1:{port}/0"

    def airflow_env(self, db: str, broker: str) -> dict[str, str]:
        home = self.work / "airflow"
        home.mkdir(exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        passwords.chmod(0o600)
        python_path = os.pathsep.join([str(INJECT), str(PROJECT / "plugins"), str(PROJECT)])
        return {
            **self.base_env,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": python_path,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": broker,
            # a worker holds no message it is not running (acks late, no prefetch beyond its slots)
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "8",
            # one secret set shared by every component: tokens the api-server signs, workers verify
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }

    def start(self) -> None:
        db = self._postgres()
        broker = self._redis()
        self.env = self.airflow_env(db, broker)
        airflow = str(VENV_BIN / "airflow")
        migrate = subprocess.run([airflow, "db", "migrate"], env=self.env, capture_output=True, text=True)
        (self.logs / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        self.golden_pools()
        components = {
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
            "api-server": [airflow, "api-server"],
        }
        started = [self._spawn(name, command, self.env) for name, command in components.items()]
        for worker in self.workers:
            env = {**self.env, **worker.env, "GOLDEN_CLUSTER_HOSTNAME": worker.name,
                   "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.cluster.hostname.worker_hostname"}  # fmt: skip
            command = [airflow, "celery", "worker", "--celery-hostname", f"{worker.name}@%h",
                       "--queues", ",".join(worker.queues), "--concurrency", str(worker.concurrency),
                       "--skip-serve-logs", "--without-gossip", "--without-mingle"]  # fmt: skip
            started.append(self._spawn(worker.name, command, env))
        self._wait_for("the api-server", self._healthy, timeout=240, procs=started)
        for proc in started[len(components) :]:
            self._wait_for(
                f"{proc.name} ready",
                lambda p=proc: b" ready." in p.log.read_bytes(),
                timeout=120,
                procs=[proc],
            )

    def golden_pools(self) -> None:
        """The bake pools the family DAGs name (`golden pools`): without them the scheduler never
        runs a pooled task."""
        golden = str(VENV_BIN / "golden")
        done = subprocess.run([golden, "pools"], env=self.env, capture_output=True, text=True)
        (self.logs / "golden-pools.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"golden pools failed:\n{done.stderr[-3000:]}")

    def _healthy(self) -> bool:
        try:
            health = self.request("GET", "/api/v2/monitor/health", auth=False)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def tail(self, proc: Proc, lines: int = 40) -> str:
        text = proc.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def tails(self, lines: int = 40) -> str:
        return "\n".join(f"==== {p.name} ({p.log}) ====\n{self.tail(p, lines)}" for p in self.procs)

    def stop(self) -> None:
        """Every process group this stack started, by PID: SIGTERM (Postgres: SIGINT, its fast
        shutdown), then SIGKILL to the group after 30 s or once its leader exited. Idempotent;
        how long each took goes to logs/stop.log."""
        if self._stopped:
            return
        self._stopped = True
        took = []
        for group in (self.procs[2:][::-1], self.procs[:2][::-1]):  # Airflow first, then Redis, Postgres
            started = time.monotonic()
            for proc in group:
                if proc.process.poll() is None:
                    _signal_group(
                        proc.process.pid, signal.SIGINT if proc.name == "postgres" else signal.SIGTERM
                    )
            for proc in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.process.wait(timeout=max(0.1, started + 30 - time.monotonic()))
                _signal_group(proc.process.pid, signal.SIGKILL)  # what the leader left behind
                proc.process.wait()
                took.append(f"{proc.name} {time.monotonic() - started:.1f} s")
        (self.logs / "stop.log").write_text("\n".join(took) + "\n")
        shutil.rmtree(self.pg_dir, ignore_errors=True)

    # -- REST ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def token(self) -> str:
        if self._token is None:
            answer = self.request(
                "POST", "/auth/token", {"username": "admin", "password": self.password}, auth=False
            )
            self._token = str(answer["access_token"])
        return self._token

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        def parsed() -> bool:
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return True
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise

        self._wait_for(f"DAG {dag_id} parsed", parsed, timeout=timeout, procs=self.procs)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause ``dag_id`` and trigger a run; returns its run id."""
        self.wait_for_dag(dag_id)
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The run's terminal state; raises when it is not terminal within ``timeout``."""
        state: list[str] = []

        def terminal() -> bool:
            state[:] = [self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]]
            return state[0] in TERMINAL

        self._wait_for(f"run {dag_id} {run_id} terminal", terminal, timeout=timeout, procs=self.procs)
        return state[0]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return list(answer["task_instances"])

    def task_log(self, ti: dict[str, Any]) -> list[dict[str, Any]]:
        """The task instance's log events, every try, as the UI shows them (its trigger's part too)."""
        events: list[dict[str, Any]] = []
        for attempt in range(1, int(ti["try_number"]) + 1):
            path = (
                f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}"
                f"/logs/{attempt}?map_index={ti['map_index']}&full_content=true"
            )
            content = self.request("GET", path)["content"]
            for event in content if isinstance(content, list) else [content]:
                events.append(event if isinstance(event, dict) else {"event": str(event)})
        return events


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def main(argv: list[str] | None = None) -> int:
    """Run the stack by hand until Ctrl-C (README "Run it for a team")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.stack", description=main.__doc__)
    parser.add_argument(
        "--dir", type=Path, help="where logs, Airflow's home and the PIDs go (default: a new one in /tmp)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="slots per worker")
    args = parser.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="golden-stack-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.setdefault("GOLDEN_HOME", "/var/lib/golden-image")
    workers = [
        Worker("worker-a", ("default", "local-bake"), args.concurrency),
        Worker("worker-b", ("default",), args.concurrency),
    ]
    stack = Stack(work, env=env, workers=workers)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        stack.start()
        passwords = stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
        print(f"Airflow on {stack.api} (user admin, password in {passwords}); logs and PIDs in {work}")
        print("Ctrl-C stops every process of the stack")
        while not stopping:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    except Exception:
        print(stack.tails(), file=sys.stderr)
        raise
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
