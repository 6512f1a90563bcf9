"""Boot benchmark: our VMM against QEMU microvm, measured in the same run; prints medians and ratios.

    python3 bench/boot.py [--runs 20] [--kernel-runs 1] [--no-kernel]

Rows:
  setup floor        create VM + RAM + irqchip + vCPU (CPUID, MSRs, long mode), run the trivial guest to its
                     first exit and its reset: the cost of a VM with no devices (in-process, no threads)
  first instruction  a full Machine (virtio console + blk, vCPU thread) / a QEMU microvm process, from start to
                     the trivial guest's first byte on the serial port (the same ELF for both)
  kernel phases      libkrunfw's kernel with an ext4 root on virtio-blk: virtio-blk probed, root mounted,
                     "Run /init", host wall time from start (QEMU cannot load libkrunfw's raw image: no column)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _vmcore import bootparams  # noqa: E402
from _vmcore.bus import Bus  # noqa: E402
from _vmcore.devices.i8042 import I8042  # noqa: E402
from _vmcore.host import detect_kvm  # noqa: E402
from _vmcore.kernels import find_kernel  # noqa: E402
from _vmcore.kvm import Vm  # noqa: E402
from _vmcore.loader import load_kernel  # noqa: E402
from _vmcore.machine import IDENTITY_MAP_ADDR, TSS_ADDR, Disk, Machine, MachineConfig  # noqa: E402
from _vmcore.memory import GuestMemory  # noqa: E402
from _vmcore.vcpu import Vcpu  # noqa: E402
from tests.support.tinyguest import tiny_guest_elf  # noqa: E402

MEM_MIB = 256
QEMU = shutil.which("qemu-system-x86_64")


def setup_floor(kernel_path: str) -> float:
    t0 = time.perf_counter()
    vm = Vm()
    vm.set_tss_addr(TSS_ADDR)
    vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
    mem = GuestMemory(MEM_MIB << 20)
    vm.add_memory(0, 0, mem)
    vm.create_irqchip()
    kernel = load_kernel(kernel_path)
    kernel.place(mem)
    layout = bootparams.write_boot_layout(mem, "")
    pio, mmio = Bus("pio"), Bus("mmio")
    vcpu = Vcpu(vm, 0, mem, pio, mmio)
    pio.insert(0x60, 5, I8042(on_reset=vcpu.request_stop))
    vcpu.set_cpuid(vm.supported_cpuid())
    vcpu.setup_long_mode(kernel.entry, layout["boot_params"], layout["gdt"], layout["gdt_limit"], layout["idt"],
                         layout["pml4"], layout["stack"])
    reason = vcpu.run()
    elapsed = time.perf_counter() - t0
    vcpu.close()
    vm.close()
    mem.close()
    assert reason == "stopped", reason
    return elapsed


def first_instruction_ours(kernel_path: str) -> float:
    t0 = time.monotonic()
    m = Machine(MachineConfig(kernel=kernel_path, memory_mib=MEM_MIB))
    m.start()
    m.wait(10)
    first = m.console.first_byte_at
    m.close()
    assert first is not None, "the trivial guest printed nothing"
    return first - t0


def first_instruction_qemu(kernel_path: str) -> float:
    cmd = [QEMU, "-M", "microvm,x-option-roms=off,rtc=off,pit=off,pic=off", "-enable-kvm", "-cpu", "qemu64",
           "-m", str(MEM_MIB), "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
           "-kernel", kernel_path]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        byte = p.stdout.read(1)
        elapsed = time.monotonic() - t0
    finally:
        p.kill()
        p.wait()
    assert byte == b"!", byte
    return elapsed


def kernel_phases(root_image: str) -> dict[str, float]:
    patterns = {"virtio-blk probed": r"virtio_blk virtio\d+: \[vda\]", "root mounted": r"VFS: Mounted root",
                "Run /init": r"Run /init as init process"}
    t0 = time.monotonic()
    m = Machine(MachineConfig(kernel=str(find_kernel().path), memory_mib=MEM_MIB,
                              disks=[Disk(root_image, read_only=True)],
                              cmdline_extra="root=/dev/vda ro rootfstype=ext4 init=/init"))
    try:
        m.start()
        m.wait_for_console(patterns["Run /init"], timeout=900)
        out = {"first console byte": m.console.first_byte_at - t0}
        import re
        for name, rx in patterns.items():
            out[name] = next(t for t, line in m.console.lines if re.search(rx, line)) - t0
        return out
    finally:
        m.close()


def make_root_image(d: Path) -> str:
    root = d / "root"
    for sub in ("dev", "proc", "sys"):
        (root / sub).mkdir(parents=True)
    (root / "init").write_bytes(b"#!/bin/sh\n")
    image = d / "root.ext4"
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True, capture_output=True)
    return str(image)


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kernel-runs", type=int, default=1)
    ap.add_argument("--no-kernel", action="store_true")
    args = ap.parse_args()

    kvm = detect_kvm()
    rows: list[tuple[str, float | None, float | None, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny.elf")
        Path(tiny).write_bytes(tiny_guest_elf())
        setup_floor(tiny)  # warm caches (dlopen, page cache) before timing
        floor = [setup_floor(tiny) for _ in range(args.runs)]
        rows.append(("VM setup floor (no devices)", statistics.median(floor), None, args.runs))
        ours = [first_instruction_ours(tiny) for _ in range(args.runs)]
        theirs = [first_instruction_qemu(tiny) for _ in range(args.runs)] if QEMU else []
        rows.append(("first guest instruction (byte on COM1)", statistics.median(ours),
                     statistics.median(theirs) if theirs else None, args.runs))
        if not args.no_kernel:
            image = make_root_image(Path(tmp))
            runs = [kernel_phases(image) for _ in range(args.kernel_runs)]
            for phase in runs[0]:
                rows.append((f"kernel: {phase}", statistics.median(r[phase] for r in runs), None, args.kernel_runs))

    print(f"host: /dev/kvm is {kvm.kind}; QEMU: {QEMU or 'not installed'}; guest RAM {MEM_MIB} MiB")
    print(f"{'metric':44} {'ours (median)':>14} {'QEMU microvm':>14} {'QEMU/ours':>10} {'runs':>5}")
    for name, o, q, n in rows:
        ratio = f"{q / o:.1f}x" if o and q else "-"
        print(f"{name:44} {fmt(o):>14} {fmt(q):>14} {ratio:>10} {n:>5}")


if __name__ == "__main__":
    main()
