"""Where an image's manifest and blobs come from: a registry, an OCI layout directory, a ``docker save`` archive.

Each resolves a reference to one platform's Manifest, the digest that keys it in the cache, and a way to fetch
any of its blobs into a destination path, verified.

Layouts and archives on disk may come from anyone: every file of theirs is type-checked before it is opened for
reading (a FIFO named ``index.json`` would block the pull forever, a device could be anything), a layout's files
are resolved beneath the layout (a symlink may not lead out), and every read is bounded.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pytest_microsandbox.errors import ImageError, PathEscapeError
from pytest_microsandbox.images._cache import ImageCache
from pytest_microsandbox.images._digest import check_bytes, read_chunks, sha256_bytes, write_verified
from pytest_microsandbox.images._limits import MAX_DOCUMENT_BYTES, ImageLimits
from pytest_microsandbox.images._manifest import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from pytest_microsandbox.images._reference import DockerArchiveRef, OciLayoutRef, RegistryRef, validate_digest
from pytest_microsandbox.images._registry import RegistryClient, insecure_from_env
from pytest_microsandbox.images._unpack import BoundedTarInfo
from pytest_microsandbox.volumes._resolve import Resolver, split_relative

BlobFetcher = Callable[[Descriptor, Path, Callable[[int], None] | None], object]

_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ResolvedImage:
    digest: str  # the platform manifest's digest: the image's key in the cache
    manifest: Manifest
    fetch: BlobFetcher


def resolve_registry(ref: RegistryRef, platform: Platform, insecure: Iterable[str] | None = None,
                     client: RegistryClient | None = None) -> ResolvedImage:
    client = client or RegistryClient(ref.registry, ref.api_host,
                                      insecure=insecure if insecure is not None else insecure_from_env())
    raw, media_type, digest = client.get_manifest(ref.repository, ref.manifest_ref)
    if media_type in INDEX_TYPES:
        entry = select_platform(parse_index(raw), platform)
        raw, media_type, digest = client.get_manifest(ref.repository, entry.digest)
    manifest = parse_manifest(raw)

    def fetch(desc: Descriptor, dest: Path, on_bytes: Callable[[int], None] | None) -> object:
        return client.fetch_blob(ref.repository, desc.digest, dest, desc.size, on_bytes)

    return ResolvedImage(digest, manifest, fetch)


def resolve_oci_layout(ref: OciLayoutRef, platform: Platform) -> ResolvedImage:
    try:
        with _open_in_layout(ref, "index.json") as stream:
            index_raw = _read_document(stream, f"{ref}: index.json")
    except OSError as err:
        raise ImageError(f"{ref}: not an OCI layout ({err.strerror}: index.json)") from None
    entries = _index_entries(index_raw)
    if ref.tag:
        chosen = [d for d, name in entries if name == ref.tag]
        if not chosen:
            raise ImageError(f"{ref}: no manifest tagged {ref.tag!r} in index.json")
    else:
        chosen = [d for d, _ in entries] if len(entries) == 1 else [d for d, name in entries if name == "latest"]
        if len(chosen) != 1:
            raise ImageError(f"{ref}: index.json holds {len(entries)} manifests; name one with oci:DIR:TAG")
    desc = chosen[0]

    def blob(digest: str) -> str:
        return "blobs/sha256/" + validate_digest(digest).split(":", 1)[1]

    def read_small(digest: str) -> bytes:
        try:
            with _open_in_layout(ref, blob(digest)) as stream:
                return check_bytes(_read_document(stream, f"{ref}: blob {digest}"), digest, "manifest")
        except OSError as err:
            raise ImageError(f"{ref}: blob {digest} unreadable: {err.strerror}") from None

    raw = read_small(desc.digest)
    digest = desc.digest
    if media_type_of(raw, desc.media_type or None) in INDEX_TYPES:
        digest = select_platform(parse_index(raw), platform).digest
        raw = read_small(digest)
    manifest = parse_manifest(raw)

    def fetch(d: Descriptor, dest: Path, on_bytes: Callable[[int], None] | None) -> object:
        try:
            with _open_in_layout(ref, blob(d.digest)) as src:
                return write_verified(dest, read_chunks(src), d.digest, d.size, on_bytes)
        except FileNotFoundError:
            raise ImageError(f"{ref}: blob {d.digest} missing from the layout") from None
        except OSError as err:
            raise ImageError(f"{ref}: blob {d.digest} unreadable: {err.strerror}") from None

    return ResolvedImage(digest, manifest, fetch)


def _index_entries(raw: bytes) -> list[tuple[Descriptor, str | None]]:
    descriptors = parse_index(raw)
    names = [(e.get("annotations") or {}).get(_REF_NAME) for e in json.loads(raw).get("manifests", [])]
    return list(zip(descriptors, names, strict=True))


def resolve_docker_archive(ref: DockerArchiveRef, cache: ImageCache,
                           limits: ImageLimits | None = None) -> ResolvedImage:
    """Read ``manifest.json`` from a ``docker save`` tar and import its config and layers into the cache (their
    digests are only known once hashed). Members are read by name: nothing in the archive is extracted; the layers
    imported count against ``limits.max_bytes``."""
    limits = limits or ImageLimits()
    try:
        raw_archive = _open_checked(os.open(ref.path, os.O_PATH | os.O_CLOEXEC), str(ref.path))
    except (OSError, ImageError) as err:
        raise ImageError(f"{ref}: cannot open archive: {err}") from None
    try:
        archive = tarfile.open(fileobj=raw_archive, mode="r:*", tarinfo=BoundedTarInfo)
    except (OSError, tarfile.TarError, ImageError) as err:
        raw_archive.close()
        raise ImageError(f"{ref}: cannot open archive: {err}") from None
    imported = 0

    def counted(stream: BinaryIO) -> Iterator[bytes]:
        nonlocal imported
        for chunk in read_chunks(stream):
            imported += len(chunk)
            limits.check("max_bytes", imported, f"{ref}: layers")
            yield chunk

    with raw_archive, archive:
        try:
            entries = json.loads(_read_document(_member(archive, "manifest.json", ref), f"{ref}: manifest.json"))
            entry = entries[0] if isinstance(entries, list) and len(entries) == 1 else None
            if entry is None:
                raise ImageError(f"{ref}: manifest.json must describe exactly one image")
            config_name, layer_names = entry["Config"], entry["Layers"]
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"{ref}: malformed manifest.json") from None
        config_raw = _read_document(_member(archive, config_name, ref), f"{ref}: {config_name!r}")
        config_digest = cache.import_blob(iter([config_raw]))
        layers = []
        for name in layer_names:
            digest = cache.import_blob(counted(_member(archive, name, ref)))
            layers.append(Descriptor(OCI_LAYER, digest, cache.blob_path(digest).stat().st_size))
    config = Descriptor(OCI_CONFIG, config_digest, len(config_raw))
    synthesized = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
                   "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers]}
    raw = json.dumps(synthesized, sort_keys=True, separators=(",", ":")).encode()

    def fetch(d: Descriptor, dest: Path, on_bytes: Callable[[int], None] | None) -> object:
        raise ImageError(f"{ref}: blob {d.digest} vanished from the cache while building")

    return ResolvedImage(sha256_bytes(raw), Manifest(config, tuple(layers), OCI_MANIFEST), fetch)


def _member(archive: tarfile.TarFile, name: str, ref: DockerArchiveRef):  # type: ignore[no-untyped-def]
    try:
        stream = archive.extractfile(name)
    except (KeyError, tarfile.TarError):
        stream = None
    if stream is None:
        raise ImageError(f"{ref}: {name!r} missing from the archive (or not a file)")
    return stream


def _read_document(stream: BinaryIO, what: str) -> bytes:
    """A JSON document's bytes, refused past MAX_DOCUMENT_BYTES (real ones are a few KiB)."""
    raw = stream.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ImageError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    return raw


def _open_in_layout(ref: OciLayoutRef, relative: str) -> BinaryIO:
    """A regular file of an OCI layout, open for reading; resolved beneath the layout (ImageError for a symlink that
    leads out of it), OSError when it is missing."""
    resolver = Resolver(ref.path)
    root = resolver.open_root()
    try:
        handle = resolver.open(root, split_relative(relative), os.O_PATH)
    except PathEscapeError:
        raise ImageError(f"{ref}: {relative} is a symlink leading out of the layout") from None
    finally:
        os.close(root)
    return _open_checked(handle, f"{ref}: {relative}")


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _open_checked(handle: int, what: str) -> BinaryIO:
    """Open the file an ``O_PATH`` descriptor (which opened nothing yet) names for reading, if it is a regular file;
    ``handle`` is closed either way. Reopened through ``/proc/self/fd``: the very inode checked, no second lookup."""
    try:
        kind = stat.S_IFMT(os.fstat(handle).st_mode)
        if kind != stat.S_IFREG:
            raise ImageError(f"{what} is {_KINDS.get(kind, 'not a regular file')}, not a regular file")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(handle)
    return os.fdopen(fd, "rb")
