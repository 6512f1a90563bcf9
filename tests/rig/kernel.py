"""The L1 guest's kernel and initramfs, prepared once from Debian's packages and cached.

``linux-image-amd64`` is resolved to its versioned package, fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x``; busybox's ``depmod`` writes ``modules.dep`` so the initramfs gets each module we load together with
everything it needs, in an order ``insmod`` accepts. The initramfs is busybox-static plus those modules plus
``init.sh`` (this folder), built with our own cpio writer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from _vmcore.initramfs import InitramfsFile, build_initramfs

META_PACKAGE = "linux-image-amd64"
# What L1 needs: kvm_amd for /dev/kvm, virtio-pci + 9p for the host's root and the job folder, virtio-blk + ext4 for
# the scratch disk (with crc32c, which ext4 asks for by name at mount time), overlay for the writable root, loop for
# disk-image tests and fuse for /dev/fuse.
MODULES = ("kvm-amd", "virtio_pci", "virtio_blk", "9p", "9pnet_virtio", "overlay", "ext4", "crc32c_generic",
           "loop", "fuse")
INIT_SCRIPT = Path(__file__).with_name("init.sh")


class RigUnavailable(RuntimeError):
    """The nested rig cannot run on this host; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class L1Boot:
    kernel: Path
    initramfs: Path
    version: str


def cache_root() -> Path:
    base = os.environ.get("MSB_RIG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pytest-microsandbox", "rig")
    return Path(base)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        raise RigUnavailable(f"nested rig: {argv[0]} not found (it prepares the L1 kernel from Debian's packages)")
    proc = subprocess.run([tool, *argv[1:]], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RigUnavailable(f"nested rig: `{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[-600:]}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned package behind the meta-package, e.g. ``linux-image-6.1.0-57-amd64``."""
    for line in _run(["apt-cache", "depends", META_PACKAGE]).splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if name.startswith("linux-image-") and name != META_PACKAGE:
            return name
    raise RigUnavailable(f"nested rig: apt-cache names no kernel behind {META_PACKAGE} (is apt's package list there?"
                         " run apt-get update)")


def _module_closure(modules_dir: Path) -> list[Path]:
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name] = rest.split()
    wanted = {Path(k).name.removesuffix(".ko"): k for k in deps}
    missing = [m for m in MODULES if m not in wanted]
    if missing:
        raise RigUnavailable(f"nested rig: the kernel package has no module {', '.join(missing)}")
    closure: set[str] = set()
    for m in MODULES:
        closure.add(wanted[m])
        closure.update(deps[wanted[m]])
    # modules.dep lists each module's whole closure, so fewer dependencies means earlier in a valid load order.
    return [modules_dir / k for k in sorted(closure, key=lambda k: (len(deps[k]), k))]


def _build_initramfs(modules_dir: Path, target: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RigUnavailable("nested rig: busybox not found (Debian: busybox-static)")
    modules = _module_closure(modules_dir)
    files: dict[str, bytes | InitramfsFile | Path] = {"bin/busybox": InitramfsFile(Path(busybox).read_bytes(), 0o755)}
    for ko in modules:
        files[f"lib/modules/{ko.name}"] = ko.read_bytes()
    files["modules.order"] = "".join(f"{ko.name}\n" for ko in modules).encode()
    for d in ("host", "scratch", "newroot"):
        files[f"{d}/.keep"] = b""
    image = build_initramfs(files, agent=INIT_SCRIPT.read_bytes())
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(image)
    tmp.replace(target)


def prepare(root: Path | None = None) -> L1Boot:
    """The cached kernel and initramfs, fetched and built on first use (a new init.sh rebuilds the initramfs)."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / ".lock"):
        return _prepare(root)


def _prepare(root: Path) -> L1Boot:
    package = os.environ.get("MSB_RIG_KERNEL_PACKAGE") or kernel_package()
    version = package.removeprefix("linux-image-")
    folder = root / package
    kernel = folder / "vmlinuz"
    if not kernel.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            work = Path(scratch)
            _run(["apt-get", "download", package], cwd=work)
            deb = next(work.glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(work / "root")])
            modules = work / "root" / "lib" / "modules" / version
            _run(["busybox", "depmod", "-b", str(work / "root"), version])
            shutil.rmtree(folder / "modules", ignore_errors=True)
            modules.rename(folder / "modules")
            (work / "root" / "boot" / f"vmlinuz-{version}").rename(kernel)
    stamp = hashlib.sha256(INIT_SCRIPT.read_bytes() + repr(MODULES).encode()).hexdigest()[:12]
    initramfs = folder / f"initramfs-{stamp}.cpio"
    if not initramfs.exists():
        _build_initramfs(folder / "modules", initramfs)
    return L1Boot(kernel=kernel, initramfs=initramfs, version=version)
