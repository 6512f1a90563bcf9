"""The content-addressed image cache under ``<home>/images/``.

    blobs/sha256/<hex>          verified blobs (manifests' configs and layers), read-only
    store/<hex>/image.json      one image (key = its manifest digest): config, layers, references
    store/<hex>/rootfs/         the unpacked root (host files carry no foreign ownership: see rootfs.meta.json)
    store/<hex>/root.ext4       the read-only root disk every sandbox of that image shares
    refs/<sha256 of name>.json  reference name -> image digest (what ``msb image ls`` shows)
    locks/                      filelocks: one per blob, one per image
    tmp/                        builds in progress; renamed into store/ when complete

Every entry appears by ``rename`` only once complete, so a crash or a bad blob leaves nothing half-made in
``blobs/`` or ``store/``; ``prune`` sweeps ``tmp/`` of builds whose lock nobody holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_microsandbox._home import msb_home
from pytest_microsandbox._tree import remove_tree, walk
from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._manifest import ImageConfig, config_to_json, parse_config
from pytest_microsandbox.images._reference import validate_digest

LOCK_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class CachedImage:
    """An image ready to boot: its root disk and the config a sandbox honours."""

    digest: str
    config: ImageConfig
    layers: tuple[str, ...]
    config_digest: str | None
    references: tuple[str, ...]
    disk: Path
    rootfs: Path
    created: float
    size: int

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of its digest, as ``msb image ls`` shows it."""
        return self.digest.split(":", 1)[1][:12]


def _hex(digest: str) -> str:
    return validate_digest(digest).split(":", 1)[1]


class ImageCache:
    """Blobs, built images and reference names under ``<home>/images``; safe across processes."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.root = msb_home(home) / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.store = self.root / "store"
        self.refs = self.root / "refs"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"
        for path in (self.blobs, self.store, self.refs, self.locks, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        # Unpacked roots keep the image's permission bits (world-writable /tmp and all): only we may enter.
        if self.root.stat().st_mode & 0o077:
            os.chmod(self.root, 0o700)

    # -- locks --------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the cache-wide lock ``name`` (across processes); ImageError after ``timeout`` seconds."""
        try:
            with FileLock(str(self.locks / f"{name}.lock"), timeout=timeout):
                yield
        except Timeout:
            raise ImageError(f"timed out waiting for another process to finish {name}") from None

    # -- blobs --------------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where blob ``digest`` is (or would be) cached."""
        return self.blobs / _hex(digest)

    def ensure_blob(self, digest: str, fetch: Callable[[Path], object]) -> Path:
        """The cached blob ``digest``; ``fetch(dest)`` (which must write ``dest`` atomically, verified) runs at
        most once across processes when it is missing."""
        path = self.blob_path(digest)
        if path.exists():
            return path
        with self.lock(f"blob-{_hex(digest)}"):
            if not path.exists():
                fetch(path)
        if not path.exists():
            raise ImageError(f"blob {digest}: fetch did not produce it")
        return path

    def import_blob(self, chunks: Iterable[bytes]) -> str:
        """Hash ``chunks`` into the cache whatever their digest is (local sources); returns the digest."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-import-", dir=self.blobs)
        hasher = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
            os.chmod(tmp, 0o444)
            os.rename(tmp, self.blobs / hasher.hexdigest())  # same digest, same bytes: replacing is harmless
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return "sha256:" + hasher.hexdigest()

    # -- images -------------------------------------------------------------------------------------------
    def image_dir(self, digest: str) -> Path:
        """Where image ``digest`` is (or would be) built."""
        return self.store / _hex(digest)

    def get(self, digest: str) -> CachedImage | None:
        """The built image ``digest``, or None when it is not in the cache."""
        record = self.image_dir(digest) / "image.json"
        try:
            doc = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        return self._from_record(doc, self.image_dir(digest))

    def _from_record(self, doc: dict, where: Path) -> CachedImage:
        conf = doc["config"]
        config = parse_config(json.dumps({"config": conf, "os": conf.get("os"),
                                          "architecture": conf.get("architecture")}).encode())
        return CachedImage(
            digest=doc["digest"], config=config, layers=tuple(doc["layers"]), config_digest=doc.get("config_digest"),
            references=tuple(sorted(self.references_of(doc["digest"]))), disk=where / "root.ext4",
            rootfs=Path(doc.get("rootfs") or where / "rootfs"), created=float(doc["created"]),
            size=int(doc.get("size", 0)))

    @contextmanager
    def building(self, digest: str) -> Iterator[Path]:
        """A fresh temp directory to build image ``digest`` in; on success it is renamed into the store."""
        work = Path(tempfile.mkdtemp(prefix=f"{_hex(digest)}-", dir=self.tmp))
        try:
            yield work
            final = self.image_dir(digest)
            if final.exists():
                remove_tree(final)  # a stale entry without image.json (get() returned None for it)
            os.rename(work, final)
        except BaseException:
            _rmtree(work)
            raise

    def write_record(self, work: Path, digest: str, config: ImageConfig, layers: list[str],
                     config_digest: str | None = None, rootfs: Path | None = None) -> None:
        """Write the record of an image being built in ``work`` (what ``get`` reads back)."""
        size = sum(p.stat().st_blocks * 512 for p in work.glob("*.ext4"))  # allocated: the disk is sparse
        doc = {"digest": digest, "config": config_to_json(config), "layers": layers, "config_digest": config_digest,
               "created": time.time(), "size": size, "rootfs": str(rootfs) if rootfs else None}
        (work / "image.json").write_text(json.dumps(doc, indent=1))

    def list_images(self) -> list[CachedImage]:
        """Every built image in the cache, by digest."""
        images = []
        for entry in sorted(self.store.iterdir()):
            image = self.get(f"sha256:{entry.name}") if len(entry.name) == 64 else None
            if image:
                images.append(image)
        return images

    # -- references ---------------------------------------------------------------------------------------
    def _ref_file(self, reference: str) -> Path:
        return self.refs / (hashlib.sha256(reference.encode()).hexdigest() + ".json")

    def tag(self, reference: str, digest: str) -> None:
        """Name image ``digest`` by ``reference`` (replacing what that name pointed to)."""
        dest = self._ref_file(reference)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.refs)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"reference": reference, "digest": digest}))
        os.rename(tmp, dest)

    def lookup(self, reference: str) -> str | None:
        """The digest ``reference`` names, or None."""
        try:
            return json.loads(self._ref_file(reference).read_text())["digest"]
        except (OSError, ValueError, KeyError):
            return None

    def _all_refs(self) -> dict[str, str]:
        refs = {}
        for path in self.refs.glob("*.json"):
            try:
                doc = json.loads(path.read_text())
                refs[doc["reference"]] = doc["digest"]
            except (OSError, ValueError, KeyError):
                continue
        return refs

    def references_of(self, digest: str) -> list[str]:
        """Every name of image ``digest``."""
        return [ref for ref, dig in self._all_refs().items() if dig == digest]

    def untag(self, reference: str) -> bool:
        """Forget the name ``reference``; whether it existed."""
        try:
            self._ref_file(reference).unlink()
            return True
        except FileNotFoundError:
            return False

    # -- removal ------------------------------------------------------------------------------------------
    def remove(self, digest: str) -> None:
        """Remove image ``digest`` and its names (its blobs stay until ``prune``)."""
        with self.lock(f"image-{_hex(digest)}"):
            for ref in self.references_of(digest):
                self.untag(ref)
            target = self.image_dir(digest)
            if target.exists():
                doomed = self.tmp / f"rm-{target.name}-{os.getpid()}"
                os.rename(target, doomed)  # gone from the store at once; deleted after
                _rmtree(doomed)

    def prune(self, *, all_images: bool = False) -> tuple[int, int]:
        """Remove images without a name (every image with ``all_images``), abandoned builds, and blobs no image
        uses (only when no build is running). Returns (images removed, bytes freed from blobs and builds)."""
        removed = 0
        for image in self.list_images():
            if all_images or not image.references:
                self.remove(image.digest)
                removed += 1
        freed, busy = 0, False
        for build in self.tmp.iterdir():
            key = build.name.split("-", 1)[0]
            if len(key) == 64 and not self._idle(f"image-{key}"):
                busy = True
                continue
            freed += _size(build)
            _rmtree(build)
        if busy:
            return removed, freed
        used = {d for image in self.list_images() for d in (*image.layers, image.config_digest) if d}
        stale = time.time() - 3600
        for blob in self.blobs.iterdir():
            temp = blob.name.startswith(".tmp-")
            if (temp and blob.stat().st_mtime < stale) or (not temp and f"sha256:{blob.name}" not in used
                                                              and self._idle(f"blob-{blob.name}")):
                freed += _size(blob)
                blob.unlink(missing_ok=True)
        return removed, freed

    def _idle(self, name: str) -> bool:
        try:
            with self.lock(name, timeout=0):
                return True
        except ImageError:
            return False


def _size(path: Path) -> int:
    """Bytes in regular files under ``path`` (an unpacked image: any depth, never following a symlink)."""
    try:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            return st.st_size if stat.S_ISREG(st.st_mode) else 0
        return sum(e.stat.st_size for e in walk(path) if stat.S_ISREG(e.stat.st_mode))
    except OSError:
        return 0


def _rmtree(path: Path) -> None:
    """Best effort (build and removal leftovers; ``prune`` retries them): iterative, so any depth goes."""
    try:
        remove_tree(path)
    except OSError:
        pass
