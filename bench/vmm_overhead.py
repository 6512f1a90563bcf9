"""VMM process overhead: the host's time and memory from a vm sandbox's request to the point where its VMM builds
or restores the machine (jailed, confined, spec resolved, template key known), handed to the zygote's spare VMM;
against a fresh interpreter importing the same code and loading what the zygote preloads (what every sandbox paid
before the zygote) and ``subprocess.run(true)``, measured in the same run. Runs natively (any /dev/kvm; the machine
it then boots is killed).

    python3 bench/vmm_overhead.py [--runs 30]

Rows: the median of ``--runs``; memory as the VMM reports it (``/proc/self/smaps_rollup`` at that point) and as
``smaps_rollup`` of the fresh interpreter after its imports. PSS splits the pages a VMM shares with its zygote
(and other VMMs): one VMM alone shares them with the zygote only; the last line is 4 running side by side (their
guest RAM left out). Private is what each further sandbox adds.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_microsandbox.sandbox._zygote_client import Zygote  # noqa: E402
from pytest_microsandbox.vmm.spec import ShareSpec, VmSpec  # noqa: E402

READY = re.compile(r"ready to run the machine ([\d.]+) ms after the request, ([\d.]+) MiB PSS, ([\d.]+) MiB private")
FRESH = ("from pytest_microsandbox.vmm.process import Preloaded; Preloaded.load(); "
         "kib = {r.split()[0]: int(r.split()[1]) for r in open('/proc/self/smaps_rollup') if r.endswith(' kB\\n')}; "
         "print(kib['Pss:'], kib['Private_Clean:'] + kib['Private_Dirty:'])")


def one_vmm(zygote: Zygote, work: Path, share: Path, i: int) -> tuple[float, float, float]:
    run_dir = work / f"run{i}"
    run_dir.mkdir()
    log_path = run_dir / "console.log"
    spec = VmSpec(memory_mib=256, cpus=1, kernel=None, console_log=str(log_path), boot_timeout=5,
                  shares=(ShareSpec("msb-fs0", str(share), readonly=True),), report_memory=True)
    ours, theirs = socket.socketpair()
    with ours, theirs, open(log_path, "ab") as log:
        vmm = zygote.spawn(replace(spec, requested_at=time.monotonic()), theirs, log.fileno())
        deadline = time.monotonic() + 30
        while not (found := READY.search(log_path.read_text())) and time.monotonic() < deadline:
            time.sleep(0.005)
        vmm.kill()
        vmm.ended(None)
        vmm.close()
    if not found:
        raise SystemExit(f"the VMM did not report: {log_path.read_text()}")
    return float(found[1]), float(found[2]), float(found[3])


def host_pss_mib(pid: int, guest_bytes: int) -> float:
    """PSS of ``pid`` without its guest RAM (the one mapping of exactly the guest's size)."""
    total, skip = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):  # a mapping's first line: start-end perms ...
                start, end = (int(x, 16) for x in head.split("-"))
                skip = end - start == guest_bytes
            elif head == "Pss:" and not skip:
                total += int(line.split()[1])
    return total / 1024


def side_by_side(zygote: Zygote, work: Path, share: Path, n: int) -> float:
    """The mean host PSS of ``n`` VMMs alive at once (their guests booting), the zygote and its spare beside them."""
    live = []
    for i in range(n):
        run_dir = work / f"live{i}"
        run_dir.mkdir()
        spec = VmSpec(memory_mib=256, cpus=1, kernel=None, console_log=str(run_dir / "console.log"), boot_timeout=60,
                      shares=(ShareSpec("msb-fs0", str(share), readonly=True),))
        ours, theirs = socket.socketpair()
        with theirs, open(spec.console_log, "ab") as log:
            live.append((zygote.spawn(spec, theirs, log.fileno()), ours))
        while "ready to run the machine" not in Path(spec.console_log).read_text():
            time.sleep(0.005)
    time.sleep(0.5)
    pss = statistics.mean(host_pss_mib(vmm.pid, 256 << 20) for vmm, _ in live)
    for vmm, ours in live:
        vmm.kill()
        vmm.ended(None)
        ours.close()
    return pss


def fresh_interpreter() -> tuple[float, float, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True, env=env).stdout
    elapsed = (time.perf_counter() - t0) * 1000
    pss, private = (int(x) / 1024 for x in out.split())
    return elapsed, pss, private


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msb-bench-") as tmp:
        work, share = Path(tmp), Path(tmp) / "share"
        share.mkdir()
        t0 = time.perf_counter()
        zygote = Zygote()
        try:
            ours, fresh, true = [], [], []
            for i in range(args.runs):  # interleaved, so load on the machine falls on every row alike
                ours.append(one_vmm(zygote, work, share, i))
                fresh.append(fresh_interpreter())
                t = time.perf_counter()
                subprocess.run(["true"], check=True)
                true.append((time.perf_counter() - t) * 1000)
            start = (time.perf_counter() - t0) * 1000
            together = side_by_side(zygote, work, share, 4)
        finally:
            zygote.close()

    def med(rows, i):
        return statistics.median(r[i] for r in rows)

    print(f"runs: {args.runs}; medians; the zygote started once ({start:.0f} ms for it and every run)")
    print(f"{'':38} {'ms':>8} {'PSS MiB':>8} {'private MiB':>12} {'ms ratio':>9}")
    rows = [("VMM from the zygote (ours)", med(ours, 0), med(ours, 1), med(ours, 2)),
            ("fresh interpreter + VMM imports", med(fresh, 0), med(fresh, 1), med(fresh, 2)),
            ("subprocess.run(true)", statistics.median(true), None, None)]
    for name, ms, pss, private in rows:
        memory = f"{pss:8.1f} {private:12.1f}" if pss is not None else f"{'':8} {'':12}"
        print(f"{name:38} {ms:8.2f} {memory} {ms / rows[0][1]:8.1f}x")
    print(f"PSS of 4 VMMs side by side, each (cold-booting their kernels here; guest RAM left out): {together:.1f} MiB")


if __name__ == "__main__":
    main()
