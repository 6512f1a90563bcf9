"""A QEMU (microvm, TCG) guest running libkrunfw's kernel with our initramfs: the agent is PID 1 on a virtio-serial
port. A test harness for the guest side only, not a backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from _vmcore.initramfs import InitramfsFile, build_initramfs
from pytest_microsandbox.agent import AgentClient
from pytest_microsandbox.agent.bootconfig import BOOT_CONFIG_PATH
from tests.support import pvh

QEMU = shutil.which("qemu-system-x86_64")
BUSYBOX = shutil.which("busybox")
VIRTIOFSD = next((p for p in ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd") if os.access(p, os.X_OK)), None)
# virtiofsd's chroot sandbox, the one it has without its own user namespace, needs root
VIRTIOFSD_UNUSABLE = ("virtiofsd is not installed (Debian: qemu-system-common)" if VIRTIOFSD is None else
                      "virtiofsd's chroot sandbox needs root" if os.geteuid() != 0 else None)
APPLETS = "sh echo uname cat head yes true false sleep ls mkdir stat grep mount hostname id wc touch rm date".split()
AGENT_PORT = "msb.agent"


def missing_prerequisite() -> str | None:
    if QEMU is None:
        return "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
    if BUSYBOX is None:
        return "busybox is not installed (Debian: busybox-static)"
    if pvh.find_libkrunfw() is None:
        return "libkrunfw not found (the microsandbox wheel bundles it)"
    return None


def busybox_files(prefix: str = "bin") -> dict[str, InitramfsFile]:
    files = {f"{prefix}/busybox": InitramfsFile(Path(BUSYBOX).read_bytes(), 0o755)}
    files.update({f"{prefix}/{a}": InitramfsFile(link_target="busybox") for a in APPLETS})
    return files


def busybox_rootfs(root: Path, marker: str) -> Path:
    """A directory tree for `mke2fs -d`: busybox, its applets and a marker file."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc" / "marker").write_text(marker)
    return root


def make_ext4(source: Path, image: Path, size_mib: int = 16) -> Path:
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(source), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return image


def make_erofs(source: Path, image: Path) -> Path:
    subprocess.run(["mkfs.erofs", str(image), str(source)], check=True, capture_output=True)
    return image


class QemuGuest:
    """Boot, connect, and on ``stop`` power off (or kill) the guest. ``console`` is the guest's hvc0 output."""

    def __init__(
        self,
        workdir: Path,
        kernel_elf: Path,
        boot_config: bytes | None = None,
        disks: Sequence[tuple[Path, str, bool]] = (),
        memory_mib: int = 512,
        virtiofs: Sequence[tuple[Path, str]] = (),
        agent_on_console: bool = False,
        accel: str = "tcg",
    ) -> None:
        """``agent_on_console``: the agent port is a second console (``/dev/hvc1``, a tty) instead of a named
        virtio-serial port. ``accel``: ``kvm`` where the host has it (``bench/rig_table.py``)."""
        self.workdir = workdir
        files: dict[str, bytes | InitramfsFile] = dict(busybox_files())
        if boot_config is not None:
            files[BOOT_CONFIG_PATH] = boot_config
        initrd = workdir / "initrd.cpio"
        initrd.write_bytes(build_initramfs(files))
        self.console_path = workdir / "console.log"
        sock_path = workdir / "agent.sock"
        cmd = [
            QEMU,
            "-machine",
            "microvm,acpi=off",
            "-accel",
            accel,
            "-m",
            str(memory_mib),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-kernel",
            str(kernel_elf),
            "-initrd",
            str(initrd),
            "-append",
            "console=hvc0 panic=-1 reboot=t MSB_AGENT_PORT="
            + ("/dev/hvc1" if agent_on_console else f"name:{AGENT_PORT}"),
            "-device",
            "virtio-serial-device",
            "-chardev",
            f"file,id=con,path={self.console_path}",
            "-device",
            "virtconsole,chardev=con",
            "-chardev",
            f"socket,id=agent,path={sock_path},server=on,wait=on",
            "-device",
            "virtconsole,chardev=agent" if agent_on_console else f"virtserialport,chardev=agent,name={AGENT_PORT}",
        ]
        for i, (image, serial, readonly) in enumerate(disks):
            ro = ",readonly=on" if readonly else ""
            cmd += [
                "-drive",
                f"id=d{i},file={image},format=raw,if=none{ro}",
                "-device",
                f"virtio-blk-device,drive=d{i},serial={serial}",
            ]
        if virtiofs:  # vhost-user needs guest memory the daemon can map
            cmd[2] = "microvm,acpi=off,memory-backend=guestmem"
            cmd += ["-object", f"memory-backend-memfd,id=guestmem,size={memory_mib}M,share=on"]
            cmd += ["-global", "virtio-mmio.force-legacy=false"]  # libvhost-user serves modern virtio only
        for i, (vhost_sock, tag) in enumerate(virtiofs):
            cmd += [
                "-chardev",
                f"socket,id=fs{i},path={vhost_sock}",
                "-device",
                f"vhost-user-fs-device,chardev=fs{i},tag={tag}",
            ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
        self.client = self._connect(sock_path)

    def _connect(self, sock_path: Path, timeout: float = 20.0) -> AgentClient:
        deadline = time.monotonic() + timeout
        while True:  # QEMU waits for us (wait=on) before it starts the guest
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited early: {self.proc.stdout.read().decode(errors='replace')}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(sock_path))
                # QEMU (wait=on) starts the guest only once we are connected: the announcement cannot be missed
                client = AgentClient(sock, request_timeout=45, await_announcement=True)
                client.wait_ready(45)
                return client
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def console(self) -> str:
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def poweroff(self, timeout: float = 30.0) -> int:
        """Ask the agent to power off; return QEMU's exit code (it exits on the guest's reset: -no-reboot)."""
        self.client.shutdown()
        return self.proc.wait(timeout)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class Virtiofsd:
    """A virtiofsd serving ``source`` on a vhost-user socket (it exits when QEMU goes away)."""

    def __init__(self, source: Path, sock: Path) -> None:
        assert VIRTIOFSD is not None
        self.sock = sock
        self.proc = subprocess.Popen(
            [VIRTIOFSD, f"--socket-path={sock}", "-o", f"source={source}", "-o", "cache=none", "-o", "sandbox=chroot"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"virtiofsd did not start for {source}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def kernel_elf(path: Path) -> tuple[Path, str]:
    kernel = pvh.load_libkrunfw_kernel(pvh.find_libkrunfw())
    path.write_bytes(pvh.pvh_elf(kernel))
    return path, kernel.release


__all__ = ["VIRTIOFSD", "QemuGuest", "Virtiofsd", "busybox_rootfs", "kernel_elf", "make_ext4", "missing_prerequisite"]
