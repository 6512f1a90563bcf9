"""Pull (or import) an image into the cache and build its root disk: the one entry point the sandbox uses."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_microsandbox._tree import walk
from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._cache import CachedImage, ImageCache
from pytest_microsandbox.images._digest import HashingReader, sha256_bytes
from pytest_microsandbox.images._limits import MAX_DOCUMENT_BYTES, ImageLimits
from pytest_microsandbox.images._manifest import Descriptor, ImageConfig, Platform, host_platform, parse_config
from pytest_microsandbox.images._meta import RootMeta
from pytest_microsandbox.images._progress import ProgressCallback, ProgressEvent
from pytest_microsandbox.images._reference import (
    DockerArchiveRef,
    HostRef,
    ImageRef,
    OciLayoutRef,
    RegistryRef,
    RootfsDirRef,
    parse_reference,
)
from pytest_microsandbox.images._rootdisk import build_ext4
from pytest_microsandbox.images._sources import (
    ResolvedImage,
    resolve_docker_archive,
    resolve_oci_layout,
    resolve_registry,
)
from pytest_microsandbox.images._unpack import LayerUnpacker

_PARALLEL_DOWNLOADS = 3


def pull_image(reference: str | ImageRef, *, home: str | os.PathLike[str] | None = None,
               platform: Platform | None = None, insecure: Iterable[str] | None = None,
               progress: ProgressCallback | None = None, allow_devices: bool = False,
               policy: str = "always", limits: ImageLimits | None = None) -> CachedImage:
    """Make ``reference`` a cached image with a root disk and return it.

    ``policy``: ``always`` asks the source again (a tag may have moved); ``missing`` uses the image a name
    already points at when it is cached. Concurrent calls (threads, processes, xdist workers) fetch each blob
    and build each image once. ``limits`` bound what the image may unpack to (default ``ImageLimits.from_env()``:
    the ``MSB_IMAGE_MAX_*`` variables over the defaults); a pull that passes one fails with an ImageError naming it
    and leaves nothing of its build behind. Raises ImageError (InvalidConfigError for a malformed reference)."""
    if policy not in ("always", "missing"):
        raise ImageError(f"unknown pull policy {policy!r} (always|missing)")
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    if isinstance(ref, HostRef):
        raise ImageError("the 'host' image is the host's own root: the sandbox resolves it, nothing is pulled")
    limits = limits or ImageLimits.from_env()
    cache = ImageCache(home)
    name = str(ref)
    want = platform or host_platform()
    if policy == "missing":
        known = cache.lookup(name)
        image = cache.get(known) if known else None
        if image is not None and image.config.architecture in ("", want.architecture):
            return image
    if isinstance(ref, RootfsDirRef):
        digest = _import_dir(cache, ref)
    else:
        if isinstance(ref, RegistryRef):
            resolved = resolve_registry(ref, want, insecure)
        elif isinstance(ref, OciLayoutRef):
            resolved = resolve_oci_layout(ref, want)
        elif isinstance(ref, DockerArchiveRef):
            resolved = resolve_docker_archive(ref, cache, limits)
        else:  # pragma: no cover - the union is exhaustive
            raise ImageError(f"unsupported image reference {ref!r}")
        digest = resolved.digest
        if cache.get(digest) is None:
            _build(cache, resolved, progress, allow_devices, limits)
    cache.tag(name, digest)
    image = cache.get(digest)
    if image is None:
        raise ImageError(f"{name}: image {digest} vanished from the cache (removed concurrently?)")
    if progress:
        progress(ProgressEvent("done", digest, 1, 1))
    return image


def _build(cache: ImageCache, resolved: ResolvedImage, progress: ProgressCallback | None,
           allow_devices: bool, limits: ImageLimits) -> None:
    digest, manifest = resolved.digest, resolved.manifest
    # Refuse before downloading what cannot fit: a layer never unpacks to (much) less than its compressed size.
    if manifest.config.size > MAX_DOCUMENT_BYTES:
        raise ImageError(f"image config {manifest.config.digest} is {manifest.config.size} bytes "
                         f"(more than {MAX_DOCUMENT_BYTES})")
    limits.check("max_bytes", sum(d.size for d in manifest.layers), f"{digest}: compressed layers")
    with cache.lock(f"image-{digest.split(':', 1)[1]}"):
        if cache.get(digest) is not None:
            return  # another process built it while we waited
        config_path = cache.ensure_blob(manifest.config.digest,
                                        lambda dest: resolved.fetch(manifest.config, dest, None))
        config = parse_config(_verified_cached(cache, config_path, manifest.config.digest))
        layer_paths = _fetch_layers(cache, resolved, progress)
        with cache.building(digest) as work:
            rootfs = work / "rootfs"
            rootfs.mkdir()
            meta = RootMeta()
            # diff_ids (digests of the uncompressed tars) are checked too when the config lists one per layer.
            diff_ids = config.diff_ids if len(config.diff_ids) == len(manifest.layers) else ()
            with LayerUnpacker(rootfs, meta, allow_devices=allow_devices, limits=limits) as unpacker:
                for index, (desc, path) in enumerate(zip(manifest.layers, layer_paths, strict=True)):
                    with open(path, "rb") as blob:
                        # Re-verified on the way through: a cached blob may have rotted since it was fetched.
                        reader = HashingReader(blob)
                        try:
                            unpacker.apply(io.BufferedReader(reader), label=f"layer {desc.digest}",
                                           diff_id=diff_ids[index] if diff_ids else None)
                        finally:
                            if reader.finish() != desc.digest:
                                _discard_blob(path)
                                raise ImageError(f"cached blob {desc.digest} is corrupt: removed, pull again")
                    if progress:
                        progress(ProgressEvent("unpack", desc.digest, index + 1, len(manifest.layers)))
            meta.save(work / "rootfs.meta.json")
            if progress:
                progress(ProgressEvent("build", digest, 0, 1))
            build_ext4(rootfs, work / "root.ext4", meta)
            cache.write_record(work, digest, config, [d.digest for d in manifest.layers], manifest.config.digest)


def _fetch_layers(cache: ImageCache, resolved: ResolvedImage, progress: ProgressCallback | None) -> list[Path]:
    """Every layer blob in the cache, a few downloads at a time (each still once across processes)."""

    def one(desc: Descriptor) -> Path:
        on_bytes = _download_meter(progress, desc.digest, desc.size)
        return cache.ensure_blob(desc.digest, lambda dest: resolved.fetch(desc, dest, on_bytes))

    layers = resolved.manifest.layers
    if len(layers) <= 1:
        return [one(desc) for desc in layers]
    with ThreadPoolExecutor(max_workers=min(_PARALLEL_DOWNLOADS, len(layers)),
                            thread_name_prefix="msb-pull") as pool:
        return list(pool.map(one, layers))


def _verified_cached(cache: ImageCache, path: Path, digest: str) -> bytes:
    raw = path.read_bytes()
    if sha256_bytes(raw) != digest:
        _discard_blob(path)
        raise ImageError(f"cached blob {digest} is corrupt: removed, pull again")
    return raw


def _discard_blob(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _download_meter(progress: ProgressCallback | None, digest: str, total: int):  # type: ignore[no-untyped-def]
    if progress is None:
        return None
    done = 0

    def on_bytes(count: int) -> None:
        nonlocal done
        done += count
        progress(ProgressEvent("download", digest, done, total))

    return on_bytes


def _import_dir(cache: ImageCache, ref: RootfsDirRef) -> str:
    """Key a root directory by its path and every entry's stat (cheap, and changes when its content does)."""
    root = ref.path
    if not root.is_dir():
        raise ImageError(f"{ref}: not a directory")
    hasher = hashlib.sha256(f"dir:{root}\0".encode())
    try:
        for entry in walk(root.resolve()):  # iterative: a tree of any depth
            st = entry.stat
            hasher.update(f"{'/'.join(entry.parts)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0"
                          f"{st.st_mtime_ns}\0{st.st_ino}\n".encode("utf-8", "surrogateescape"))
    except OSError as err:
        raise ImageError(f"{ref}: cannot read the tree: {err}") from None
    digest = "sha256:" + hasher.hexdigest()
    if cache.get(digest) is not None:
        return digest
    with cache.lock(f"image-{hasher.hexdigest()}"):
        if cache.get(digest) is None:
            with cache.building(digest) as work:
                build_ext4(root, work / "root.ext4", None)
                cache.write_record(work, digest, ImageConfig(), [], None, rootfs=Path(root))
    return digest
