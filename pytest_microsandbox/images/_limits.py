"""How much one image may unpack to. Layers come from anyone: a 1.5 MB gzip layer can unpack to 1.6 GB (and a
272-byte GNU sparse member to 1 GiB: those are refused outright, see ``_unpack``). Every pull counts what it unpacks
and stops at the first limit it passes with an ImageError naming that limit and how to raise it; the half-built image
is then discarded.

The defaults sit far above real images and far below what hurts a host:

- ``max_bytes`` 16 GiB: decompressed layer streams, and file contents, summed over all layers. The largest common
  images (CUDA and PyTorch ones) unpack to 10-15 GB; the root disk built from it takes about as much again.
- ``max_entries`` 1,000,000 tar members over all layers: a Debian base has ~5,000, big ML images a few 100,000.
  Each costs memory (its recorded metadata) and a few system calls.
- ``max_depth`` 256 names in one path below the root: Debian's deepest paths are under 20 levels, node_modules
  trees rarely pass 60, and 256 names of 16 bytes already outgrow PATH_MAX (4096), so the guest could not name them.
  (mke2fs 1.47 itself crashes on trees ~1,500 deep: raise this only with care.)
- ``max_file_bytes`` 8 GiB for one regular file: model weights and CUDA libraries, the largest single files in
  real images, stay below 4 GiB.

Settings, strongest first: ``pull_image(limits=ImageLimits(...))``, then the environment variables
``MSB_IMAGE_MAX_BYTES`` (sizes like ``32G``), ``MSB_IMAGE_MAX_ENTRIES``, ``MSB_IMAGE_MAX_DEPTH`` and
``MSB_IMAGE_MAX_FILE_BYTES``, then the defaults. Metadata documents (manifests, indexes, configs) are capped at
``MAX_DOCUMENT_BYTES`` regardless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from pytest_microsandbox.errors import ImageError, InvalidConfigError
from pytest_microsandbox.validation import parse_positive_int, parse_size_bytes

MAX_DOCUMENT_BYTES = 8 << 20  # a manifest, index or config; real ones are a few KiB (a long history: ~100 KiB)
MAX_TAR_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header, which tarfile reads into memory whole

_ENV = {"max_bytes": "MSB_IMAGE_MAX_BYTES", "max_entries": "MSB_IMAGE_MAX_ENTRIES",
        "max_depth": "MSB_IMAGE_MAX_DEPTH", "max_file_bytes": "MSB_IMAGE_MAX_FILE_BYTES"}
_SIZES = ("max_bytes", "max_file_bytes")


@dataclass(frozen=True)
class ImageLimits:
    """What one pull may unpack: bytes in all, tar entries, names in one path, bytes in one file."""

    max_bytes: int = 16 << 30
    max_entries: int = 1_000_000
    max_depth: int = 256
    max_file_bytes: int = 8 << 30

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"image limit {field.name} must be a positive whole number, not {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageLimits:
        """The defaults, with whatever ``MSB_IMAGE_MAX_*`` variables are set applied on top."""
        environ = os.environ if environ is None else environ
        values = {}
        for name, var in _ENV.items():
            text = environ.get(var, "").strip()
            if text:
                values[name] = (parse_size_bytes if name in _SIZES else parse_positive_int)(text, var)
        return cls(**values)

    def check(self, name: str, value: int, what: str) -> None:
        """ImageError when ``value`` passes the limit ``name``; ``what`` says what was counted."""
        limit = getattr(self, name)
        if value > limit:
            raise ImageError(f"{what}: over the image limit {name}={limit} (raise it with {_ENV[name]} "
                             f"or pull_image(limits=ImageLimits({name}=...)))")
