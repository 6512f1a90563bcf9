"""Sandbox benchmark: create-to-first-exec, exec round trip and stop time per backend, against peers measured in
the same run; prints medians and ratios.

    python3 bench/sandbox.py [--runs 20]

Rows (namespace here; vm too where hardware KVM exists):
  create -> first exec   Sandbox.create(image="host") + exec("true"), vs. peer `unshare ... sh -c true` (the same
                         namespaces, no agent, no root switch) and `subprocess.run(["true"])` (no isolation at all)
  exec round trip        sb.exec("true") in a running sandbox, vs. peer subprocess.run(["true"])
  stop                   sb.stop() (SHUTDOWN, PID 1 powers off, the launcher exits, records updated)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _vmcore.host import detect_kvm  # noqa: E402
from pytest_microsandbox.sync import Sandbox  # noqa: E402

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--net", "--ipc", "--uts",
           "--kill-child", "sh", "-c", "true"]


def median_ms(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def bench_backend(isolation: str, home: Path, runs: int) -> dict[str, float]:
    created: list[float] = []
    stops: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create(isolation=isolation, home=home)
        sb.exec("true")
        created.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        sb.stop()
        stops.append((time.perf_counter() - t0) * 1000)
        sb.remove()
    sb = Sandbox.create(isolation=isolation, home=home)
    try:
        sb.exec("true")
        rtt = median_ms(lambda: sb.exec("true"), runs * 5)
    finally:
        sb.remove()
    return {"create": statistics.median(created), "exec": rtt, "stop": statistics.median(stops)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    backends = ["namespace"] + (["vm"] if detect_kvm().runs_guest_userspace else [])
    with tempfile.TemporaryDirectory(prefix="msb-bench-") as tmp:
        home = Path(tmp)
        Sandbox.create(isolation="namespace", home=home).remove()  # warm: the host root skeleton is made once
        peers = {
            "unshare + sh -c true": median_ms(lambda: subprocess.run(UNSHARE, check=True), args.runs),
            "subprocess.run(true)": median_ms(lambda: subprocess.run(["true"], check=True), args.runs * 5),
        }
        results = {b: bench_backend(b, home, args.runs) for b in backends}
    print(f"runs: {args.runs}; KVM: {detect_kvm().kind}; medians in ms")
    print(f"{'measure':<24} {'backend':<10} {'ours':>9} {'peer':<22} {'peer ms':>9} {'ratio':>7}")
    for backend, r in results.items():
        rows = [("create -> first exec", r["create"], "unshare + sh -c true"),
                ("create -> first exec", r["create"], "subprocess.run(true)"),
                ("exec round trip", r["exec"], "subprocess.run(true)"),
                ("stop", r["stop"], None)]
        for what, ours, peer in rows:
            if peer is None:
                print(f"{what:<24} {backend:<10} {ours:>9.2f} {'-':<22} {'-':>9} {'-':>7}")
            else:
                print(f"{what:<24} {backend:<10} {ours:>9.2f} {peer:<22} {peers[peer]:>9.2f} "
                      f"{ours / peers[peer]:>6.2f}x")
    if "vm" not in results:
        print(f"vm: not measured here ({detect_kvm().reason})")


if __name__ == "__main__":
    main()
