"""What a VMM process builds, as its owner sends it to the zygote (JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

AGENT_PORT = "agent"
ROOT_SERIAL = "msb-root"
DEFAULT_SNAPSHOT_KEEP = 8

# How long a guest may trust what a share told it (names, attributes, missing names of read-only shares, file
# pages): an image (the host's root or an overlay's lower) does not change during a sandbox's life; a bind is the
# host's live directory, where a test may write while its sandbox runs.
IMAGE_CACHE_SECONDS = 600.0
BIND_CACHE_SECONDS = 1.0

MAX_DEVICES = 9  # virtio-mmio IRQ lines of _vmcore.machine (DEVICE_IRQS), the console included


@dataclass
class VmSpec:
    """What the VMM process builds: the sandbox's devices as host paths, its template cache and its limits."""

    memory_mib: int
    cpus: int
    kernel: str | None
    console_log: str  # in the sandbox's run directory, where the VMM also builds its jail's root
    disks: list[dict] = field(default_factory=list)  # {path, read_only, serial, format}
    shares: list[dict] = field(default_factory=list)  # virtio-fs: {tag, root, readonly, quota_mib, cache_seconds}
    snapshots: str | None = None  # the template cache (<home>/snapshots); None: boot this machine cold
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP  # templates kept after a build (the least recently used go)
    image_digest: str = ""  # part of the template's key
    boot_timeout: float = 60.0
    requested_at: float = 0.0  # time.monotonic() when the backend was asked: the VMM reports its host overhead
    report_memory: bool = False  # ... and its PSS then (benchmarks)
