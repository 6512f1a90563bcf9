"""Benchmark: our FUSE server mounted through /dev/fuse vs the plain host directory, same run, same workloads.

    python3 bench/fs.py [--size-mib 128] [--files 10000] [--ops 20000] [--repeat 3]

Prints a table of medians (seconds and throughput) and the ratio fuse/plain (time; lower is better).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _vmcore.fs import FuseMount  # noqa: E402

BLOCK = 1 << 20
SMALL = 4096


def seq_write(base: Path, size: int) -> None:
    buf = os.urandom(BLOCK)
    fd = os.open(base / "seq", os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        for off in range(0, size, BLOCK):
            os.pwrite(fd, buf, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def seq_read(base: Path, size: int) -> None:
    fd = os.open(base / "seq", os.O_RDONLY)
    try:
        for off in range(0, size, BLOCK):
            assert len(os.pread(fd, BLOCK, off)) == BLOCK
    finally:
        os.close(fd)


def rand_read(base: Path, size: int, ops: int) -> None:
    rng = random.Random(1)
    fd = os.open(base / "seq", os.O_RDONLY)
    try:
        for _ in range(ops):
            os.pread(fd, SMALL, rng.randrange(size // SMALL) * SMALL)
    finally:
        os.close(fd)


def rand_write(base: Path, size: int, ops: int) -> None:
    rng = random.Random(2)
    buf = os.urandom(SMALL)
    fd = os.open(base / "seq", os.O_WRONLY)
    try:
        for _ in range(ops):
            os.pwrite(fd, buf, rng.randrange(size // SMALL) * SMALL)
    finally:
        os.close(fd)


def create_files(base: Path, files: int) -> None:
    d = base / "meta"
    d.mkdir(exist_ok=True)
    for i in range(files):
        os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644))


def stat_files(base: Path, files: int) -> None:
    d = base / "meta"
    for i in range(files):
        os.stat(d / f"f{i}")


def list_files(base: Path, files: int) -> None:
    assert len(os.listdir(base / "meta")) == files


def unlink_files(base: Path, files: int) -> None:
    d = base / "meta"
    for i in range(files):
        os.unlink(d / f"f{i}")


def drop_file(base: Path) -> None:
    (base / "seq").unlink(missing_ok=True)


def measure(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def suite(base: Path, size: int, files: int, ops: int) -> list[tuple[str, Callable[[], None]]]:
    """Every workload on ``base``, in the order they must run (each leaves what the next one needs)."""
    return [
        (f"seq write {size >> 20} MiB (1 MiB, fsync)", lambda: seq_write(base, size)),
        (f"seq read {size >> 20} MiB (1 MiB)", lambda: seq_read(base, size)),
        (f"rand read {ops} x 4 KiB", lambda: rand_read(base, size, ops)),
        (f"rand write {ops} x 4 KiB", lambda: rand_write(base, size, ops)),
        (f"create {files} files", lambda: create_files(base, files)),
        (f"stat {files} files", lambda: stat_files(base, files)),
        (f"readdir {files} entries", lambda: list_files(base, files)),
        (f"unlink {files} files", lambda: unlink_files(base, files)),
        ("(cleanup)", lambda: drop_file(base)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache-timeout", type=float, default=1.0)
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="msb-fs-bench-", dir="/var/tmp") as tmp:
        plain, share, mnt = Path(tmp, "plain"), Path(tmp, "share"), Path(tmp, "mnt")
        for d in (plain, share, mnt):
            d.mkdir()
        plain_results: dict[str, list[float]] = {}
        fuse_results: dict[str, list[float]] = {}
        with FuseMount(share, mnt, cache_timeout=args.cache_timeout):
            plain_steps = suite(plain, size, args.files, args.ops)
            fuse_steps = suite(mnt, size, args.files, args.ops)
            for _ in range(args.repeat):
                # each workload on both sides back to back, so drift on a shared machine hits both alike
                for (name, on_plain), (_, on_fuse) in zip(plain_steps, fuse_steps, strict=True):
                    plain_results.setdefault(name, []).append(measure(on_plain))
                    fuse_results.setdefault(name, []).append(measure(on_fuse))
    print(f"# medians of {args.repeat} runs; ratio = fuse time / plain time (lower is better)")
    header = f"| {'workload':<34} | {'plain s':>9} | {'fuse s':>9} | {'plain rate':>13} | {'fuse rate':>13} | ratio |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, times in plain_results.items():
        if name.startswith("("):
            continue
        p, f = statistics.median(times), statistics.median(fuse_results[name])
        if "MiB" in name and "seq" in name:
            unit, amount = "MiB/s", args.size_mib
        elif "KiB" in name:
            unit, amount = "op/s", args.ops
        else:
            unit, amount = "op/s", args.files
        print(f"| {name:<34} | {p:>9.4f} | {f:>9.4f} | {amount / p:>8.0f} {unit:<4} | {amount / f:>8.0f} {unit:<4} |"
              f" {f / p:>5.2f} |")


if __name__ == "__main__":
    main()
