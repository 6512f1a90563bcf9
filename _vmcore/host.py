"""What kind of KVM this host offers: hardware virtualization, the kvm_pvm software hypervisor, or none."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path


class KvmKind(enum.StrEnum):
    HARDWARE = "hardware"
    PVM = "kvm_pvm"
    NONE = "none"


@dataclass(frozen=True)
class KvmStatus:
    kind: KvmKind
    reason: str

    @property
    def runs_guest_userspace(self) -> bool:
        """Only hardware KVM runs an unmodified guest's user programs (kvm_pvm stops at the kernel)."""
        return self.kind is KvmKind.HARDWARE


def _cpu_flags(cpuinfo: Path) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def detect_kvm(dev: str = "/dev/kvm", sysfs: str = "/sys/module", cpuinfo: str = "/proc/cpuinfo") -> KvmStatus:
    """Classify ``/dev/kvm``; the reason is written for a user reading a skip message."""
    if not os.path.exists(dev):
        return KvmStatus(KvmKind.NONE, f"{dev} does not exist (no KVM on this host)")
    if not os.access(dev, os.R_OK | os.W_OK):
        return KvmStatus(KvmKind.NONE, f"{dev} is not readable and writable by this user")
    if Path(sysfs, "kvm_pvm").exists():
        return KvmStatus(
            KvmKind.PVM,
            "/dev/kvm is kvm_pvm, a software hypervisor: guest kernels boot in kernel mode only "
            "and no guest user program can run",
        )
    flags = _cpu_flags(Path(cpuinfo))
    if flags & {"vmx", "svm"}:
        return KvmStatus(KvmKind.HARDWARE, "hardware KVM (" + ("vmx" if "vmx" in flags else "svm") + ")")
    return KvmStatus(KvmKind.NONE, "/dev/kvm exists but the CPU has no vmx/svm flag and it is not kvm_pvm")
