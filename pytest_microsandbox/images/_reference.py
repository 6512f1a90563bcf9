"""Image references: what ``--msb-image`` accepts, parsed into one typed value per source kind.

    python:3.12                      registry (Docker Hub: docker.io/library/python:3.12)
    localhost:5000/team/app@sha256:… registry, pinned by digest
    oci:DIR[:TAG]                    an OCI image layout directory
    docker-archive:FILE.tar          a ``docker save`` archive
    dir:ROOTFS                       a root filesystem directory, used as it is
    host                             the host's own root (resolved by the sandbox layer)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pytest_microsandbox.errors import InvalidConfigError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

# The grammar of github.com/distribution/reference, restricted to what a pull needs.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is a ``sha256:<64 hex>`` digest, else raise InvalidConfigError."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InvalidConfigError(f"not a sha256 digest: {digest!r}")
    return digest


@dataclass(frozen=True)
class RegistryRef:
    """An image in an OCI distribution registry; ``tag`` defaults to ``latest`` unless a digest pins it."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Host (and port) the distribution API is served on."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def manifest_ref(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class OciLayoutRef:
    """An image in an OCI image layout directory (``oci:DIR[:TAG]``)."""

    path: Path
    tag: str | None = None

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class DockerArchiveRef:
    """An image in a ``docker save`` archive (``docker-archive:FILE.tar``)."""

    path: Path

    def __str__(self) -> str:
        return f"docker-archive:{self.path}"


@dataclass(frozen=True)
class RootfsDirRef:
    """A root file system already unpacked in a directory (``dir:ROOTFS``)."""

    path: Path

    def __str__(self) -> str:
        return f"dir:{self.path}"


@dataclass(frozen=True)
class HostRef:
    """The host's own root filesystem; the sandbox layer decides what that means for each backend."""

    def __str__(self) -> str:
        return "host"


ImageRef = RegistryRef | OciLayoutRef | DockerArchiveRef | RootfsDirRef | HostRef


def parse_reference(text: str) -> ImageRef:
    """Parse an image reference; raises InvalidConfigError with the reason when it is not one."""
    if not isinstance(text, str) or not text.strip() or text != text.strip():
        raise InvalidConfigError(f"invalid image reference: {text!r}")
    if text == "host":
        return HostRef()
    for prefix, parse in (("oci:", _parse_oci), ("docker-archive:", _parse_archive), ("dir:", _parse_dir)):
        if text.startswith(prefix):
            rest = text[len(prefix):]
            if not rest:
                raise InvalidConfigError(f"invalid image reference: {text!r}: missing path")
            return parse(rest)
    return _parse_registry(text)


def _parse_oci(rest: str) -> OciLayoutRef:
    path, sep, tag = rest.rpartition(":")
    if sep and "/" not in tag and _TAG.match(tag) and path:
        return OciLayoutRef(Path(path).expanduser().absolute(), tag)
    return OciLayoutRef(Path(rest).expanduser().absolute())


def _parse_archive(rest: str) -> DockerArchiveRef:
    return DockerArchiveRef(Path(rest).expanduser().absolute())


def _parse_dir(rest: str) -> RootfsDirRef:
    return RootfsDirRef(Path(rest).expanduser().absolute())


def _parse_registry(text: str) -> RegistryRef:
    bad = f"invalid image reference: {text!r}"
    name, at, digest = text.partition("@")
    if at:
        if not _DIGEST.match(digest):
            raise InvalidConfigError(f"{bad}: digest must be sha256:<64 lowercase hex>")
    tag: str | None = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidConfigError(f"{bad}: invalid tag {tag!r}")
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, repository = first, remainder
        if not _DOMAIN.match(registry):
            raise InvalidConfigError(f"{bad}: invalid registry {registry!r}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY.match(repository) or len(repository) > 255:
        raise InvalidConfigError(f"{bad}: repository names are lowercase [a-z0-9] components joined by '/'")
    if tag is None and not at:
        tag = "latest"
    return RegistryRef(registry, repository, tag, digest if at else None)
