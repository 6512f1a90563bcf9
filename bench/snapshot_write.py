"""What a template build pays to save guest memory: the digest over every byte and a re-read to verify it (as
before), against the digest over the non-zero chunks as they are written, with no re-read (now). Interleaved,
medians; the guest RAM is filled the way a booted guest leaves it (a few tens of MiB in use, the rest zero).

    python3 bench/snapshot_write.py [--memory-mib 512] [--used-mib 48] [--runs 5]

The VMM does not run here (no KVM needed): guest memory is a GuestMemory filled by this script.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _vmcore import snapshot  # noqa: E402
from _vmcore.memory import GuestMemory  # noqa: E402

OLD_CHUNK = 2 << 20


def _before(mem: GuestMemory, out: Path) -> None:
    """The old way: the whole RAM hashed while written, then the file read back and hashed again."""
    h = hashlib.sha256()
    with open(out / "memory.bin", "wb") as f:
        f.truncate(mem.size)
        for gpa in range(0, mem.size, OLD_CHUNK):
            block = mem.read(gpa, OLD_CHUNK)
            h.update(block)
            if block != bytes(OLD_CHUNK):
                f.seek(gpa)
                f.write(block)
        f.flush()
        os.fsync(f.fileno())
    again = hashlib.sha256()
    with open(out / "memory.bin", "rb") as f:
        while block := f.read(OLD_CHUNK):
            again.update(block)
    assert again.digest() == h.digest()


def _after(mem: GuestMemory, out: Path) -> None:
    snapshot.write_snapshot(out, {}, mem, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--used-mib", type=int, default=48)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    mem = GuestMemory(args.memory_mib << 20)
    rng = random.Random(1)
    for _ in range(args.used_mib):  # 1 MiB pieces scattered over RAM, as a kernel and its page cache leave them
        gpa = rng.randrange(0, (args.memory_mib - 1) << 20, 4096)
        mem.write(gpa, rng.randbytes(1 << 20))
    times: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MSB_BENCH_DIR")) as tmp:
        for run in range(args.runs):
            for name, save in (("before", _before), ("after", _after)):
                out = Path(tmp) / f"{name}{run}"
                out.mkdir()
                start = time.perf_counter()
                save(mem, out)
                times[name].append(time.perf_counter() - start)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"guest RAM {args.memory_mib} MiB, {args.used_mib} MiB in use, {args.runs} runs each, medians")
    print("| saving guest memory for a template | time |")
    print("|---|---|")
    print(f"| before: hash all, write, re-read and hash all | {before * 1000:.0f} ms |")
    print(f"| now: hash the non-zero chunks while writing | {after * 1000:.0f} ms |")
    print(f"| ratio | {before / after:.1f}x faster |")


if __name__ == "__main__":
    main()
