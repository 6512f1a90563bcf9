"""Write the seed inputs of each fuzz target into ``fuzz/corpus/<target>/`` (well-formed requests, rings and
frames for the fuzzer to mutate from; what it finds beyond them is kept there too).

    python3 fuzz/seeds.py
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_microsandbox.agent._wire import encode_fields, encode_frame  # noqa: E402

IN_HEADER = struct.Struct("<IIQQIIIHH")
OPS = dict(LOOKUP=1, GETATTR=3, SETATTR=4, READLINK=5, SYMLINK=6, MKNOD=8, MKDIR=9, UNLINK=10, RMDIR=11, RENAME=12,
           LINK=13, OPEN=14, READ=15, WRITE=16, STATFS=17, RELEASE=18, OPENDIR=27, READDIR=28, ACCESS=34, CREATE=35,
           FALLOCATE=43, READDIRPLUS=44, RENAME2=45, LSEEK=46, COPY_FILE_RANGE=47, BATCH_FORGET=42)


def fuse(op: str, nodeid: int, body: bytes) -> bytes:
    return IN_HEADER.pack(IN_HEADER.size + len(body), OPS[op], 9, nodeid, 0, 0, 1, 0, 0) + body


def fuse_seeds() -> list[bytes]:
    return [
        fuse("LOOKUP", 1, b"f\0"), fuse("LOOKUP", 1, b"d\0"), fuse("GETATTR", 1, bytes(16)),
        fuse("OPEN", 2, struct.pack("<II", 2, 0)), fuse("READ", 2, struct.pack("<QQIIIII", 1, 0, 100, 0, 0, 0, 0)),
        fuse("WRITE", 2, struct.pack("<QQIIIII", 1, 10, 5, 0, 0, 2, 0) + b"hello"),
        fuse("CREATE", 1, struct.pack("<IIII", 0o100644, 0o644, 0o22, 0) + b"new\0"),
        fuse("MKDIR", 1, struct.pack("<II", 0o755, 0o22) + b"sub\0"), fuse("SYMLINK", 1, b"l\0target\0"),
        fuse("MKNOD", 1, struct.pack("<IIII", 0o10644, 0, 0o22, 0) + b"fifo\0"),
        fuse("SETATTR", 2, struct.pack("<IIQQQQQQIIIIIIII", 1 << 3, 0, 1, 4096, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
        fuse("RENAME2", 1, struct.pack("<QII", 1, 0, 0) + b"f\0g\0"), fuse("UNLINK", 1, b"g\0"),
        fuse("RMDIR", 1, b"d\0"), fuse("LINK", 1, struct.pack("<Q", 2) + b"h\0"), fuse("STATFS", 1, b""),
        fuse("OPENDIR", 1, struct.pack("<II", 0, 0)),
        fuse("READDIRPLUS", 1, struct.pack("<QQIIIII", 1, 0, 4096, 0, 0, 0, 0)),
        fuse("FALLOCATE", 2, struct.pack("<QQQII", 1, 0, 8192, 0, 0)),
        fuse("COPY_FILE_RANGE", 2, struct.pack("<QQQQQQQ", 1, 0, 2, 1, 100, 50, 0)),
        fuse("LSEEK", 2, struct.pack("<QQII", 1, 0, 3, 0)), fuse("ACCESS", 1, struct.pack("<II", 2, 0)),
        fuse("BATCH_FORGET", 0, struct.pack("<II", 1, 0) + struct.pack("<QQ", 2, 1)),
    ]


def virtqueue_seeds() -> list[bytes]:
    """Queue size 8, descriptor table at 0x1000, avail at 0x2000, used at 0x3000, a two-descriptor chain."""
    mem = bytearray(0x4000)
    struct.pack_into("<QIHH", mem, 0x1000, 0x100, 64, 1, 1)          # readable, NEXT -> 1
    struct.pack_into("<QIHH", mem, 0x1010, 0x200, 64, 2, 0)          # writable
    struct.pack_into("<HHH", mem, 0x2000, 0, 1, 0)                   # flags, idx 1, ring[0] = head 0
    head = bytes([3]) + struct.pack("<HHH", 0x1000 // 16, 0x2000 // 2, 0x3000 // 4) + bytes(9)
    return [head + bytes(mem)]


def fs_chain_seeds() -> list[bytes]:
    out = []
    for request in fuse_seeds()[:6]:
        pairs = struct.pack("<HH", 0x100, len(request)) + struct.pack("<HH", 0x2000, 4096)
        head = bytes([1]) + pairs + bytes(32 - len(pairs))
        mem = bytearray(0x3000)
        mem[0x100:0x100 + len(request)] = request
        out.append(head + bytes(mem))
    return out


def agent_seeds() -> list[bytes]:
    frames = [encode_frame(1, 0, encode_fields([(1, 1), (2, b"hello")])),
              encode_frame(5, 3, encode_fields([(3, "text"), (4, 42)])) + encode_frame(6, 3, b"")]
    return frames


def main() -> None:
    for name, seeds in (("fuse_request", [b"\0" + s for s in fuse_seeds()]), ("virtqueue", virtqueue_seeds()),
                        ("fs_chain", fs_chain_seeds()), ("agent_frames", agent_seeds())):
        folder = ROOT / "fuzz" / "corpus" / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (folder / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}").write_bytes(seed)


if __name__ == "__main__":
    main()
