"""Where an image's manifest and blobs come from: a registry, an OCI layout directory, a ``docker save`` archive.

Each resolves a reference to one platform's Manifest, the digest that keys it in the cache, and a way to fetch
any of its blobs into a destination path, verified.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._cache import ImageCache
from pytest_microsandbox.images._digest import check_bytes, read_chunks, sha256_bytes, write_verified
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
    root = ref.path
    try:
        index_raw = (root / "index.json").read_bytes()
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

    def blob(digest: str) -> Path:
        return root / "blobs" / "sha256" / validate_digest(digest).split(":", 1)[1]

    def read_small(digest: str) -> bytes:
        try:
            return check_bytes(blob(digest).read_bytes(), digest, "manifest")
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
            with open(blob(d.digest), "rb") as src:
                return write_verified(dest, read_chunks(src), d.digest, d.size, on_bytes)
        except FileNotFoundError:
            raise ImageError(f"{ref}: blob {d.digest} missing from the layout") from None

    return ResolvedImage(digest, manifest, fetch)


def _index_entries(raw: bytes) -> list[tuple[Descriptor, str | None]]:
    descriptors = parse_index(raw)
    names = [(e.get("annotations") or {}).get(_REF_NAME) for e in json.loads(raw).get("manifests", [])]
    return list(zip(descriptors, names, strict=True))


def resolve_docker_archive(ref: DockerArchiveRef, cache: ImageCache) -> ResolvedImage:
    """Read ``manifest.json`` from a ``docker save`` tar and import its config and layers into the cache (their
    digests are only known once hashed). Members are read by name: nothing in the archive is extracted."""
    try:
        archive = tarfile.open(ref.path, mode="r:*")
    except (OSError, tarfile.TarError) as err:
        raise ImageError(f"{ref}: cannot open archive: {err}") from None
    with archive:
        try:
            entries = json.loads(_member(archive, "manifest.json", ref).read())
            entry = entries[0] if isinstance(entries, list) and len(entries) == 1 else None
            if entry is None:
                raise ImageError(f"{ref}: manifest.json must describe exactly one image")
            config_name, layer_names = entry["Config"], entry["Layers"]
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"{ref}: malformed manifest.json") from None
        config_raw = _member(archive, config_name, ref).read()
        config_digest = cache.import_blob(iter([config_raw]))
        layers = []
        for name in layer_names:
            digest = cache.import_blob(read_chunks(_member(archive, name, ref)))
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
