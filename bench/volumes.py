"""Benchmark: named-volume operations in-process, ours against the real microsandbox SDK, side by side in one run.

    python3 bench/volumes.py [--rounds 200] [--listed 100] [--warmup 10] [--dir /var/tmp]

Three peers, each with its own fresh home: our sync API (``pytest_microsandbox.sync.Volume``, what the fixtures use),
our async API (``pytest_microsandbox.Volume``, the seeds' ``await Volume.create(...)``) and microsandbox 0.7.11's
``microsandbox.Volume`` (async only; it runs in-process, no server, with ``MSB_HOME`` pointing at its home). Every
round runs each operation on every peer back to back, in an order rotated per round, so drift on a shared machine
hits all alike. Prints a table of medians (ms) and the ratios ours/theirs (lower is better; the goal is <= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEERS = ("ours sync", "ours async", "microsandbox")
PAYLOAD = os.urandom(4096)


def _import_sdk(home: Path):
    os.environ["MSB_HOME"] = str(home)  # the SDK reads its home from the environment
    import microsandbox

    return microsandbox


class Peer:
    """One peer's volume operations, each an awaitable so the rounds can interleave them."""

    def __init__(self, name: str, home: Path, listed: int) -> None:
        self.name, self.home, self.listed = name, home, listed
        self.handle: object = None

    async def create(self, n: str) -> None: ...
    async def get(self, n: str) -> None: ...
    async def list(self) -> None: ...
    async def write(self) -> None: ...
    async def read(self) -> None: ...
    async def remove(self, n: str) -> None: ...


class OursSync(Peer):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        from pytest_microsandbox.sync import Volume

        self.volume = Volume

    async def create(self, n: str) -> None:
        self.volume.create(n, home=self.home)

    async def get(self, n: str) -> None:
        self.handle = self.volume.get(n, home=self.home)

    async def list(self) -> None:
        assert len(self.volume.list(home=self.home)) == self.listed

    async def write(self) -> None:
        self.handle.fs.write("blob", PAYLOAD)  # type: ignore[attr-defined]

    async def read(self) -> None:
        assert self.handle.fs.read("blob") == PAYLOAD  # type: ignore[attr-defined]

    async def remove(self, n: str) -> None:
        self.volume.remove(n, home=self.home)


class OursAsync(Peer):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        from pytest_microsandbox import Volume

        self.volume = Volume

    async def create(self, n: str) -> None:
        await self.volume.create(n, home=self.home)

    async def get(self, n: str) -> None:
        self.handle = await self.volume.get(n, home=self.home)

    async def list(self) -> None:
        assert len(await self.volume.list(home=self.home)) == self.listed

    async def write(self) -> None:
        await self.handle.fs.write("blob", PAYLOAD)  # type: ignore[attr-defined]

    async def read(self) -> None:
        assert await self.handle.fs.read("blob") == PAYLOAD  # type: ignore[attr-defined]

    async def remove(self, n: str) -> None:
        await self.volume.remove(n, home=self.home)


class Theirs(Peer):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.volume = _import_sdk(self.home).Volume

    async def create(self, n: str) -> None:
        await self.volume.create(n)

    async def get(self, n: str) -> None:
        self.handle = await self.volume.get(n)

    async def list(self) -> None:
        assert len(await self.volume.list()) == self.listed

    async def write(self) -> None:
        await self.handle.fs.write("blob", PAYLOAD)  # type: ignore[attr-defined]

    async def read(self) -> None:
        assert await self.handle.fs.read("blob") == PAYLOAD  # type: ignore[attr-defined]

    async def remove(self, n: str) -> None:
        await self.volume.remove(n)


OPERATIONS: list[tuple[str, Callable[[Peer, str], Awaitable[None]]]] = [
    ("Volume.create", lambda p, n: p.create(n)),
    ("Volume.get", lambda p, n: p.get(n)),
    ("Volume.list ({listed} volumes)", lambda p, n: p.list()),
    ("VolumeFs.write 4 KiB", lambda p, n: p.write()),
    ("VolumeFs.read 4 KiB", lambda p, n: p.read()),
    ("Volume.remove", lambda p, n: p.remove(n)),
]


async def run(args: argparse.Namespace, base: Path) -> dict[str, dict[str, list[float]]]:
    peers: list[Peer] = [cls(name, base / name.replace(" ", "-"), args.listed)
                         for cls, name in zip((OursSync, OursAsync, Theirs), PEERS, strict=True)]
    for peer in peers:  # the volumes every list() sees besides the round's own
        for i in range(args.listed - 1):
            await peer.create(f"background-{i:04d}")
    results: dict[str, dict[str, list[float]]] = {op: {p.name: [] for p in peers} for op, _ in OPERATIONS}
    for rnd in range(args.warmup + args.rounds):
        name = f"bench-{rnd:05d}"
        shift = rnd % len(peers)
        order = peers[shift:] + peers[:shift]
        for op, call in OPERATIONS:
            for peer in order:
                start = time.perf_counter()
                await call(peer, name)
                elapsed = time.perf_counter() - start
                if rnd >= args.warmup:
                    results[op][peer.name].append(elapsed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--listed", type=int, default=100, help="volumes present when list() is timed")
    parser.add_argument("--dir", default="/var/tmp", help="where the three homes are made (default /var/tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msb-volumes-bench-", dir=args.dir) as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    sdk = importlib.metadata.version("microsandbox")
    print(f"# medians of {args.rounds} interleaved rounds (ms); microsandbox SDK {sdk}, in-process;"
          f" ratio = ours / microsandbox (lower is better, goal <= 0.5)")
    header = (f"| {'operation':<28} | {'ours sync':>9} | {'ours async':>10} | {'microsandbox':>12} "
              f"| {'sync/theirs':>11} | {'async/theirs':>12} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for op, _ in OPERATIONS:
        ms = {peer: statistics.median(times) * 1e3 for peer, times in results[op].items()}
        ours_sync, ours_async, theirs = (ms[p] for p in PEERS)
        print(f"| {op.format(listed=args.listed):<28} | {ours_sync:>9.3f} | {ours_async:>10.3f} | {theirs:>12.3f} "
              f"| {ours_sync / theirs:>11.2f} | {ours_async / theirs:>12.2f} |")


if __name__ == "__main__":
    main()
