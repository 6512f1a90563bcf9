"""sha256 checks while bytes stream, and atomic publication of verified files."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from pytest_microsandbox.errors import ImageError

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_bytes(data: bytes, digest: str, what: str = "blob") -> bytes:
    """Return ``data`` when it hashes to ``digest``; ImageError naming the digest otherwise."""
    actual = sha256_bytes(data)
    if actual != digest:
        raise ImageError(f"{what} {digest}: digest mismatch (content hashes to {actual})")
    return data


def write_verified(dest: Path, chunks: Iterable[bytes], digest: str, size: int | None = None,
                   on_bytes: Callable[[int], None] | None = None) -> Path:
    """Stream ``chunks`` to a temp sibling of ``dest``, hashing as they come; rename into place only if the
    sha256 (and size, when known) match. Nothing is left behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{dest.name[:16]}-", dir=dest.parent)
    hasher = hashlib.sha256()
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                hasher.update(chunk)
                out.write(chunk)
                written += len(chunk)
                if size is not None and written > size:
                    raise ImageError(f"blob {digest}: more than the {size} bytes announced")
                if on_bytes:
                    on_bytes(len(chunk))
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise ImageError(f"blob {digest}: digest mismatch (content hashes to {actual})")
        if size is not None and written != size:
            raise ImageError(f"blob {digest}: size {written} differs from the {size} announced")
        os.chmod(tmp, 0o444)
        os.rename(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return dest


class HashingReader(io.RawIOBase):
    """Reads a file while hashing it, so a cached blob is re-verified by the pass that uses it; ``on_bytes`` sees
    each read's size (and may raise to stop a stream that grows too large)."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._raw.read(len(buffer))
        self._consume(data)
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Hash whatever the consumer left unread (a gzip trailer, tar padding) and return the digest."""
        while chunk := self._raw.read(CHUNK):
            self._consume(chunk)
        return "sha256:" + self._hash.hexdigest()

    def _consume(self, data: bytes) -> None:
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        self._hash.update(data)


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK) -> Iterable[bytes]:
    while chunk := stream.read(chunk_size):
        yield chunk


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
