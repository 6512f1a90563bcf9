"""Manifests, indexes (manifest lists) and image configs: parsed from JSON into typed values.

Docker schema 2 and OCI media types are both accepted; schema 1 is refused (signed, long deprecated).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._reference import validate_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386"}


@dataclass(frozen=True)
class Platform:
    """An OS and CPU architecture (and variant) an image is built for, as OCI names them (``linux/amd64``)."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def host_platform() -> Platform:
    """The platform whose images this host runs (``linux/amd64`` on x86-64)."""
    machine = _platform.machine().lower()
    arch = _ARCH.get(machine, machine)
    return Platform("linux", arch, "v8" if arch == "arm64" else ("v7" if arch == "arm" else None))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None


@dataclass(frozen=True)
class Manifest:
    """One platform's image: a config blob and its layers, bottom first."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a sandbox honours (the OCI ``config`` object)."""

    env: dict[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    working_dir: str = "/"
    user: str = ""
    os: str = "linux"
    architecture: str = ""
    diff_ids: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """The default command line: Entrypoint followed by Cmd."""
        return self.entrypoint + self.cmd


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def _descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ImageError(f"{what}: descriptor is not an object")
    try:
        digest = validate_digest(obj.get("digest", ""))
    except ValueError as err:
        raise ImageError(f"{what}: {err}") from None
    size = obj.get("size", -1)
    if not isinstance(size, int) or size < 0:
        raise ImageError(f"{what}: descriptor {digest} has no valid size")
    plat = obj.get("platform")
    parsed = None
    if isinstance(plat, dict):
        parsed = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")), plat.get("variant") or None)
    return Descriptor(str(obj.get("mediaType", "")), digest, size, parsed)


def media_type_of(raw: bytes, header_type: str | None = None) -> str:
    """The media type a manifest document declares (falling back on its shape, as OCI allows omitting it)."""
    doc = _load(raw, "manifest")
    declared = doc.get("mediaType") or header_type or ""
    if declared in MANIFEST_TYPES + INDEX_TYPES:
        return declared
    if doc.get("schemaVersion") == 1:
        raise ImageError("schema 1 manifests are not supported")
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise ImageError(f"unsupported manifest media type {declared!r}")


def parse_index(raw: bytes) -> tuple[Descriptor, ...]:
    doc = _load(raw, "index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ImageError("index has no 'manifests' list")
    return tuple(_descriptor(e, "index") for e in entries)


def select_platform(entries: tuple[Descriptor, ...], want: Platform) -> Descriptor:
    """The index entry for ``want``: os and architecture must match; an exact variant is preferred."""
    matches = [e for e in entries if e.platform and e.platform.os == want.os
               and e.platform.architecture == want.architecture]
    if not matches:
        offered = ", ".join(str(e.platform) for e in entries if e.platform) or "none"
        raise ImageError(f"no image for platform {want} in the manifest list (offered: {offered})")
    for entry in matches:
        if entry.platform and entry.platform.variant == want.variant:
            return entry
    return matches[0]


def parse_manifest(raw: bytes) -> Manifest:
    doc = _load(raw, "manifest")
    media_type = media_type_of(raw)
    if media_type not in MANIFEST_TYPES:
        raise ImageError(f"expected an image manifest, got {media_type}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageError("manifest has no 'layers' list")
    return Manifest(_descriptor(doc.get("config"), "manifest config"),
                    tuple(_descriptor(layer, "manifest layer") for layer in layers), media_type)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"image config: {what} must be a list of strings")
    return tuple(value)


def parse_config(raw: bytes) -> ImageConfig:
    doc = _load(raw, "image config")
    conf = doc.get("config") or {}
    if not isinstance(conf, dict):
        raise ImageError("image config: 'config' is not an object")
    env: dict[str, str] = {}
    for item in _strings(conf.get("Env"), "Env"):
        key, _, value = item.partition("=")
        env[key] = value
    rootfs = doc.get("rootfs") or {}
    diff_ids = _strings(rootfs.get("diff_ids") if isinstance(rootfs, dict) else None, "rootfs.diff_ids")
    return ImageConfig(
        env=env,
        cmd=_strings(conf.get("Cmd"), "Cmd"),
        entrypoint=_strings(conf.get("Entrypoint"), "Entrypoint"),
        working_dir=str(conf.get("WorkingDir") or "/"),
        user=str(conf.get("User") or ""),
        os=str(doc.get("os") or "linux"),
        architecture=str(doc.get("architecture") or ""),
        diff_ids=diff_ids,
    )


def config_to_json(config: ImageConfig) -> dict[str, Any]:
    """The typed config back as a plain dict (stored with each cached image)."""
    return {"Env": [f"{k}={v}" for k, v in config.env.items()], "Cmd": list(config.cmd),
            "Entrypoint": list(config.entrypoint), "WorkingDir": config.working_dir, "User": config.user,
            "os": config.os, "architecture": config.architecture}
