"""The local platform's host side: every subprocess and kernel call it makes lives here.

An *instance* is a booted machine: the image's own systemd runs as PID 1 under
``systemd-nspawn --boot``, in a network namespace of its own. Around it, a mount + PID
namespace (``unshare``) holds the instance's root (an overlay over the image's cached,
read-only tree, or a full unpack where the kernel has no overlayfs) and ``slirp4netns``, which
gives the instance outbound NAT to the package mirrors (user-mode: no host interface, route or
firewall rule is touched; the host's loopback is not reachable from inside) and forwards one
127.0.0.1 port of the host to the instance's port 22. nspawn drops the capabilities that would
reach the host's clock, devices or network configuration. The instance gets cgroups of its own
(``golden/<instance id>`` in each systemd-relevant hierarchy) so its systemd never shares a tree
with another instance's.

When the namespace's first process dies, every process and mount of the instance goes with it,
so a killed run cannot leave mounts on the host; what outlives it (the cgroup directories, the
files) is removed by ``stop_instance`` / ``delete_tree`` and, after a SIGKILL of the worker, by
the janitor. Everything here needs root.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from golden_image.errors import PlatformError

SSH_READY_TIMEOUT_S = 60.0
# slirp4netns --configure: the instance is 10.0.2.100, its gateway 10.0.2.2, its DNS 10.0.2.3
RESOLV_CONF = "nameserver 10.0.2.3\n"
CGROUP_PARENT = "golden"

# Mounts an instance's layers (paths in GOLDEN_LOWER/UPPER/WORK, see layer_env) on "$R".
MOUNT_LAYERS = (
    "mount -t overlay golden-root "
    '-o "lowerdir=$GOLDEN_LOWER,upperdir=$GOLDEN_UPPER,workdir=$GOLDEN_WORK" "$R"'
)

LAUNCH_SCRIPT = r"""#!/bin/sh
# PID 1 of the instance's mount + PID namespace (see start_instance): mounts its root, boots it
# with systemd-nspawn in a network namespace of its own, and attaches slirp4netns to that.
set -eu
R="$1"; DIR="$2"; NAME="$3"
if [ -n "${GOLDEN_LOWER:-}" ]; then  # copy-on-write root over the image's cached, read-only tree
  MOUNT_LAYERS
fi
for cgroup in $GOLDEN_CGROUPS; do echo $$ > "$cgroup/cgroup.procs"; done
mount -t tmpfs -o mode=755,size=16m golden-host-run /run  # nspawn's own state: gone with us
unshare --net -- systemd-nspawn --quiet --register=no --keep-unit --boot --console=passive \
  --link-journal=no --machine="$NAME" -D "$R" \
  --bind-ro="$DIR/run:/run/golden" --bind-ro="$DIR/resolv.conf:/etc/resolv.conf" &
BOOT=$!
OURS=$(readlink /proc/self/ns/net)
while [ "$(readlink "/proc/$BOOT/ns/net" || echo "$OURS")" = "$OURS" ]; do
  kill -0 "$BOOT"  # (set -e) the boot ended before it had its own network namespace
  sleep 0.01
done
slirp4netns --configure --mtu=65520 --disable-host-loopback --api-socket "$DIR/slirp.sock" \
  --netns-type=path "/proc/$BOOT/ns/net" tap0 >"$DIR/slirp.log" 2>&1 &
wait "$BOOT"
""".replace("MOUNT_LAYERS", MOUNT_LAYERS)


def require(binary: str, package: str) -> str:
    """The path of ``binary``, or an error saying which Debian package provides it."""
    found = shutil.which(binary)
    if not found:
        raise PlatformError(
            f"'{binary}' is not installed; run `apt-get install -y {package}` (or `make setup`)",
            retryable=False,
        )
    return found


def require_instance_tools() -> None:
    for binary, package in (
        ("unshare", "util-linux"),
        ("zstd", "zstd"),
        ("ssh-keygen", "openssh-client"),
        ("systemd-nspawn", "systemd-container"),
        ("slirp4netns", "slirp4netns"),
    ):
        require(binary, package)
    if os.geteuid() != 0:
        raise PlatformError(
            "the local platform needs root (mount, namespaces, systemd-nspawn); run as root", retryable=False
        )
    if not _cgroup_tops(Path("/")):
        raise PlatformError(
            "no cgroup hierarchy is mounted, and systemd-nspawn needs one: `mount -t cgroup2 cgroup2 "
            "/sys/fs/cgroup` (scripts/setup.sh does it when it runs as root)",
            retryable=False,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and its command line mentions ``marker`` (guards against PID reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def overlay_supported() -> bool:
    """Instances use overlayfs over a cached tree when the kernel has it (launch in well under 1 s)."""
    if os.environ.get("GOLDEN_NO_OVERLAY") == "1":
        return False
    try:
        return "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def _run(command: list[str]) -> None:
    """Run a host command; its failure is a PlatformError carrying its stderr."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PlatformError(f"{command[0]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def make_key(path: Path, comment: str) -> None:
    """A new ed25519 key pair at ``path`` / ``path.pub``."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def unpack(archive: Path, root: Path) -> None:
    _run(["tar", "--numeric-owner", "-I", "zstd", "-xpf", str(archive), "-C", str(root)])


def layer_env(lower: Path, directory: Path) -> dict[str, str]:
    """Where an instance's overlay layers are: the image's cached tree and the instance's changes."""
    return {
        "GOLDEN_LOWER": str(lower),
        "GOLDEN_UPPER": str(directory / "upper"),
        "GOLDEN_WORK": str(directory / "work"),
    }


def prepare_root(directory: Path, *, lower: Path | None, archive: Path, public_key: Path) -> dict[str, str]:
    """Lay out an instance (overlay layers over ``lower``, or a full unpack of ``archive``; its
    login key and DNS settings, bind-mounted read-only, never written into its root). Returns
    the environment the launch script mounts with."""
    (directory / "run").mkdir()
    shutil.copyfile(public_key, directory / "run" / "authorized_keys")
    (directory / "resolv.conf").write_text(RESOLV_CONF)
    if lower is None:
        unpack(archive, directory / "root")
        return {}
    (directory / "upper").mkdir()
    (directory / "work").mkdir()
    return layer_env(lower, directory)


def _scope(home: Path) -> str:
    """Instances of one store share a cgroup parent, so another store's janitor on the same host
    (the tests beside a demo) never sees, let alone kills, them."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def _cgroup_tops(home: Path) -> list[Path]:
    """``golden/<store>`` in each hierarchy systemd uses (name=systemd v1 and/or v2)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype, options = fields[fields.index("-") + 1], fields[-1]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            found.append(Path(fields[4]) / CGROUP_PARENT / _scope(home))
    return found


def cgroup_dirs(directory: Path) -> list[Path]:
    """The instance's own cgroups (``directory`` is ``<store>/instances/<instance id>``)."""
    return [top / directory.name for top in _cgroup_tops(directory.parent.parent)]


def cgroup_pids(directory: Path) -> set[int]:
    """Every process in the instance's cgroups (host PIDs): the instance's processes, wherever
    their root or namespace is."""
    pids: set[int] = set()
    for top in cgroup_dirs(directory):
        for procs in top.rglob("cgroup.procs") if top.exists() else []:
            with contextlib.suppress(OSError):
                pids |= {int(pid) for pid in procs.read_text().split()}
    return pids


def remove_cgroups(directory: Path, timeout_s: float = 10.0) -> None:
    """Kill what still runs in the instance's cgroups (nothing, once its namespace died; the
    janitor's case otherwise), then remove the cgroup trees, deepest first."""
    deadline = time.monotonic() + timeout_s
    for top in cgroup_dirs(directory):
        while top.exists():
            for pid in cgroup_pids(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
            if top.exists():
                if time.monotonic() > deadline:
                    raise PlatformError(f"cgroup {top} still has processes after {timeout_s:.0f} s")
                time.sleep(0.05)
        for parent in (top.parent, top.parent.parent):  # the store's and golden/, once empty
            with contextlib.suppress(OSError):
                parent.rmdir()


def stale_cgroups(home: Path) -> list[str]:
    """Ids of this store's instances that have a cgroup (the janitor compares them with live ones)."""
    ids: set[str] = set()
    for top in _cgroup_tops(home):
        ids |= {p.name for p in top.iterdir() if p.is_dir()} if top.exists() else set()
    return sorted(ids)


def start_instance(
    directory: Path, *, env: dict[str, str], ports: Callable[[], int] | None = None
) -> tuple[int, int]:
    """Boot the instance (``directory`` laid out by ``prepare_root``, named by the instance id).
    Returns the PID of the instance's namespace and the 127.0.0.1 port its SSH is forwarded
    from, once SSH answers there (a port ``ports()``, default ``free_port``, picked and
    slirp4netns could bind: see ``_forward_ssh``)."""
    instance_id = directory.name
    cgroups = cgroup_dirs(directory)
    for cgroup in cgroups:
        cgroup.mkdir(parents=True, exist_ok=True)
    script = directory / "launch.sh"
    script.write_text(LAUNCH_SCRIPT)
    with (directory / "console.log").open("wb") as logfile:
        process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
             "--kill-child", "sh", str(script), str(directory / "root"), str(directory), instance_id],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env, "GOLDEN_CGROUPS": " ".join(map(str, cgroups))},
        )  # fmt: skip
    deadline = time.monotonic() + SSH_READY_TIMEOUT_S
    port = _forward_ssh(directory, ports or free_port, process, deadline)
    _wait_ssh(port, process, directory, deadline)
    return process.pid, port


def _alive_or_raise(process: subprocess.Popen[bytes], directory: Path) -> None:
    if process.poll() is not None:
        tail = (directory / "console.log").read_text(errors="replace")[-1500:]
        slirp = directory / "slirp.log"
        tail += ("\n" + slirp.read_text(errors="replace")[-500:]) if slirp.exists() else ""
        raise PlatformError(f"instance exited with {process.returncode} while booting:\n{tail}")


PORT_ATTEMPTS = 8
"""Ports tried for an instance's SSH forward. ``free_port`` only finds a port free *now*: until
slirp4netns binds it, another process may take it (another instance's forward, or any outbound
connection of the host, the instances' own NAT traffic included, which draws from the same
ephemeral range), so a refused bind is retried with a new port."""


def _forward_ssh(
    directory: Path, ports: Callable[[], int], process: subprocess.Popen[bytes], deadline: float
) -> int:
    """Ask the instance's slirp4netns to forward a free 127.0.0.1 port to the instance's port 22;
    returns that port."""
    api = directory / "slirp.sock"
    refused: list[str] = []
    while time.monotonic() < deadline:
        _alive_or_raise(process, directory)
        if api.exists():
            port = ports()
            request = {
                "execute": "add_hostfwd",
                "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": port, "guest_port": 22},
            }
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with unix as sock, contextlib.suppress(OSError):  # not listening yet, or it just died
                sock.connect(str(api))
                sock.sendall(json.dumps(request).encode())
                reply = json.loads(sock.recv(4096) or b"{}")
                if "return" in reply:
                    return port
                refused.append(f"{port}: {reply}")  # most likely taken since it was picked
                if len(refused) >= PORT_ATTEMPTS:
                    raise PlatformError(
                        f"slirp4netns refused the SSH forward on {len(refused)} ports "
                        f"({'; '.join(refused[-3:])}); see {directory / 'slirp.log'}"
                    )
                continue
        time.sleep(0.02)
    raise PlatformError(f"the instance's network did not come up in {SSH_READY_TIMEOUT_S:.0f} s")


def _wait_ssh(port: int, process: subprocess.Popen[bytes], directory: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        _alive_or_raise(process, directory)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise PlatformError(
        f"instance sshd did not answer on 127.0.0.1:{port} in {SSH_READY_TIMEOUT_S:.0f} s "
        f"(boot log: {directory / 'console.log'})"
    )


def init_pids(directory: Path) -> set[int]:
    """The host PID of the instance's systemd (the process in its ``init.scope`` cgroup)."""
    pids: set[int] = set()
    for top in cgroup_dirs(directory):
        for procs in top.glob("*/init.scope/cgroup.procs") if top.exists() else []:
            with contextlib.suppress(OSError):
                pids |= {int(pid) for pid in procs.read_text().split()}
    return pids


def stop_instance(pid: int | None, directory: Path, *, grace_s: float = 0.0) -> None:
    """Stop the instance: with ``grace_s``, power it off cleanly first (SIGRTMIN+4 to its systemd,
    as a VM's power button; no login needed, so it works after generalisation removed the key)
    and wait up to ``grace_s`` for it to end; then kill its namespace (all its processes and
    mounts) and remove its cgroups."""
    if grace_s:
        for init in init_pids(directory):
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGRTMIN + 4)
    deadline = time.monotonic() + grace_s
    while grace_s and pid_alive(pid, str(directory)) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid or 0, os.WNOHANG)
        time.sleep(0.05)
    if pid is not None and pid_alive(pid, str(directory)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid, str(directory)) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it when it is our child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
    kill_stragglers(directory)
    unmount_under(directory)
    remove_cgroups(directory)


def kill_stragglers(directory: Path) -> None:
    """Belt and braces: any process whose root is inside the instance (should be none)."""
    prefix = str(directory.resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            root = os.readlink(proc / "root")
        except OSError:
            continue
        if root == prefix or root.startswith(prefix + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return found


def unmount_under(directory: Path) -> None:
    for mount_point in sorted(mounts_under(directory), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)


def delete_tree(directory: Path) -> None:
    """Delete a tree that may have held mounts: never while anything is mounted inside it."""
    if not directory.exists():
        return
    if mounts_under(directory):
        raise PlatformError(f"refusing to delete {directory}: something is still mounted inside it")
    subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=True)


def export_root(directory: Path, lower: Path | None, target: Path) -> None:
    """tar + zstd a stopped instance's root filesystem. The empty file left where the instance's
    resolv.conf was bind-mounted is not part of the image."""
    root = directory / "root"
    tar = ["tar", "--numeric-owner", "--xattrs", "--one-file-system", "-I", "zstd -3 -T0",
           "-cpf", str(target), "-C", str(root), "."]  # fmt: skip
    tidy = '[ -s "$R/etc/resolv.conf" ] || rm -f "$R/etc/resolv.conf"'
    if lower is not None:
        # mount the instance's layers again in a private namespace that ends with tar
        script = f'set -e; R="$1"; shift; {MOUNT_LAYERS}; {tidy}; exec "$@"'
        env = {**os.environ, **layer_env(lower, directory)}
    else:
        script = f'set -e; R="$1"; shift; {tidy}; exec "$@"'
        env = dict(os.environ)
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root), *tar]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise PlatformError(f"exporting {directory.name} failed: {done.stderr.strip()[-800:]}")


def run_mmdebstrap(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Build a Debian root filesystem tarball (``command`` starts with mmdebstrap's path)."""
    return subprocess.run(command, capture_output=True, text=True, check=False)
