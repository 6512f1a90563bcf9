"""The boot config (mount plan) PID 1 applies: root, mounts, hostname, env, workdir, restricted profile.

Encoded as the field list of PROTOCOL.md ("Boot config"): the payload of a BOOT frame, or the initramfs file
``/boot.msb``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytest_microsandbox.agent._wire import MAX_PAYLOAD, Tag, encode_fields
from pytest_microsandbox.errors import InvalidConfigError

# overlay: a private writable layer (in guest memory) over a read-only bind of its source
SOURCE_KINDS = {"virtiofs": 1, "tmpfs": 2, "block_serial": 3, "block_path": 4, "bind": 5, "overlay": 6}
_RDONLY, _NOEXEC, _NOSUID, _NODEV = 1, 2, 4, 8
#: where the agent finds the boot config in the initramfs
BOOT_CONFIG_PATH = "boot.msb"


ENTROPY_MAX = 512


@dataclass(frozen=True)
class GuestMount:
    """One mount in the guest. ``source``: a virtiofs tag, a block device's virtio serial, a device path or a bind
    source, by ``kind``; ``fstype`` for block devices (absent: detected from the superblock)."""

    kind: str
    target: str = ""
    source: str = ""
    fstype: str | None = None
    readonly: bool = False
    noexec: bool = False
    nosuid: bool = False
    nodev: bool = False
    size_mib: int | None = None
    mode: int | None = None

    def fields(self, *, root: bool = False) -> list:
        if self.kind not in SOURCE_KINDS:
            raise InvalidConfigError(f"unknown mount kind {self.kind!r} (one of {', '.join(SOURCE_KINDS)})")
        if self.kind != "tmpfs" and not self.source:
            raise InvalidConfigError(f"a {self.kind} mount needs a source")
        if not root and (not self.target.startswith("/") or posixpath.normpath(self.target) == "/"):
            raise InvalidConfigError(f"mount target must be an absolute path other than /: {self.target!r}")
        if self.size_mib is not None and (self.kind != "tmpfs" or self.size_mib <= 0):
            raise InvalidConfigError("size_mib is for tmpfs mounts and must be positive")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            raise InvalidConfigError(f"bad mode {self.mode:o}")
        for text in (self.target, self.source, self.fstype or ""):
            if "\0" in text:
                raise InvalidConfigError("mount fields cannot hold NUL")
        flags = (
            (_RDONLY if self.readonly else 0)
            | (_NOEXEC if self.noexec else 0)
            | (_NOSUID if self.nosuid else 0)
            | (_NODEV if self.nodev else 0)
        )
        out: list = [(Tag.SOURCE_KIND, SOURCE_KINDS[self.kind]), (Tag.FLAGS, flags)]
        if self.source:
            out.append((Tag.SOURCE, self.source))
        if not root:
            out.append((Tag.TARGET, posixpath.normpath(self.target)))
        if self.fstype:
            out.append((Tag.FSTYPE, self.fstype))
        if self.size_mib is not None:
            out.append((Tag.SIZE_MIB, self.size_mib))
        if self.mode is not None:
            out.append((Tag.MODE, self.mode))
        return out


@dataclass(frozen=True)
class BootConfig:
    root: GuestMount | None = None  # virtiofs, block_serial, block_path or bind: the overlay root's read-only lower
    mounts: Sequence[GuestMount] = ()
    hostname: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    restricted: bool = False
    # A guest restored from a snapshot template is one of many clones: fresh entropy from the host (credited and
    # reseeded before anything else) and the host's wall clock make each its own machine.
    entropy: bytes | None = None
    realtime_ns: int | None = None

    def encode(self) -> bytes:
        fields: list = []
        if self.entropy is not None:
            if not 1 <= len(self.entropy) <= ENTROPY_MAX:
                raise InvalidConfigError(f"entropy must be 1 to {ENTROPY_MAX} bytes, not {len(self.entropy)}")
            fields.append((Tag.ENTROPY, bytes(self.entropy)))
        if self.realtime_ns is not None:
            if self.realtime_ns <= 0:
                raise InvalidConfigError(f"realtime_ns must be positive: {self.realtime_ns}")
            fields.append((Tag.REALTIME_NS, self.realtime_ns))
        if self.hostname is not None:
            if not self.hostname or len(self.hostname) > 64 or "\0" in self.hostname:
                raise InvalidConfigError(f"bad hostname: {self.hostname!r}")
            fields.append((Tag.HOSTNAME, self.hostname))
        if self.root is not None:
            if self.root.kind == "tmpfs":
                raise InvalidConfigError("the root comes from a virtiofs tag, a block device or a directory (bind)")
            fields.append((Tag.ROOT, self.root.fields(root=True)))
        fields += [(Tag.MOUNT, m.fields()) for m in self.mounts]
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key + value:
                raise InvalidConfigError(f"bad environment variable: {key!r}")
            fields.append((Tag.ENV, f"{key}={value}"))
        if self.workdir is not None:
            if not self.workdir.startswith("/"):
                raise InvalidConfigError(f"workdir must be absolute: {self.workdir!r}")
            fields.append((Tag.CWD, self.workdir))
        if self.restricted:
            fields.append((Tag.RESTRICTED, 1))
        data = encode_fields(fields)
        if len(data) > MAX_PAYLOAD:
            raise InvalidConfigError("boot config too large")
        return data
