"""Images: references, registry pulls, OCI layouts, docker archives and rootfs directories, cached by digest as
read-only root disks (``<home>/images``)."""

from pytest_microsandbox.images._cache import CachedImage, ImageCache
from pytest_microsandbox.images._limits import ImageLimits
from pytest_microsandbox.images._manifest import ImageConfig, Platform, host_platform
from pytest_microsandbox.images._progress import ProgressCallback, ProgressEvent, TerminalProgress
from pytest_microsandbox.images._pull import pull_image
from pytest_microsandbox.images._reference import (
    DockerArchiveRef,
    HostRef,
    ImageRef,
    OciLayoutRef,
    RegistryRef,
    RootfsDirRef,
    parse_reference,
)

__all__ = [
    "CachedImage",
    "DockerArchiveRef",
    "HostRef",
    "ImageCache",
    "ImageConfig",
    "ImageLimits",
    "ImageRef",
    "OciLayoutRef",
    "Platform",
    "ProgressCallback",
    "ProgressEvent",
    "RegistryRef",
    "RootfsDirRef",
    "TerminalProgress",
    "host_platform",
    "parse_reference",
    "pull_image",
]
