"""The local platform's host side: every subprocess and kernel call it makes lives here.

An *instance* runs inside its own mount + PID namespace (``unshare``), with /proc, a private
/dev (device nodes made with mknod, never a bind mount of the host's /dev) and a tmpfs /run that
holds the instance's ephemeral SSH host key and authorized key. Its root is an overlay over the
image's cached, read-only tree (or a full unpack where the kernel has no overlayfs). When the
namespace's first process dies every process and mount of the instance goes with it, so a
killed run cannot leave mounts on the host; deleting uses ``rm --one-file-system``.

Everything here needs root (mount, mknod, chroot).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from golden_image.errors import PlatformError

SSH_READY_TIMEOUT_S = 20.0

# Mounts an instance's layers (paths in GOLDEN_LOWER/UPPER/WORK, see layer_env) on "$R".
MOUNT_LAYERS = (
    "mount -t overlay golden-root "
    '-o "lowerdir=$GOLDEN_LOWER,upperdir=$GOLDEN_UPPER,workdir=$GOLDEN_WORK" "$R"'
)

LAUNCH_SCRIPT = r"""#!/bin/sh
# Runs as PID 1 of a fresh mount+PID namespace (see start_instance).
set -eu
R="$1"; PORT="$2"; PUB="$3"
if [ -n "${GOLDEN_LOWER:-}" ]; then  # copy-on-write root over the image's cached, read-only tree
  MOUNT_LAYERS
fi
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755,size=16m golden-dev "$R/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 666 "$R/dev/$1" c "$2" "$3"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o mode=755,size=64m golden-run "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock" "$R/run/golden"; chmod 700 "$R/run/golden"
cp "$PUB" "$R/run/golden/authorized_keys"
chroot "$R" /usr/bin/ssh-keygen -q -t ed25519 -N '' -f /run/golden/ssh_host_ed25519_key
exec chroot "$R" /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 \
  -h /run/golden/ssh_host_ed25519_key -o AuthorizedKeysFile=/run/golden/authorized_keys \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UsePAM=no \
  -o MaxStartups=50 -o MaxSessions=50
""".replace("MOUNT_LAYERS", MOUNT_LAYERS)

# Keeps package maintainer scripts from starting daemons on the host's network during a bake;
# removed again at export so the image starts its services normally.
POLICY_RC_D = "#!/bin/sh\n# golden-image builder: do not start services inside the chroot\nexit 101\n"
POLICY_RC_D_PATH = "usr/sbin/policy-rc.d"


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
    for binary, package in (("unshare", "util-linux"), ("zstd", "zstd"), ("ssh-keygen", "openssh-client")):
        require(binary, package)
    if os.geteuid() != 0:
        raise PlatformError(
            "the local platform needs root (chroot, mount, mknod); run as root", retryable=False
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


def prepare_root(directory: Path, *, lower: Path | None, archive: Path, builder: bool) -> dict[str, str]:
    """Lay out an instance's root (overlay layers over ``lower``, or a full unpack of ``archive``);
    a builder gets a policy-rc.d. Returns the environment the launch script mounts with."""
    env: dict[str, str] = {}
    if lower is not None:
        (directory / "upper").mkdir()
        (directory / "work").mkdir()
        env = layer_env(lower, directory)
        writable = directory / "upper"
    else:
        unpack(archive, directory / "root")
        writable = directory / "root"
    if builder:
        policy = writable / POLICY_RC_D_PATH
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
    return env


def start_instance(directory: Path, *, port: int, public_key: Path, env: dict[str, str]) -> int:
    """Start the instance's namespace (sshd on 127.0.0.1:``port``); its PID once SSH answers."""
    script = directory / "launch.sh"
    script.write_text(LAUNCH_SCRIPT)
    with (directory / "sshd.log").open("wb") as logfile:
        process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--kill-child",
             "sh", str(script), str(directory / "root"), str(port), str(public_key)],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )  # fmt: skip
    _wait_ssh(port, process, directory)
    return process.pid


def _wait_ssh(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
    deadline = time.monotonic() + SSH_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (directory / "sshd.log").read_text(errors="replace")[-1500:]
            raise PlatformError(f"instance sshd exited with {process.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise PlatformError(f"instance sshd did not answer on 127.0.0.1:{port} in {SSH_READY_TIMEOUT_S:.0f} s")


def stop_instance(pid: int | None, directory: Path) -> None:
    """Kill the instance's namespace (all its processes and mounts) and anything left inside."""
    if pid is not None and pid_alive(pid, str(directory)):
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid, str(directory)) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it when it is our child
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.02)
    kill_stragglers(directory)
    unmount_under(directory)


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
    """tar + zstd a stopped instance's root filesystem, without the builder's policy-rc.d."""
    root = directory / "root"
    tar = ["tar", "--numeric-owner", "--xattrs", "--one-file-system", "-I", "zstd -3 -T0",
           "-cpf", str(target), "-C", str(root), "."]  # fmt: skip
    if lower is not None:
        # mount the instance's layers again in a private namespace that ends with tar
        script = f'set -e; R="$1"; shift; {MOUNT_LAYERS}; rm -f "$R/{POLICY_RC_D_PATH}"; exec "$@"'
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(root),
            *tar,
        ]
        env = {**os.environ, **layer_env(lower, directory)}
    else:
        (root / POLICY_RC_D_PATH).unlink(missing_ok=True)
        command, env = tar, dict(os.environ)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise PlatformError(f"exporting {directory.name} failed: {done.stderr.strip()[-800:]}")


def run_mmdebstrap(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Build a Debian root filesystem tarball (``command`` starts with mmdebstrap's path)."""
    return subprocess.run(command, capture_output=True, text=True, check=False)
