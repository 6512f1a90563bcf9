"""Where we stand against QEMU and microsandbox, in one run on one KVM host: the nested rig (only the ratios mean
anything there: everything is 10-50x slower than hardware) or a hardware KVM machine.

    python -m tests.rig run --timeout 3000 -- python3 bench/rig_table.py [--runs 5]    # in the rig
    python3 bench/rig_table.py [--runs 20]                                              # on hardware KVM

The same busybox root filesystem and 512 MiB, 1 vCPU everywhere:
  ours, restored      Sandbox.create(image="dir:ROOTFS") + exec("true"), restored from its snapshot template (built
                      once beforehand, not counted)
  ours, cold          the same with --msb-snapshots=false: a fresh boot of libkrunfw's kernel every time
  QEMU -accel kvm     qemu-system-x86_64 (microvm) booting the same kernel (wrapped as a PVH ELF) and our agent as
                      PID 1 with the root filesystem on virtio-blk, from its start to the agent's first answer (HELLO);
                      exec round trip through our agent on its virtio-serial port; stop: power off until QEMU exits
  microsandbox        the real microsandbox SDK (0.7.x, its msb and libkrun) with the rootfs as a local image: create
                      + exec("true"), exec round trip, stop. Its home and the rootfs lie on a loop-mounted ext4 (it
                      keeps user.* xattrs, which the rig's 9p root lacks); it needs root for that.
Medians of --runs (exec round trip: of 5x as many). Needs root and a KVM that runs guest user space.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _vmcore.host import detect_kvm  # noqa: E402
from pytest_microsandbox.sync import Sandbox, VmOptions  # noqa: E402

MEMORY_MIB = 512
BUSYBOX = shutil.which("busybox")
APPLETS = ("sh", "true", "echo", "cat", "ls", "mount", "id")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def busybox_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def loop_ext4(image: Path, mount_point: Path, size_mib: int = 4096) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,user_xattr", str(image), str(mount_point)], check=True)


def ours(rootfs: Path, home: Path, runs: int) -> dict[str, float]:
    image = f"dir:{rootfs}"

    def create_exec_stop(snapshots: bool) -> tuple[float, float]:
        t0 = time.perf_counter()
        sb = Sandbox.create(image=image, home=home, memory_mib=MEMORY_MIB, vm=VmOptions(snapshots=snapshots))
        sb.exec("true")
        first = time.perf_counter() - t0
        stop = timed(sb.stop)
        sb.remove()
        return first, stop

    create_exec_stop(True)  # builds the template: not counted
    restored = [create_exec_stop(True) for _ in range(runs)]
    cold = [create_exec_stop(False) for _ in range(runs)]
    sb = Sandbox.create(image=image, home=home, memory_mib=MEMORY_MIB)
    try:
        sb.exec("true")
        rtt = [timed(lambda: sb.exec("true")) for _ in range(runs * 5)]
    finally:
        sb.remove()
    return {"restored": median_ms([r[0] for r in restored]), "cold": median_ms([c[0] for c in cold]),
            "exec": median_ms(rtt), "stop": median_ms([r[1] for r in restored])}


def qemu(rootfs: Path, work: Path, runs: int) -> dict[str, float]:
    from pytest_microsandbox.agent.bootconfig import BootConfig, GuestMount
    from tests.agent.qemu_guest import QemuGuest, kernel_elf, make_ext4

    elf, _ = kernel_elf(work / "kernel.elf")
    disk = make_ext4(rootfs, work / "root.ext4", 64)
    plan = BootConfig(root=GuestMount("block_serial", source="msb-root"), env={"PATH": "/bin"}).encode()
    firsts, stops, rtt = [], [], []
    for i in range(runs):
        run_dir = work / f"qemu{i}"
        run_dir.mkdir()
        t0 = time.perf_counter()
        guest = QemuGuest(run_dir, elf, plan, disks=[(disk, "msb-root", True)], memory_mib=MEMORY_MIB, accel="kvm")
        firsts.append(time.perf_counter() - t0)
        try:
            if i == 0:
                rtt = [timed(lambda g=guest: g.client.exec("true")) for _ in range(runs * 5)]
            stops.append(timed(guest.poweroff))
        finally:
            guest.stop()
    return {"cold": median_ms(firsts), "exec": median_ms(rtt), "stop": median_ms(stops)}


def microsandbox(rootfs: Path, runs: int) -> dict[str, float]:
    import microsandbox as msb

    async def measure() -> dict[str, float]:
        firsts, stops, rtt = [], [], []
        for i in range(runs + 1):  # the first pays microsandbox's own one-time setup: not counted
            name = f"bench{i}"
            t0 = time.perf_counter()
            sb = await msb.Sandbox.create(name, image=str(rootfs), memory=MEMORY_MIB, cpus=1, replace=True)
            await sb.exec("true")
            first = time.perf_counter() - t0
            if i == 1:
                for _ in range(runs * 5):
                    t = time.perf_counter()
                    await sb.exec("true")
                    rtt.append(time.perf_counter() - t)
            t = time.perf_counter()
            await sb.stop()
            stop = time.perf_counter() - t
            await msb.Sandbox.remove(name)
            if i:
                firsts.append(first)
                stops.append(stop)
        return {"cold": median_ms(firsts), "exec": median_ms(rtt), "stop": median_ms(stops)}

    return asyncio.run(measure())


def attempt(name: str, fn: Callable[[], dict[str, float]]) -> dict[str, float] | str:
    try:
        return fn()
    except Exception as e:  # a peer that cannot run here is a row that says why, not a failed table
        return f"{name} did not run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def print_table(runs: int, kvm: str, results: dict[str, dict[str, float] | str]) -> None:
    print(f"KVM: {kvm}; runs: {runs}; medians in ms; ratio: the peer's time / ours (above 1: we are faster)")
    base = results["ours"] if isinstance(results["ours"], dict) else {}
    rows = [("create -> first exec, restored", "restored"), ("create -> first exec, cold", "cold"),
            ("exec round trip", "exec"), ("stop", "stop")]
    peers = [p for p in results if p != "ours"]
    print(f"{'':32} {'ours':>10} " + " ".join(f"{p:>16} {'ratio':>7}" for p in peers))
    for label, key in rows:
        line = f"{label:32} {base.get(key, float('nan')):10.1f} "
        for peer in peers:
            r = results[peer]
            # a peer that boots cold every time is compared with both of our create rows
            value = r.get(key, r.get("cold") if key == "restored" else None) if isinstance(r, dict) else None
            if value is None:
                line += f"{'-':>16} {'':>7} "
            else:
                line += f"{value:16.1f} {value / base.get(key, float('nan')):6.1f}x "
        print(line)
    for peer in peers:
        if isinstance(results[peer], str):
            print(results[peer])
    if isinstance(results["ours"], str):
        print(results["ours"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kvm = detect_kvm()
    if not kvm.runs_guest_userspace or os.geteuid() != 0 or BUSYBOX is None:
        raise SystemExit(f"needs root, busybox and a KVM that runs guest user space (here: {kvm.kind})")
    work = Path(tempfile.mkdtemp(prefix="msb-rig-table-"))
    ext4 = work / "ext4"
    loop_ext4(work / "ext4.img", ext4)
    try:
        rootfs = busybox_rootfs(ext4 / "rootfs")
        os.environ["MSB_HOME"] = str(ext4 / "microsandbox-home")  # microsandbox's home (ours is passed as home=)
        results: dict[str, dict[str, float] | str] = {
            "ours": attempt("ours", lambda: ours(rootfs, ext4 / "our-home", args.runs)),
            "QEMU -accel kvm": attempt("QEMU", lambda: qemu(rootfs, work, args.runs)),
            "microsandbox": attempt("microsandbox", lambda: microsandbox(rootfs, args.runs)),
        }
    finally:
        subprocess.run(["umount", "-l", str(ext4)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print_table(args.runs, str(kvm.kind), results)


if __name__ == "__main__":
    main()
