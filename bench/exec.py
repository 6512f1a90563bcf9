"""Exec round trip and stdout throughput through the agent over a native socketpair, against peers measured in
the same run: subprocess.run of the same command (fork/exec + pipes from Python, no protocol), and a ping through
the agent (the protocol's floor). Prints a table of medians and ratios.

    python3 bench/exec.py [--rounds 200] [--mib 64] [--qemu]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_microsandbox.agent import AgentClient  # noqa: E402

AGENT = Path(__file__).resolve().parents[1] / "_vmcore" / "guest" / "bin" / "agent"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_of(fn: Callable[[], object], rounds: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(_timed(fn) for _ in range(rounds))


def paired_medians(
    a: Callable[[], object], b: Callable[[], object], rounds: int, warmup: int = 3
) -> tuple[float, float]:
    """Alternate a and b sample by sample, so load from elsewhere on the machine hits both alike."""
    for _ in range(warmup):
        a()
        b()
    sa, sb = [], []
    for _ in range(rounds):
        sa.append(_timed(a))
        sb.append(_timed(b))
    return statistics.median(sa), statistics.median(sb)


def qemu_rows(native: AgentClient, rounds: int) -> list[tuple[str, str, str, float | None]]:
    """The same agent as PID 1 of a QEMU microvm guest under TCG (software emulation), on a virtio-serial port;
    the peer is the native agent in the same run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))
    from qemu_guest import QemuGuest, kernel_elf, missing_prerequisite  # the test harness

    from pytest_microsandbox.agent import BootConfig

    reason = missing_prerequisite()
    if reason:
        return [("QEMU guest", "skipped", reason[:26], None)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        kernel, _release = kernel_elf(Path(tmp) / "k.elf")
        guest = QemuGuest(Path(tmp), kernel, BootConfig(env={"PATH": "/bin"}).encode())
        boot = time.perf_counter() - t0
        try:
            c = guest.client
            rt_guest, rt_native = paired_medians(lambda: c.exec("true"), lambda: native.exec("true"), rounds)
            size = 8 << 20
            big = ["head", "-c", str(size), "/dev/zero"]
            tp_guest, tp_native = paired_medians(lambda: c.exec(*big), lambda: native.exec(*big), 5, warmup=1)
            guest.poweroff()
        finally:
            guest.stop()
    return [
        ("QEMU/TCG guest: build + boot to agent", f"{boot:.2f} s", "-", None),
        (
            "QEMU/TCG guest: exec `true` round trip",
            f"{rt_guest * 1e3:.2f} ms",
            f"{rt_native * 1e3:.3f} ms (native)",
            rt_guest / rt_native,
        ),
        (
            "QEMU/TCG guest: stdout (8 MiB)",
            f"{8 / tp_guest:.0f} MiB/s",
            f"{8 / tp_native:.0f} MiB/s (native)",
            tp_guest / tp_native,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--throughput-rounds", type=int, default=7)
    ap.add_argument("--qemu", action="store_true", help="also measure the agent as PID 1 of a QEMU/TCG guest")
    args = ap.parse_args()
    if not AGENT.exists():
        sys.exit(f"{AGENT} missing: run `python3 setup.py build_ext --inplace`")

    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([str(AGENT), "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    client = AgentClient(ours)
    size = args.mib << 20
    big = ["head", "-c", str(size), "/dev/zero"]

    def agent_big() -> None:
        assert len(client.exec(*big).stdout_bytes) == size

    def subprocess_big() -> None:
        assert len(subprocess.run(big, capture_output=True, check=True).stdout) == size

    def agent_fifty() -> None:
        handles = [client.start("true") for _ in range(50)]
        for h in handles:
            h.wait(60)

    rows = []
    ping = median_of(lambda: client.ping(b"x"), args.rounds)
    rt_agent, rt_sub = paired_medians(
        lambda: client.exec("true"), lambda: subprocess.run(["true"], check=True), args.rounds
    )
    rows.append(("exec `true` round trip", f"{rt_agent * 1e3:.3f} ms", f"{rt_sub * 1e3:.3f} ms", rt_agent / rt_sub))
    rows.append(("ping round trip (protocol floor)", f"{ping * 1e3:.3f} ms", "-", None))

    def subprocess_fifty() -> None:
        procs = [subprocess.Popen(["true"]) for _ in range(50)]
        for p in procs:
            p.wait()

    fifty, fifty_sub = paired_medians(agent_fifty, subprocess_fifty, max(5, args.rounds // 10), warmup=1)
    rows.append(
        ("50 concurrent `true`", f"{fifty * 1e3:.1f} ms", f"{fifty_sub * 1e3:.1f} ms (50 Popen)", fifty / fifty_sub)
    )
    t_agent, t_sub = paired_medians(agent_big, subprocess_big, args.throughput_rounds, warmup=1)
    mib_agent, mib_sub = args.mib / t_agent, args.mib / t_sub
    rows.append(
        (f"stdout throughput ({args.mib} MiB)", f"{mib_agent:.0f} MiB/s", f"{mib_sub:.0f} MiB/s", mib_sub / mib_agent)
    )

    if args.qemu:
        rows += qemu_rows(client, args.rounds // 4)

    client.shutdown()
    proc.wait(10)
    client.close()

    print(
        f"agent over a native socketpair vs subprocess, paired medians ({args.rounds} rounds; ratio = agent time /"
        " peer time)"
    )
    print(f"{'measure':<40} {'agent':>14} {'peer':>26} {'ratio':>7}")
    for name, a, p, ratio in rows:
        print(f"{name:<40} {a:>14} {p:>26} {('-' if ratio is None else f'{ratio:.2f}x'):>7}")


if __name__ == "__main__":
    main()
