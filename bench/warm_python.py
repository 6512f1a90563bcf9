"""A warm ``python3 -c pass`` in a vm sandbox: on the ``host`` image (its root is the host's, served by our virtio-fs)
against the same interpreter and standard library on a block-device root (a ``dir:`` image, an ext4 disk), in one
run on one KVM host (the nested rig: only the ratio means anything there); and how many FUSE requests one warm run
costs on the ``host`` image, from the counts each VMM writes to its console log when its sandbox stops.

    python -m tests.rig run --timeout 1800 -- python3 bench/warm_python.py [--runs 10]

Both run Debian's /usr/bin/python3 (the ``host`` image's PATH may name another one).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _vmcore.host import detect_kvm  # noqa: E402
from pytest_microsandbox.sync import Sandbox  # noqa: E402

PYTHON = Path("/usr/bin/python3.11")
SKIPPED = {"test", "idlelib", "tkinter", "lib2to3", "ensurepip", "pydoc_data", "turtledemo", "unittest"}
SERVED = re.compile(r"msb-vmm: share \S+ served (\d+) requests")


def python_rootfs(root: Path) -> Path:
    """Debian's python3.11, the libraries it links and its standard library, for a block-device root."""
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2(PYTHON, root / "usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    libs = root / "usr/lib/x86_64-linux-gnu"
    libs.mkdir(parents=True)
    for line in subprocess.run(["ldd", str(PYTHON)], capture_output=True, text=True, check=True).stdout.splitlines():
        found = re.search(r"(/\S+\.so\S*)", line)
        if found:
            source = Path(found[1])
            target = root / "lib64" / source.name if "ld-linux" in source.name else libs / source.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(source.resolve(), target)
    (root / "lib").symlink_to("usr/lib")
    shutil.copytree("/usr/lib/python3.11", root / "usr/lib/python3.11",
                    ignore=lambda d, names: [n for n in names if n in SKIPPED])
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def requests_served(sb: Sandbox) -> int:
    """Power the guest off and read what its VMM wrote last, before ``stop`` removes the run directory."""
    sb._client.shutdown()
    sb._guest.wait(60)
    counts = SERVED.findall(sb.console_tail(400))
    if not counts and sb.config.get("image") == "host":
        raise SystemExit(f"no share counts in the console log:\n{sb.console_tail(40)}")
    sb.stop()
    return sum(int(n) for n in counts)


def warm_runs(image: str, home: Path, runs: int) -> tuple[list[float], int]:
    """Wall times of ``runs`` warm runs; the FUSE requests one warm run costs (two sandboxes: one run, 1 + runs)."""
    once = Sandbox.create(image=image, home=home)
    try:
        once.exec(str(PYTHON), "-c", "pass")
        base = requests_served(once)
    finally:
        once.remove()
    sb = Sandbox.create(image=image, home=home)
    try:
        sb.exec(str(PYTHON), "-c", "pass")  # the cold one
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = sb.exec(str(PYTHON), "-c", "pass")
            times.append(time.perf_counter() - t0)
            assert result.exit_code == 0, result
        served = requests_served(sb)
    finally:
        sb.remove()
    print(f"{image}: {base} requests for boot + one cold run, {served} with {runs} warm runs more", flush=True)
    return times, (served - base) // runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    kvm = detect_kvm()
    if not kvm.runs_guest_userspace or not PYTHON.exists():
        raise SystemExit(f"needs {PYTHON} and a KVM that runs guest user space (here: {kvm.kind})")
    with tempfile.TemporaryDirectory(prefix="msb-warm-python-") as tmp:
        work = Path(tmp)
        rootfs = python_rootfs(work / "rootfs")
        home = work / "home"
        Sandbox.create(image="host", home=home).remove()  # the templates: built once, not counted
        Sandbox.create(image=f"dir:{rootfs}", home=home).remove()
        host_times, host_requests = warm_runs("host", home, args.runs)
        disk_times, disk_requests = warm_runs(f"dir:{rootfs}", home, args.runs)
    host_ms, disk_ms = statistics.median(host_times) * 1000, statistics.median(disk_times) * 1000
    print(f"KVM: {kvm.kind}; warm `{PYTHON} -c pass`, median of {args.runs}")
    print(f"{'root':34} {'ms':>9} {'FUSE requests':>14}")
    print(f"{'host image (virtio-fs)':34} {host_ms:9.1f} {host_requests:14d}")
    print(f"{'dir: image (ext4 on virtio-blk)':34} {disk_ms:9.1f} {disk_requests:14d}")
    print(f"virtio-fs / block device: {host_ms / disk_ms:.2f}x")


if __name__ == "__main__":
    main()
