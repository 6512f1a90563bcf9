"""The sandbox, synchronous: create, exec, files, stop, kill, remove. The async face wraps this one implementation."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_microsandbox._error_boundary import vmcore_errors
from pytest_microsandbox._home import msb_home
from pytest_microsandbox._unix_path import connect_unix
from pytest_microsandbox.agent import AgentClient, ExecResult, GuestFs
from pytest_microsandbox.errors import (
    AgentError,
    BootError,
    ExecTimeoutError,
    MicrosandboxError,
    SandboxAlreadyExistsError,
    SandboxError,
    SandboxNotFoundError,
)
from pytest_microsandbox.mounts import MountConfig
from pytest_microsandbox.sandbox._backend import Guest, tail_file
from pytest_microsandbox.sandbox._config import Isolation, SandboxConfig, VmOptions, build_config
from pytest_microsandbox.sandbox._plan import build_plan
from pytest_microsandbox.sandbox._records import LIVE_STATES, reap_sandboxes, run_dir
from pytest_microsandbox.sandbox._select import backend_for
from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store

Home = str | os.PathLike[str] | None
RELAY_SOCKET = "agent.sock"

# Sandboxes this process created and still holds: ``Sandbox.get`` returns the live object for those.
_live: dict[tuple[Path, str], Sandbox] = {}
_live_lock = threading.Lock()


@dataclass(frozen=True)
class LastExec:
    """The last command run in a sandbox, for failure reports."""

    argv: tuple[str, ...]
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


class Sandbox:
    """One sandbox: a microVM (``isolation="vm"``) or, when asked for by name, Linux namespaces
    (``isolation="namespace"``: weaker isolation, the guest shares the host kernel).

        with Sandbox.create(image="host", isolation="namespace") as sb:
            assert sb.exec("echo", "hi").stdout == "hi\\n"
    """

    def __init__(self, record: SandboxRecord, home: Path, guest: Guest | None, client: AgentClient | None) -> None:
        self._record = record
        self._home = home
        self._guest = guest
        self._client = client
        self._stopped = guest is None and client is None
        self.last_exec: LastExec | None = None

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} {self.backend} {self.status}>"

    # -- creation and lookup -----------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str | None = None,
        *,
        image: str = "host",
        volumes: Mapping[str, MountConfig] | None = None,
        memory_mib: int = 512,
        cpus: int = 1,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        security: str = "default",
        isolation: str | None = "vm",
        home: Home = None,
        boot_timeout: float = 60.0,
        labels: Mapping[str, str] | None = None,
        vm: VmOptions | None = None,
    ) -> Sandbox:
        """Start a sandbox and wait until its agent answers; ``remove`` it when done (or use it in a ``with``).

        name: unique among the live sandboxes of ``home`` (else SandboxAlreadyExistsError); default ``sb-<random>``.
        image: the guest's root: a registry reference (``python:3.12``), ``oci:DIR``, ``docker-archive:FILE.tar``,
            ``dir:ROOTFS``, or ``host`` (this host's programs and libraries, read-only).
        volumes: guest path -> mount (``Volume.bind``, ``Volume.named``, ``Volume.tmpfs``, ``Volume.disk``).
        memory_mib: guest memory, 64 to 3072 MiB. cpus: vCPUs, 1 to 32.
        env: environment of every command, over the image's. workdir: their working directory (absolute; made when
            missing; default: the image's).
        security: ``default``, or ``restricted`` (no_new_privs, nosuid and nodev forced on every mount).
        isolation: ``vm`` (also when None), a microVM (KvmUnavailableError on a host without hardware KVM: never
            a silent fallback), or ``namespace``, Linux namespaces (weaker: the guest shares the host's kernel).
            The library reads no ``MSB_ISOLATION``: that is the plugin's and ``msb``'s setting.
        home: the state directory (default ``$MSB_HOME``, else ``~/.microsandbox``).
        boot_timeout: seconds to wait for the guest's agent before BootError.
        labels: strings kept with its record (``Sandbox.list``).
        vm: how the vm backend runs it (``VmOptions``: the guest kernel, snapshot templates); in a test, the
            ``msb_vm_options`` fixture has the run's ``--msb-kernel``/``--msb-snapshots``/``--msb-snapshot-keep``.
        """
        config = build_config(name=name, image=image, volumes=volumes, memory_mib=memory_mib, cpus=cpus, env=env,
                              workdir=workdir, security=security, isolation=isolation or "vm",
                              boot_timeout=boot_timeout, labels=labels, vm=vm)
        return cls._start(config, msb_home(home))

    @classmethod
    def _start(cls, config: SandboxConfig, home: Path, *, detached: bool = False) -> Sandbox:
        """Boot it. ``detached``: hand the raw agent socket to the relay of ``_detached_owner``, keep no client."""
        backend = backend_for(config.isolation)
        store = Store(home)
        reap_sandboxes(store, home)
        me = ProcessIdentity.current()
        record = SandboxRecord(config.name, backend.name, None, "starting",
                               {**config.to_dict(), "creator": [me.pid, me.start_ticks, me.machine]},
                               run_id=config.labels.get("msb.run"))
        old = store.get_sandbox(config.name)
        if old is not None and old.status in LIVE_STATES:
            raise SandboxAlreadyExistsError(config.name)
        if old is not None:
            store.remove_sandbox(config.name)  # a stopped or dead one of the same name makes way
        store.add_sandbox(record)  # SandboxAlreadyExistsError too, where another process took the name just now
        rundir = run_dir(home, config.name)
        guest: Guest | None = None
        try:
            shutil.rmtree(rundir, ignore_errors=True)
            rundir.mkdir(parents=True)
            with vmcore_errors():  # the library's boundary: no _vmcore error reaches the caller
                plan, named = build_plan(config, home, rundir)
                guest = backend.start(plan)
            owner = ProcessIdentity.of(guest.pid, guest.process.start_ticks)
            store.update_sandbox(config.name, status="starting", owner=owner)
            for m in named:
                store.attach_volume(config.name, m.volume, m.guest_path, m.readonly, owner)
            client = AgentClient(guest.sock, owns_transport=not detached, await_announcement=guest.announces,
                                 request_timeout=max(60.0, config.boot_timeout))
            try:
                client.wait_ready(config.boot_timeout)
                client.boot(guest.boot_config().encode())
                if plan.boot.workdir:  # as container runtimes do: the working directory exists
                    client.fs.mkdir(plan.boot.workdir, parents=True)
            except (BootError, AgentError, OSError) as e:
                client.close()
                guest.kill()
                raise BootError(f"sandbox {config.name} did not boot: {e}", guest.console_tail()) from e
            store.update_sandbox(config.name, status="running")
        except BaseException:
            if guest is not None:
                guest.kill()
            store.detach_volumes(config.name)
            store.remove_sandbox(config.name)
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        record = store.get_sandbox(config.name) or record
        if detached:
            client.close()  # no request is in flight: the byte stream is at a frame boundary
        sandbox = cls(record, home, guest, None if detached else client)
        with _live_lock:
            _live[(home, config.name)] = sandbox
        return sandbox

    @classmethod
    def get(cls, name: str, *, home: Home = None) -> Sandbox:
        """The sandbox called ``name``: the live object when this process holds it; else a handle that can be
        stopped, killed and removed (and run commands when its owner serves a relay socket, as ``msb create``)."""
        where = msb_home(home)
        with _live_lock:
            live = _live.get((where, name))
        if live is not None:
            return live
        store = Store(where)
        reap_sandboxes(store, where)
        record = store.get_sandbox(name)
        if record is None:
            raise SandboxNotFoundError(name)
        client = None
        relay = run_dir(where, name) / RELAY_SOCKET
        if record.status == "running" and relay.exists():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connect_unix(sock, relay)
                client = AgentClient(sock)
            except OSError:
                sock.close()
        sandbox = cls(record, where, None, client)
        sandbox._stopped = record.status not in LIVE_STATES
        return sandbox

    @staticmethod
    def list(*, home: Home = None) -> list[SandboxRecord]:
        """Every recorded sandbox (dead ones reaped first: their status is ``exited``)."""
        where = msb_home(home)
        store = Store(where)
        reap_sandboxes(store, where)
        return store.list_sandboxes()

    # -- state -----------------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Its name, unique among the live sandboxes of its home."""
        return self._record.name

    @property
    def backend(self) -> str:
        """The isolation it runs with: ``vm`` or ``namespace``."""
        return self._record.backend

    @property
    def config(self) -> dict:
        """What it was created with, as recorded in the store (image, mounts, resources, labels)."""
        return dict(self._record.config)

    @property
    def pid(self) -> int | None:
        """The sandbox's host process (the namespace launcher or the VMM)."""
        return self._record.owner.pid if self._record.owner else None

    @property
    def status(self) -> str:
        """Its state now, read from the store: ``starting``, ``running``, ``stopped``, ``exited`` or ``removed``."""
        record = Store(self._home).get_sandbox(self.name)
        return record.status if record else "removed"

    @property
    def isolation(self) -> Isolation:
        """The isolation it runs with, as an ``Isolation``."""
        return Isolation(self.backend)

    def _agent(self) -> AgentClient:
        if self._stopped:
            raise SandboxError(f"sandbox {self.name} is stopped")
        if self._client is None:
            raise SandboxError(f"sandbox {self.name} belongs to another process and serves no relay socket: "
                               "it can be stopped or removed from here, not used")
        return self._client

    @property
    def run_dir(self) -> Path:
        """Host directory of its runtime files (console log, relay socket); gone once it stops."""
        return run_dir(self._home, self.name)

    def detached_socket(self) -> socket.socket:
        """The raw agent socket of a sandbox started detached (for the relay of ``msb create``)."""
        if self._guest is None:
            raise SandboxError(f"sandbox {self.name} has no guest process in this process")
        return self._guest.sock

    @property
    def fs(self) -> GuestFs:
        """Files inside the sandbox (the agent's guest fs)."""
        return self._agent().fs

    # -- commands --------------------------------------------------------------------------------------------------

    def exec(
        self,
        cmd: str | os.PathLike[str],
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``cmd args...`` to its end. A non-zero exit is a result; ExecError: it could not start;
        ExecTimeoutError: it ran past ``timeout`` and was killed."""
        argv = tuple(os.fspath(a) for a in (cmd, *args))
        try:
            result = self._agent().exec(*argv, env=env, cwd=cwd, stdin=stdin, timeout=timeout)
        except ExecTimeoutError as e:
            r = e.result
            if isinstance(r, ExecResult):
                self.last_exec = LastExec(argv, r.exit_code, r.stdout, r.stderr, True)
            raise
        except MicrosandboxError:
            self.last_exec = LastExec(argv, None, "", "")
            raise
        self.last_exec = LastExec(argv, result.exit_code, result.stdout, result.stderr, result.timed_out)
        return result

    def shell(self, script: str, **options) -> ExecResult:
        """``/bin/sh -c script``."""
        return self.exec("/bin/sh", "-c", script, **options)

    def console_tail(self, lines: int = 40) -> str:
        """The last lines the guest (agent, launcher, kernel) printed: for failure reports."""
        if self._guest is not None:
            return self._guest.console_tail(lines)
        return tail_file(run_dir(self._home, self.name) / "console.log", lines)

    # -- ending ----------------------------------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the guest to power off (SHUTDOWN), then kill it after ``timeout`` s. Idempotent."""
        if self._stopped:
            return
        self._refuse_if_elsewhere()
        self._stopped = True
        try:
            if self._client is not None:
                try:
                    self._client.shutdown()
                except (MicrosandboxError, OSError):
                    pass
            if self._guest is not None and not self._guest.wait(timeout):
                self._guest.kill()
            elif self._guest is None:
                self._wait_or_signal(timeout)
        finally:
            self._finish("stopped")

    def kill(self) -> None:
        """End the guest at once (SIGKILL to its host process)."""
        if self._stopped:
            return
        self._refuse_if_elsewhere()
        self._stopped = True
        try:
            if self._guest is not None:
                self._guest.kill()
            else:
                self._wait_or_signal(0)
        finally:
            self._finish("stopped")

    def _refuse_if_elsewhere(self) -> None:
        """Another machine sharing this home (a host, a container) runs this sandbox: its pid is not ours to signal."""
        owner = self._record.owner
        if self._guest is None and owner is not None and not owner.is_here():
            raise SandboxError(f"sandbox {self.name} runs on another machine sharing this home ({owner.machine}); "
                               "stop it there")

    def _wait_or_signal(self, timeout: float) -> None:
        """For a handle without the process object: after a SHUTDOWN sent over a relay, wait up to ``timeout`` s for
        the recorded process (the launcher or VMM; its guest dies with it), then SIGKILL it. Without a connection
        there is no graceful way (the launcher defers SIGTERM to its child; PID 1 of a namespace ignores it)."""
        owner = self._record.owner
        if self._client is None:
            timeout = 0
        deadline = time.monotonic() + timeout
        while owner is not None and owner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if owner is not None and owner.is_here() and owner.is_alive():
            try:
                os.kill(owner.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while owner.is_alive() and time.monotonic() < deadline + 5:
                time.sleep(0.01)

    def _finish(self, status: str) -> None:
        if self._client is not None:
            self._client.close()
        if self._guest is not None:
            self._guest.release()
        store = Store(self._home)
        store.detach_volumes(self.name)
        try:
            store.update_sandbox(self.name, status=status)
        except SandboxNotFoundError:
            pass
        shutil.rmtree(run_dir(self._home, self.name), ignore_errors=True)
        with _live_lock:
            if _live.get((self._home, self.name)) is self:
                del _live[(self._home, self.name)]

    def close(self) -> None:
        """Let go of a sandbox reached through ``get`` (its relay connection) without stopping it."""
        if self._guest is None and self._client is not None:
            self._client.close()
            self._client = None

    def remove(self) -> None:
        """Stop it if needed and forget it."""
        self.stop()
        Store(self._home).remove_sandbox(self.name)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
