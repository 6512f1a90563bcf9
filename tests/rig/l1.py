"""Run one command inside L1: a Debian kernel under ``qemu-system-x86_64 -accel tcg -cpu max``, where TCG emulates
AMD SVM, ``kvm_amd`` loads and ``/dev/kvm`` is real KVM for our unmodified VMM.

The host's ``/`` is L1's root (9p, read-only, under an overlay whose upper layer is a sparse scratch disk), so the
checkout, its built extensions and its Python environment are all there at the same paths. The job folder is shared
read-write at its host path: ``run.sh`` goes in, ``output`` and ``status`` come back, and anything else the command
writes there (reports) is visible on the host while it runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.rig.kernel import L1Boot, RigUnavailable, prepare

SCRATCH_SIZE = "64G"  # sparse: only what L1 writes takes space
# Variables that describe the outer pytest process, not the environment the command should see.
_NOT_PASSED = re.compile(r"^(PYTEST_|_PYTEST|COV_CORE_|MSB_RIG_)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise RigUnavailable("nested rig: qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86)")
    return path


def _cpus() -> int:
    return int(os.environ.get("MSB_RIG_CPUS") or min(4, os.cpu_count() or 1))


def _memory_mib() -> int:
    return int(os.environ.get("MSB_RIG_MEMORY_MIB") or 6144)


@dataclass(frozen=True)
class L1Result:
    status: int | None  # the command's exit status; None when L1 ended (or was stopped) without one
    timed_out: bool
    output: str
    console: str

    def describe(self) -> str:
        if self.timed_out:
            what = "L1 was stopped at its deadline"
        elif self.status is None:
            what = "L1 ended without running the command to its end"
        else:
            what = f"the command exited with status {self.status}"
        return f"{what}\n--- L1 console (tail) ---\n{self.console[-3000:]}\n--- command output (tail) ---\n" \
               f"{self.output[-3000:]}"


def run_script(command: Sequence[str], cwd: str | os.PathLike[str], env: Mapping[str, str]) -> str:
    lines = ["# written by tests/rig/l1.py: runs chrooted in L1's root, the host's / under an overlay"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())
              if _IDENTIFIER.match(k) and not _NOT_PASSED.match(k)]
    lines += [f"cd {shlex.quote(os.fspath(cwd))} || exit 126", "exec " + shlex.join(command), ""]
    return "\n".join(lines)


class L1Run:
    """One boot of L1 running one command. ``start`` returns at once; ``wait`` blocks until L1 powers off or the
    deadline passes (then QEMU is killed)."""

    def __init__(self, workdir: Path, command: Sequence[str], *, cwd: str | os.PathLike[str],
                 env: Mapping[str, str], timeout: float, boot: L1Boot | None = None) -> None:
        self.workdir = workdir
        self.job = workdir / "job"
        self.console_path = workdir / "console.log"
        self.scratch = workdir / "scratch.img"
        self.command = list(command)
        self.cwd = cwd
        self.env = dict(env)
        self.timeout = timeout
        self.boot = boot
        self.proc: subprocess.Popen[bytes] | None = None
        self.deadline = 0.0

    def start(self) -> None:
        binary = qemu()
        boot = self.boot = self.boot or prepare()
        self.job.mkdir(parents=True, exist_ok=True)
        (self.job / "run.sh").write_text(run_script(self.command, self.cwd, self.env))
        with open(self.scratch, "wb") as f:
            f.truncate(0)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                        str(self.scratch), SCRATCH_SIZE], check=True, capture_output=True)
        job = os.fspath(self.job.resolve())
        if " " in job:
            raise RigUnavailable(f"nested rig: the job folder's path must have no spaces: {job!r}")
        argv = [
            binary, "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(_memory_mib()), "-smp", str(_cpus()),
            "-display", "none", "-no-reboot", "-monitor", "none", "-nic", "none",
            "-serial", f"file:{self.console_path}",
            "-kernel", str(boot.kernel), "-initrd", str(boot.initramfs),
            "-append", f"console=ttyS0 quiet panic=-1 rig.job={job}",
            "-virtfs", "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={job},mount_tag=job,security_model=passthrough,multidevs=remap",
            "-drive", f"file={self.scratch},if=virtio,format=raw,cache=unsafe",
        ]
        self.deadline = time.monotonic() + self.timeout
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "qemu.err", "wb"), start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> L1Result:
        assert self.proc is not None, "start() first"
        timed_out = False
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
        self.scratch.unlink(missing_ok=True)
        return self.result(timed_out)

    def result(self, timed_out: bool = False) -> L1Result:
        status_text = _read(self.job / "status").strip()
        console = _read(self.console_path) + _read(self.workdir / "qemu.err")
        return L1Result(status=int(status_text) if status_text.isdigit() else None, timed_out=timed_out,
                        output=_read(self.job / "output"), console=console)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
