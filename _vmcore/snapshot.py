"""The on-disk snapshot of a paused machine, and the checks that refuse one made for another machine.

A snapshot is a directory:

    manifest.json   {"format": FORMAT, "version": VERSION, "identity": {...}, "files": {name: {size, sha256}}}
    memory.bin      guest RAM, byte for byte (zero chunks left as holes: a sparse file); restored as a MAP_PRIVATE
                    mapping, so every machine restored from it shares the pages it has not written. Its digest
                    (sha256 over the non-zero chunks, each after its offset: what a mostly empty RAM costs to
                    hash is what it holds) is computed while it is written and checked when asked, else its mtime
    state.json      vCPUs (raw KVM structures, base64), the in-kernel irqchip (PIC master/slave, I/O APIC),
                    the KVM clock, and each virtio-mmio transport with its backend and virtqueues

``identity`` names what the snapshot is only valid for: the kernel's and initramfs's sha256, memory size, vCPU
count, the full kernel command line (it carries the device windows and IRQs) and the device layout (each device's
``identity()``). Files are
written under temporary names and the manifest renamed in last, so a crash leaves no snapshot rather than half
of one. Every mismatch or corruption raises ``SnapshotError``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from _vmcore.errors import SnapshotError

FORMAT = "vmcore-snapshot"  # a manifest of another format is no snapshot of ours: a cache builds it anew
VERSION = 3  # 2: the PIT's state; 3: the memory digest covers the non-zero chunks
MANIFEST = "manifest.json"
MEMORY = "memory.bin"
STATE = "state.json"
CHUNK = 64 << 10  # the unit of holes and of the digest: a guest leaves its used pages scattered
_ZERO_CHUNK = bytes(CHUNK)
IRQCHIPS = (0, 1, 2)  # PIC master, PIC slave, I/O APIC
# Saved one by one (a host may refuse some) and restored in this order: the TSC before anything timed by it,
# the async-PF vector before async PF is enabled, the TSC deadline last.
SNAPSHOT_MSRS = (
    0x10, 0x3B, 0x174, 0x175, 0x176, 0x277, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084, 0xC0000102,
    0xC0000103, 0x1A0, 0x2FF, 0x48,
    0x11, 0x12, 0x4B564D00, 0x4B564D01, 0x4B564D03, 0x4B564D04, 0x4B564D05, 0x4B564D06, 0x4B564D02,
    0x6E0,
)

_file_digests: dict[tuple, str] = {}
_HEX_DIGEST = re.compile(rb"[0-9a-f]{64}")


def file_sha256(path: str, memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a file, remembered per version of it (path, size, mtime, ctime, inode) for the life of the process
    and, with ``memo_dir``, across processes: one small file there per version. Any write to the file changes its
    ctime, which no one can set back, so a remembered digest is never a stale one."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    digest = _file_digests.get(key)
    if digest is not None:
        return digest
    memo = None
    if memo_dir is not None:
        memo = Path(memo_dir) / hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        digest = _read_memo(memo)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        digest = h.hexdigest()
        if memo is not None:
            _write_memo(memo, digest)
    _file_digests[key] = digest
    return digest


_bytes_digests: dict[int, tuple[bytes, str]] = {}


def bytes_sha256(data: bytes) -> str:
    """sha256 of ``data`` (an initramfs: a megabyte), remembered for the few objects a process keeps (each held
    here, so its id cannot be reused while remembered); a process that forks VMMs computes it once for all."""
    entry = _bytes_digests.get(id(data))
    if entry is not None and entry[0] is data:
        return entry[1]
    digest = hashlib.sha256(data).hexdigest()
    if len(_bytes_digests) >= 4:
        _bytes_digests.clear()
    _bytes_digests[id(data)] = (data, digest)
    return digest


def _read_memo(memo: Path) -> str | None:
    try:
        fd = os.open(memo, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 65)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw.decode() if _HEX_DIGEST.fullmatch(raw) else None


def _write_memo(memo: Path, digest: str) -> None:
    """Best effort (a read-only home only costs the hashing again): written whole, then renamed into place."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
        temp.write_text(digest)
        os.replace(temp, memo)
    except OSError:
        pass


def _encode(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@dataclass
class Snapshot:
    """A snapshot read back from ``path``: its manifest and decoded machine state."""

    path: Path
    manifest: dict
    state: dict

    @property
    def memory_path(self) -> Path:
        return self.path / MEMORY

    @property
    def identity(self) -> dict:
        return self.manifest["identity"]


def write_snapshot(path: str | os.PathLike, identity: dict, mem, state: dict) -> Path:
    """Write guest memory ``mem`` (a GuestMemory) and ``state`` under ``path`` (created if needed)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a reader never sees a manifest over half-written files
    files = {}
    tmp = out / (MEMORY + ".tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        f.truncate(mem.size)
        for gpa in range(0, mem.size, CHUNK):
            block = mem.read(gpa, min(CHUNK, mem.size - gpa))
            if block != _ZERO_CHUNK[: len(block)]:
                _digest_chunk(h, gpa, block)
                f.seek(gpa)
                f.write(block)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / MEMORY)
    # the mtime lets a restore that skips hashing the memory still refuse a file written to since
    files[MEMORY] = {"size": mem.size, "sha256": h.hexdigest(), "mtime_ns": (out / MEMORY).stat().st_mtime_ns}
    raw = json.dumps(_encode(state), separators=(",", ":")).encode()
    (out / (STATE + ".tmp")).write_bytes(raw)
    os.replace(out / (STATE + ".tmp"), out / STATE)
    files[STATE] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest = {"format": FORMAT, "version": VERSION, "identity": identity, "files": files}
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(out / (MANIFEST + ".tmp"), out / MANIFEST)
    return out


def read_snapshot(path: str | os.PathLike, verify_memory: bool = True) -> Snapshot:
    """Read and check a snapshot; ``verify_memory`` also hashes memory.bin (the state file is always hashed)."""
    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {root} (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise SnapshotError(f"unreadable snapshot manifest in {root}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"{root / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise SnapshotError(f"snapshot format version {manifest.get('version')!r}, this VMM reads {VERSION}")
    try:
        files, identity = manifest["files"], manifest["identity"]
        mem_meta, state_meta = files[MEMORY], files[STATE]
    except (KeyError, TypeError):
        raise SnapshotError(f"incomplete snapshot manifest in {root}") from None
    for name, meta in files.items():
        try:
            st = (root / name).stat()
        except OSError:
            raise SnapshotError(f"snapshot file {name} is missing in {root}") from None
        if st.st_size != meta["size"]:
            raise SnapshotError(f"snapshot file {name} is {st.st_size} bytes, the manifest says {meta['size']}")
        if not verify_memory and meta.get("mtime_ns") not in (None, st.st_mtime_ns):  # (a copy is hashed instead)
            raise SnapshotError(f"snapshot file {name} in {root} was modified after the snapshot was written")
    try:
        raw = (root / STATE).read_bytes()
    except OSError as e:  # removed since the checks above (a template evicted meanwhile)
        raise SnapshotError(f"snapshot file {STATE} in {root} cannot be read: {e}") from None
    if hashlib.sha256(raw).hexdigest() != state_meta["sha256"]:
        raise SnapshotError(f"snapshot file {STATE} in {root} is corrupted (checksum mismatch)")
    if verify_memory:
        h = hashlib.sha256()
        with open(root / MEMORY, "rb") as f:
            for gpa, block in _data_chunks(f, mem_meta["size"]):
                if block != _ZERO_CHUNK[: len(block)]:
                    _digest_chunk(h, gpa, block)
        if h.hexdigest() != mem_meta["sha256"]:
            raise SnapshotError(f"snapshot file {MEMORY} in {root} is corrupted (checksum mismatch)")
    try:
        state = _decode(json.loads(raw))
    except ValueError as e:
        raise SnapshotError(f"snapshot state in {root} is unreadable: {e}") from None
    if not isinstance(identity, dict):
        raise SnapshotError(f"incomplete snapshot manifest in {root}")
    return Snapshot(root, manifest, state)


def _digest_chunk(h, gpa: int, block: bytes) -> None:
    h.update(gpa.to_bytes(8, "little"))
    h.update(block)


def _data_chunks(f, size: int):
    """The chunks of a sparse memory file that may hold data (``SEEK_DATA`` skips the holes), by offset."""
    fd = f.fileno()
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole remains
                return
            raise
        start = data // CHUNK * CHUNK
        f.seek(start)
        block = f.read(min(CHUNK, size - start))
        if not block:
            return
        yield start, block
        pos = start + CHUNK


def check_identity(snapshot: Snapshot, identity: dict) -> None:
    """Refuse a snapshot made for another machine, naming every field that differs."""
    saved = snapshot.identity
    diffs = [k for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: snapshot has {_short(saved.get(k))}, machine has {_short(identity.get(k))}"
                           for k in diffs)
        raise SnapshotError(f"snapshot {snapshot.path} was made for another machine ({detail})")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."
