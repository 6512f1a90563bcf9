"""Restore benchmark: cold boot vs restore from a snapshot to the same point, and the host memory of N restored
machines vs N cold ones, in one run; prints medians and ratios.

    python3 bench/restore.py [--restores 3] [--parallel 2] [--tiny-runs 10]

Rows (libkrunfw's kernel in kernel mode with an ext4 root on virtio-blk, as tests/vmcore/test_kernel_boot.py):
  to P               cold boot from start to the pause point P (the probe of an empty disk slot), where the
                     snapshot is taken
  P -> "Run /init"   the rest of the boot: the cold machine resumed after its snapshot vs a restored machine
  start -> "Run /init"  the whole cold boot (to P plus the rest) vs a restore (load + build + the rest)
  restore setup      Machine.restore + start(): read and check the snapshot (with and without hashing the
                     memory file) and build the VM from it, before the guest runs an instruction
  snapshot           pause + write memory/state/manifest
  tiny guest         the same three numbers with the trivial guest (no kernel): the VMM's own floor
Sandboxes (hardware KVM only; --sandboxes N, default 20): create -> first exec result of a vm sandbox booted cold
(--msb-snapshots=false) vs restored from its template, and the host memory (Pss of every VMM process, from
/proc/PID/smaps_rollup) of N idle sandboxes of each kind side by side.
Memory: guest RAM held by --parallel restored machines running side by side (each a process; their Pss on the
memory file mapping, which counts shared pages once overall) vs as many cold machines (the cold machine's guest
RAM Rss at the same point, times N: every cold machine dirties its own pages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _vmcore.kernels import find_kernel  # noqa: E402
from _vmcore.machine import Machine, MachineConfig  # noqa: E402
from _vmcore.snapshot import MEMORY  # noqa: E402
from tests.support.smaps import mapping_usage  # noqa: E402
from tests.support.tinyguest import counting_code, tiny_guest_elf  # noqa: E402
from tests.vmcore.test_snapshot_boot import CMDLINE_EXTRA, INIT_LINE, PAUSE_AT, machine_config  # noqa: E402

TIMEOUT = 600
MEM_MIB = 256
INIT_C = r"int main(void){return 0;}"


def build_image(work: Path) -> Path:
    from tests.vmcore.guestimage import build_root_image
    return build_root_image(work, INIT_C)


def kernel_config(kernel: str, image: Path) -> MachineConfig:
    """The test's machine: an ext4 root on virtio-blk and an empty disk slot (whose probe is the pause point)."""
    cfg = machine_config(kernel, image)
    assert cfg.memory_mib == MEM_MIB
    return cfg


def cold_boot(cfg: MachineConfig, snap: Path) -> dict:
    m = Machine(cfg)
    try:
        t0 = time.monotonic()
        m.start()
        m.wait_for_console(PAUSE_AT, TIMEOUT)
        to_p = time.monotonic() - t0
        m.snapshot(snap)
        snap_s = time.monotonic() - t0 - to_p
        m.resume()
        t1 = time.monotonic()
        m.wait_for_console(INIT_LINE, TIMEOUT)
        rest = time.monotonic() - t1
        ram = mapping_usage("self", start=m._mem.address)
        return {"to_p": to_p, "snapshot": snap_s, "rest": rest, "ram_rss_kib": ram["Rss"]}
    finally:
        m.close()


def restore_once(cfg: MachineConfig, snap: Path, verify: bool) -> dict:
    t0 = time.monotonic()
    m = Machine.restore(snap, cfg, verify_memory=verify)
    try:
        m.start()
        setup = time.monotonic() - t0
        m.wait_for_console(INIT_LINE, TIMEOUT)
        return {"setup": setup, "total": time.monotonic() - t0}
    finally:
        m.close()


def parallel_restores(kernel: str, image: Path, snap: Path, n: int) -> list[dict]:
    args = {"snapshot": str(snap), "kernel": kernel, "memory_mib": MEM_MIB, "disks": [str(image), None],
            "cmdline_extra": CMDLINE_EXTRA, "until": INIT_LINE, "timeout": TIMEOUT, "verify": False}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.vmcore.snapshot_child", json.dumps(args)], cwd=ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            line = json.loads(p.stdout.readline() or '{"error": "the restoring process died"}')
            if "error" in line:
                raise SystemExit(f"restore failed: {line['error']}")
        return [mapping_usage(p.pid, "/" + MEMORY) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(60)


def tiny(work: Path, runs: int) -> dict:
    kernel = work / "count.elf"
    kernel.write_bytes(tiny_guest_elf(counting_code("d", delay=0x40000)))
    cfg = lambda: MachineConfig(kernel=str(kernel), memory_mib=MEM_MIB)  # noqa: E731
    out = {"cold": [], "restore": [], "snapshot": []}
    for i in range(runs):
        m = Machine(cfg())
        t0 = time.monotonic()
        m.start()
        m.wait_for_console("a", 30)
        out["cold"].append(time.monotonic() - t0)
        t1 = time.monotonic()
        m.snapshot(work / f"tiny{i}")
        out["snapshot"].append(time.monotonic() - t1)
        m.close()
        t0 = time.monotonic()
        r = Machine.restore(work / f"tiny{i}", cfg(), verify_memory=False)
        r.start()
        out["restore"].append(time.monotonic() - t0)
        r.close()
    return {k: statistics.median(v) for k, v in out.items()}


def _pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def sandboxes(n: int, work: Path) -> dict:
    """Cold vs restored vm sandboxes: median create -> first exec, and the Pss of n idle ones side by side."""
    from pytest_microsandbox.sync import Sandbox, VmOptions

    home = work / "home"
    out = {}
    for kind, snapshots in (("cold", "false"), ("restored", "true")):
        vm = VmOptions(snapshots=snapshots == "true")
        if vm.snapshots:
            Sandbox.create(isolation="vm", home=home, boot_timeout=300, vm=vm).remove()  # build the template first
        firsts, live = [], []
        try:
            for _ in range(n):
                t0 = time.monotonic()
                sb = Sandbox.create(isolation="vm", home=home, boot_timeout=300, vm=vm)
                live.append(sb)
                sb.exec("true")
                firsts.append(time.monotonic() - t0)
            out[kind] = {"first_exec": statistics.median(firsts), "pss_kib": sum(_pss_kib(sb.pid) for sb in live)}
        finally:
            for sb in live:
                sb.remove()
    return out


def print_sandboxes(n: int, rows: dict) -> None:
    cold, restored = rows["cold"], rows["restored"]
    print(f"\n{'vm sandboxes':34} {'cold boot':>12} {'restore':>12} {'cold/restore':>13}")
    print(f"{'create -> first exec (median)':34} {cold['first_exec']:10.3f} s {restored['first_exec']:10.3f} s "
          f"{cold['first_exec'] / restored['first_exec']:12.1f}x")
    label = f"host memory of {n} idle (Pss)"
    print(f"{label:34} {cold['pss_kib'] / 1024:8.1f} MiB {restored['pss_kib'] / 1024:8.1f} MiB "
          f"{cold['pss_kib'] / max(restored['pss_kib'], 1):12.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--restores", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--tiny-runs", type=int, default=10)
    ap.add_argument("--sandboxes", type=int, default=20)
    args = ap.parse_args()
    from _vmcore.host import detect_kvm

    kvm = detect_kvm()
    if kvm.runs_guest_userspace:
        with tempfile.TemporaryDirectory() as tmp:
            print_sandboxes(args.sandboxes, sandboxes(args.sandboxes, Path(tmp)))
    else:
        print(f"vm sandboxes: not measured here ({kvm.reason}); kernel-mode restore only\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = tiny(work, args.tiny_runs)
        kernel = str(find_kernel().path)
        image = build_image(work)
        cfg = lambda: kernel_config(kernel, image)  # noqa: E731
        snap = work / "snap"
        cold = cold_boot(cfg(), snap)
        verified = [restore_once(cfg(), snap, True) for _ in range(args.restores)]
        unverified = [restore_once(cfg(), snap, False) for _ in range(args.restores)]
        usage = parallel_restores(kernel, image, snap, args.parallel)
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    restore_rest = med(unverified, "total") - med(unverified, "setup")
    cold_total = cold["to_p"] + cold["rest"]
    print(f"{'row':34} {'cold boot':>12} {'restore':>12} {'cold/restore':>13}")
    rows = [("to P (virtio-blk probe)", cold["to_p"], None),
            ("P -> Run /init", cold["rest"], restore_rest),
            ("start -> Run /init (no mem hash)", cold_total, med(unverified, "total")),
            ("start -> Run /init (mem hashed)", cold_total, med(verified, "total")),
            ("restore setup, no mem hash", None, med(unverified, "setup")),
            ("restore setup, mem hashed", None, med(verified, "setup")),
            ("snapshot (pause + write)", cold["snapshot"], None),
            ("tiny guest: to first byte", t["cold"], t["restore"]),
            ("tiny guest: snapshot", t["snapshot"], None)]
    for name, a, b in rows:
        fa = f"{a:10.3f} s" if a is not None else f"{'':12}"
        fb = f"{b:10.3f} s" if b is not None else f"{'':12}"
        ratio = f"{a / b:12.1f}x" if a and b else ""
        print(f"{name:34} {fa} {fb} {ratio}")
    n = args.parallel
    pss = sum(u["Pss"] for u in usage)
    rss = sum(u["Rss"] for u in usage)
    shared = sum(u["Shared_Clean"] + u["Shared_Dirty"] for u in usage)
    print(f"\nguest RAM of {n} machines at Run /init (MiB): cold {n} x {cold['ram_rss_kib'] / 1024:.1f} = "
          f"{n * cold['ram_rss_kib'] / 1024:.1f}; restored: Rss {rss / 1024:.1f}, Pss {pss / 1024:.1f} "
          f"(shared {shared / 1024:.1f}); cold/restored (Pss) {n * cold['ram_rss_kib'] / max(pss, 1):.1f}x")
    for i, u in enumerate(usage):
        print(f"  restored #{i}: " + ", ".join(f"{k} {v} KiB" for k, v in u.items() if k != "count"))


if __name__ == "__main__":
    main()
