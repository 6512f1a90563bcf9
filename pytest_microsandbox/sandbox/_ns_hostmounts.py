"""What a namespace sandbox's launcher mounts before it makes the user namespace: disk images (loop devices,
read-only) and binds with a quota (our FUSE server, serving from this process).

Both need CAP_SYS_ADMIN on the host and happen in a private mount namespace of the launcher's own, so the host
never sees them and they go away with the sandbox (its last process ends the namespace; the kernel then ends the
FUSE connection and the serving threads return). The guest reaches each through a bind of its mount point.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from pytest_microsandbox.agent import GuestMount
from pytest_microsandbox.errors import InvalidConfigError, SandboxError
from pytest_microsandbox.sandbox._backend import DiskAttachment

# Loop-mount each disk read-only, mount each FUSE connection (and say so on its ready pipe), close the FUSE
# descriptors, then exec the rest of the command line (the user-namespace unshare). bash: descriptors above 9.
_SCRIPT = r"""set -e
n=$1; shift
while [ "$n" -gt 0 ]; do
  mount ${3:+-t "$3"} -o ro,loop "$1" "$2"
  shift 3; n=$((n - 1))
done
n=$1; shift
while [ "$n" -gt 0 ]; do
  mount -i -t fuse.msb -o "fd=$1,rootmode=40000,user_id=$(id -u),group_id=$(id -g),default_permissions,$3" msb-fs "$4"
  echo >&"$2"
  eval "exec $1<&- $2>&-"
  shift 4; n=$((n - 1))
done
exec "$@"
"""


def loop_mounts_unavailable() -> str | None:
    """Why disk images cannot be attached to namespace sandboxes here, or None."""
    if os.geteuid() != 0:
        return "attaching a disk image needs root on the host (loop devices cannot be mounted in a user namespace)"
    if not os.path.exists("/dev/loop-control"):
        return "the host has no loop devices (/dev/loop-control is missing)"
    return _tools_missing()


def fuse_mounts_unavailable() -> str | None:
    """Why quotas cannot be enforced in namespace sandboxes here, or None."""
    if os.geteuid() != 0:
        return "a quota is enforced by our FUSE server, which only root on the host can mount for a sandbox"
    if not os.path.exists("/dev/fuse"):
        return "the host has no /dev/fuse"
    return _tools_missing()


def _tools_missing() -> str | None:
    for tool in ("mount", "bash"):
        if shutil.which(tool) is None:
            return f"the {tool} tool is not installed"
    return None


@dataclass
class HostMounts:
    """The launcher's prefix (empty: nothing to mount), the descriptors it inherits, the guest's mounts as they are
    to be made (quota binds now bind the FUSE mounts), and the FUSE connections this process serves."""

    prefix: list[str] = field(default_factory=list)
    pass_fds: list[int] = field(default_factory=list)
    guest_mounts: list[GuestMount] = field(default_factory=list)
    connections: list = field(default_factory=list)  # FuseConnection
    _ready: list[tuple[object, int, int]] = field(default_factory=list)  # (connection, read end, write end)

    def started(self) -> None:
        """The launcher runs (it holds its copies): close ours of what it inherited, serve once each is mounted."""
        for connection, ready_r, ready_w in self._ready:
            os.close(ready_w)
            connection.serve(after=ready_r)  # type: ignore[attr-defined]
        self._ready = []

    def close(self) -> None:
        """Stop serving and release everything (also what ``started`` never got to). Idempotent."""
        for _, ready_r, ready_w in self._ready:
            os.close(ready_r)
            os.close(ready_w)
        self._ready = []
        for connection in self.connections:
            connection.close()
        self.connections = []


def host_mounts(mounts: list[GuestMount], disks: list[DiskAttachment], quotas: dict[str, int],
                run_dir: Path) -> HostMounts:
    """Plan the launcher's mounts: ``mounts`` are the guest's; ``quotas`` (guest path -> MiB) name its binds to be
    served by our FUSE server. The caller calls ``started()`` once the launcher runs, and ``close()`` when the
    sandbox has ended (or did not start)."""
    result = HostMounts(guest_mounts=list(mounts))
    if not disks and not quotas:
        return result
    try:
        disk_args = _disks(disks, run_dir, result)
        fuse_args = _quota_binds(quotas, run_dir, result)
    except BaseException:
        result.close()
        raise
    result.prefix = ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", _SCRIPT, "msb-mounts",
                     str(len(disks)), *disk_args, str(len(fuse_args) // 4), *fuse_args]
    return result


def _disks(disks: list[DiskAttachment], run_dir: Path, result: HostMounts) -> list[str]:
    if not disks:
        return []
    reason = loop_mounts_unavailable()
    if reason:
        raise SandboxError(f"cannot attach disk image {disks[0].image} to a namespace sandbox: {reason}")
    args: list[str] = []
    for i, disk in enumerate(disks):
        if not disk.readonly:
            raise InvalidConfigError(
                f"the namespace backend attaches disk images read-only only: mount {disk.image} with "
                "readonly=True (or use isolation='vm')")
        where = run_dir / f"disk{i}"
        where.mkdir(exist_ok=True)
        args += [disk.image, str(where), disk.fstype or ""]
        result.guest_mounts.append(GuestMount("bind", disk.guest_path, str(where), readonly=True,
                                              noexec=disk.noexec, nosuid=disk.nosuid, nodev=disk.nodev))
    return args


def _quota_binds(quotas: dict[str, int], run_dir: Path, result: HostMounts) -> list[str]:
    if not quotas:
        return []
    reason = fuse_mounts_unavailable()
    if reason:
        raise SandboxError(f"cannot enforce the quota of {min(quotas)} in a namespace sandbox: {reason} "
                           "(use isolation='vm', or no quota)")
    from _vmcore.fs import FuseConnection, FuseUnavailableError

    args: list[str] = []
    for index, m in enumerate(result.guest_mounts):
        if m.kind != "bind" or m.target not in quotas:
            continue
        where = run_dir / f"share{index}"
        where.mkdir(exist_ok=True)
        try:
            connection = FuseConnection(m.source, readonly=m.readonly, quota_mib=quotas[m.target])
        except FuseUnavailableError as err:
            raise SandboxError(f"cannot enforce the quota of {m.target} in a namespace sandbox: {err}") from err
        result.connections.append(connection)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        result._ready.append((connection, ready_r, ready_w))
        result.pass_fds += [connection.fd, ready_w]
        options = ",".join(["nosuid", "nodev", *(["ro"] if m.readonly else [])])
        args += [str(connection.fd), str(ready_w), options, str(where)]
        result.guest_mounts[index] = replace(m, source=str(where))
    return args
