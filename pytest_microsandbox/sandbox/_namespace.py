"""The ``namespace`` backend: our agent as PID 1 of new user, mount, pid, net, ipc and uts namespaces.

WEAKER THAN A VM. The guest shares the host's kernel: a kernel bug reachable from an unprivileged user namespace is
an escape. It exists for hosts whose KVM cannot run guests and is used only when asked for by name
(``isolation="namespace"``, ``--msb-isolation=namespace``); nothing ever falls back to it.

Process tree: ``setpriv --pdeathsig KILL`` (the guest dies with the thread that started it) execs ``unshare`` which
stays as the recorded sandbox process and forks the agent as PID 1 (``--kill-child``: it dies with ``unshare``).
The agent talks over an inherited socketpair end and powers off (ends the pid namespace) when it closes.

The guest's root is the caller's uid on the host (``--map-root-user``: host root when pytest runs as root), with
capabilities only inside its user namespace. What keeps host files safe: the root is an overlay with a tmpfs upper,
host directories come in only as the binds asked for (read-only ones stay read-only: CAP_SYS_ADMIN is dropped after
the mounts, so nothing can remount them), ``/dev`` holds only null/zero/full/random/urandom/tty, ``/sys`` and
``/proc/sys`` are read-only and the host's kernel knobs in ``/proc`` are masked. ``memory_mib``, ``cpus`` and
volume quotas are not enforced by this backend (no cgroup limits; binds are plain binds, not our virtio-fs server).
Disk images are loop-mounted read-only in a private mount namespace made *before* the user namespace (so only when
we hold CAP_SYS_ADMIN on the host); the mount and its loop device go away with the namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

from pytest_microsandbox.agent import BootConfig, GuestMount
from pytest_microsandbox.errors import InvalidConfigError, SandboxError
from pytest_microsandbox.sandbox._backend import DiskAttachment, Guest, GuestPlan, on_spawner_thread

AGENT = Path(__file__).resolve().parents[2] / "_vmcore" / "guest" / "bin" / "agent"
_NAMESPACES = ["--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child"]
# Loop-mount each disk read-only, then exec the rest of the command line (the user-namespace unshare).
_DISK_SCRIPT = r"""set -e
n=$1; shift
while [ "$n" -gt 0 ]; do
  mount ${3:+-t "$3"} -o ro,loop "$1" "$2"
  shift 3; n=$((n - 1))
done
exec "$@"
"""


def namespaces_unavailable() -> str | None:
    """Why this host cannot run namespace sandboxes, or None."""
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"the {tool} tool (util-linux) is not installed"
    if not AGENT.is_file():
        return f"the guest agent is not built ({AGENT}): run python3 setup.py build_ext --inplace"
    return None


def loop_mounts_unavailable() -> str | None:
    """Why disk images cannot be attached to namespace sandboxes here, or None."""
    if os.geteuid() != 0:
        return "attaching a disk image needs root on the host (loop devices cannot be mounted in a user namespace)"
    if not os.path.exists("/dev/loop-control"):
        return "the host has no loop devices (/dev/loop-control is missing)"
    if shutil.which("mount") is None:
        return "the mount tool is not installed"
    return None


class NamespaceBackend:
    name = "namespace"
    description = "namespace (weaker than a VM: shares the host kernel)"

    def start(self, plan: GuestPlan) -> Guest:
        reason = namespaces_unavailable()
        if reason:
            raise SandboxError(f"cannot start a namespace sandbox: {reason}")
        prefix, disk_mounts = self._disk_prefix(plan.disks, plan.run_dir)
        plan.boot = _with_mounts(plan.boot, disk_mounts + plan.extra_mounts)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log = plan.run_dir / "console.log"
        argv = ["setpriv", "--pdeathsig", "KILL", "--", *prefix, "unshare", *_NAMESPACES, "--",
                str(AGENT), "--fd", str(theirs.fileno())]
        try:
            with open(log, "ab") as out:
                proc = on_spawner_thread(lambda: subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=[theirs.fileno()],
                    start_new_session=True, env=_clean_env()))
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the namespace sandbox: {e}") from e
        finally:
            theirs.close()
        return Guest(proc, ours, log)

    @staticmethod
    def _disk_prefix(disks: list[DiskAttachment], run_dir: Path) -> tuple[list[str], list[GuestMount]]:
        if not disks:
            return [], []
        reason = loop_mounts_unavailable()
        if reason:
            raise SandboxError(f"cannot attach disk image {disks[0].image} to a namespace sandbox: {reason}")
        args: list[str] = []
        mounts: list[GuestMount] = []
        for i, disk in enumerate(disks):
            if not disk.readonly:
                raise InvalidConfigError(
                    f"the namespace backend attaches disk images read-only only: mount {disk.image} with "
                    "readonly=True (or use isolation='vm')")
            where = run_dir / f"disk{i}"
            where.mkdir(exist_ok=True)
            args += [disk.image, str(where), disk.fstype or ""]
            mounts.append(GuestMount("bind", disk.guest_path, str(where), readonly=True, noexec=disk.noexec,
                                     nosuid=disk.nosuid, nodev=disk.nodev))
        prefix = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _DISK_SCRIPT, "sh",
                  str(len(disks)), *args]
        return prefix, mounts


def _with_mounts(boot: BootConfig, mounts: list[GuestMount]) -> BootConfig:
    return replace(boot, mounts=[*boot.mounts, *mounts]) if mounts else boot


def _clean_env() -> dict[str, str]:
    """The launcher's environment: PATH only (the guest's own env comes through the boot config)."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
