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
``/proc/sys`` are read-only and the host's kernel knobs in ``/proc`` are masked. ``memory_mib``, ``cpus`` and a
process limit are enforced by a cgroup v2 of the sandbox's own where the host delegates one (``_ns_cgroup``;
``msb doctor`` and the pytest header say when it does not). Disk images (loop-mounted, read-only) and binds with a
quota (our FUSE server, serving from the creating process) are mounted in a private mount namespace made *before*
the user namespace (``_ns_hostmounts``: only when we hold CAP_SYS_ADMIN on the host); they go away with the sandbox.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox._backend import Guest, GuestPlan, on_spawner_thread
from pytest_microsandbox.sandbox._ns_cgroup import PIDS_MAX, SandboxCgroup, placement, sandbox_cgroup
from pytest_microsandbox.sandbox._ns_hostmounts import host_mounts

AGENT = Path(__file__).resolve().parents[2] / "_vmcore" / "guest" / "bin" / "agent"
_NAMESPACES = ["--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child"]


def namespaces_unavailable() -> str | None:
    """Why this host cannot run namespace sandboxes, or None."""
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"the {tool} tool (util-linux) is not installed"
    if not AGENT.is_file():
        return f"the guest agent is not built ({AGENT}): run python3 setup.py build_ext --inplace"
    return None


class NamespaceBackend:
    name = "namespace"
    description = "namespace (weaker than a VM: shares the host kernel)"

    def start(self, plan: GuestPlan) -> Guest:
        reason = namespaces_unavailable()
        if reason:
            raise SandboxError(f"cannot start a namespace sandbox: {reason}")
        cgroup = _cgroup_for(plan)
        try:
            extra = host_mounts(plan.boot.mounts, plan.disks, plan.quotas, plan.run_dir)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        boot = replace(plan.boot, mounts=list(extra.guest_mounts))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log = plan.run_dir / "console.log"
        closers = [extra.close] + ([cgroup.remove] if cgroup is not None else [])
        argv = [*(cgroup.prefix() if cgroup is not None else []), "setpriv", "--pdeathsig", "KILL", "--",
                *extra.prefix, "unshare", *_NAMESPACES, "--", str(AGENT), "--fd", str(theirs.fileno())]
        try:
            with open(log, "ab") as out:
                proc = on_spawner_thread(lambda: subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    pass_fds=[theirs.fileno(), *extra.pass_fds], start_new_session=True, env=_clean_env()))
        except OSError as e:
            ours.close()
            for close in closers:
                close()
            raise SandboxError(f"cannot start the namespace sandbox: {e}") from e
        finally:
            theirs.close()
        extra.started()
        return Guest(proc, ours, log, boot, closers=closers)


def _cgroup_for(plan: GuestPlan) -> SandboxCgroup | None:
    """The sandbox's own cgroup with its limits, or None where the host gives us none (``limits_unavailable``)."""
    where = placement()
    if where.parent is None:
        return None
    try:
        return sandbox_cgroup(where.parent, plan.config.name, plan.config.memory_mib, plan.config.cpus)
    except OSError as e:
        raise SandboxError(f"cannot make the cgroup that limits sandbox {plan.config.name}: {e}") from e


def limits_unavailable() -> str | None:
    """Why namespace sandboxes run without memory, cpu and process limits here, or None."""
    return placement().reason or None


def namespace_limits() -> str:
    """Whether namespace sandboxes get their limits here, in a line (``msb doctor``, the pytest header)."""
    reason = limits_unavailable()
    if reason is None:
        return f"namespace sandboxes run in cgroups of their own (memory_mib, cpus, {PIDS_MAX} processes)"
    return f"NONE for namespace sandboxes: {reason}; one sandbox can use all of this host's memory and cpu"


def _clean_env() -> dict[str, str]:
    """The launcher's environment: PATH only (the guest's own env comes through the boot config)."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
